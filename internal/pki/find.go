package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"os"
	"path/filepath"
)

// maxScanFile bounds the files FindPrivateKeysMatching reads.
const maxScanFile = 1 << 20

// FindPrivateKeysMatching walks root and returns the regular files (up to 1 MiB)
// holding a PEM private key whose public key is pub. Tests use it to prove the
// CA key is on no filesystem. Unreadable entries are skipped; other mounts under
// root are walked too.
func FindPrivateKeysMatching(root string, pub crypto.PublicKey) ([]string, error) {
	want, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, nil
	}
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if info, err := d.Info(); err != nil || info.Size() > maxScanFile {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil || !bytes.Contains(data, []byte("PRIVATE KEY")) {
			return nil
		}
		for rest := data; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if k := parseKey(blk); k != nil && want.Equal(k.Public()) {
				found = append(found, path)
				break
			}
		}
		return nil
	})
	return found, err
}

func parseKey(blk *pem.Block) crypto.Signer {
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		s, _ := k.(crypto.Signer)
		return s
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k
	}
	return nil
}
