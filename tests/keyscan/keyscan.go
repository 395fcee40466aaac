// Package keyscan is test tooling, not part of edgeseal: it finds the files
// under a directory that hold the private key of a given public key. Tests use
// it to prove that the per-boot CA key is written nowhere (internal/pki: the CA
// keys are never serialised), on a temporary root in the unit tests and on a
// running device's whole file system in the integration tests.
package keyscan

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxScanFileSize bounds the files FindPrivateKeysMatching reads: a private key
// file is a few KiB.
const maxScanFileSize = 1 << 20

// pseudoFS are file systems whose files are kernel state, not stored data:
// reading some of them blocks (/proc/kmsg) or has side effects, and none can
// hold a key someone wrote. Keys are statfs f_type magics (linux/magic.h).
var pseudoFS = map[uint32]string{
	0x9fa0:     "proc",
	0x62656572: "sysfs",
	0x64626720: "debugfs",
	0x74726163: "tracefs",
	0x73636673: "securityfs",
	0x27e0eb:   "cgroup",
	0x63677270: "cgroup2",
	0xcafe4a11: "bpf",
	0x62656570: "configfs",
	0x6165676c: "pstore",
	0xde5e81e4: "efivarfs",
	0x65735543: "fusectl",
	0x1cd1:     "devpts",
	0x19800202: "mqueue",
	0x42494e4d: "binfmt_misc",
	0xf97cff8c: "selinuxfs",
}

// FindPrivateKeysMatching walks the tree at root and returns the regular files
// (up to 1 MiB) holding a private key whose public key equals pub: a PEM block
// of any "... PRIVATE KEY" type in PKCS#8, SEC 1 or PKCS#1 form, or a whole file
// of such DER.
//
// Mounts below root are walked too, except kernel pseudo file systems (proc,
// sysfs, cgroup, ...). Symbolic links are not followed, except root itself (so
// /proc/PID/root works). Entries it cannot read are skipped: run it as root to
// see everything. Encrypted PEM keys cannot be matched.
func FindPrivateKeysMatching(root string, pub crypto.PublicKey) ([]string, error) {
	want, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, fmt.Errorf("cannot compare private keys with a public key of type %T", pub)
	}
	if fi, err := os.Lstat(root); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		root += string(filepath.Separator) // walk what the link points to
	}
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil && path == root:
			return fmt.Errorf("cannot scan %s: %w", root, err)
		case err != nil:
			return nil
		case d.IsDir():
			if isPseudoFS(path) {
				return fs.SkipDir
			}
			return nil
		case !d.Type().IsRegular():
			return nil
		}
		data, ok := readSmallFile(path)
		if ok && holdsKeyFor(data, want) {
			found = append(found, path)
		}
		return nil
	})
	return found, err
}

func isPseudoFS(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	// f_type is 32 bits wide whatever the width of the field (int32 on arm).
	_, pseudo := pseudoFS[uint32(st.Type)]
	return pseudo
}

// readSmallFile reads path if it is still a regular file of at most
// maxScanFileSize bytes; it never follows a link nor blocks on a FIFO.
func readSmallFile(path string) ([]byte, bool) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() > maxScanFileSize {
		return nil, false
	}
	data, err := io.ReadAll(io.LimitReader(f, maxScanFileSize+1))
	if err != nil || len(data) > maxScanFileSize {
		return nil, false
	}
	return data, true
}

func holdsKeyFor(data []byte, want interface{ Equal(crypto.PublicKey) bool }) bool {
	matches := func(der []byte) bool {
		k := parsePrivateKey(der)
		return k != nil && want.Equal(k.Public())
	}
	if len(data) > 0 && data[0] == 0x30 && matches(data) { // a DER SEQUENCE
		return true
	}
	if !bytes.Contains(data, []byte("PRIVATE KEY")) {
		return false
	}
	for rest := data; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return false
		}
		if strings.HasSuffix(blk.Type, "PRIVATE KEY") && matches(blk.Bytes) {
			return true
		}
	}
}

func parsePrivateKey(der []byte) interface{ Public() crypto.PublicKey } {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if s, ok := k.(interface{ Public() crypto.PublicKey }); ok {
			return s
		}
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k
	}
	return nil
}
