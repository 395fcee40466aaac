package pki

import (
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
)

const (
	// dirMode lets Vault's user and every client read the certificates; the
	// writer runs with UMask=0077, so the mode is set explicitly.
	dirMode  = 0o755
	certMode = 0o644
	// keyMode: only the writer (edgeseal-pki.service's dynamic user) reads
	// vault.key; Vault gets a private copy through LoadCredential=.
	keyMode = 0o600
	// maxCAFileSize bounds what LoadCAPool reads: a chain is a few KiB.
	maxCAFileSize = 1 << 20
)

// Write puts the bundle in p.PKIDir, each file atomically: vault.key, vault.crt,
// then ca.crt. The key goes first since a certificate without its key is useless
// while a key without its certificate is harmless.
func (b *Bundle) Write(p paths.Paths) error {
	if err := os.MkdirAll(p.PKIDir, dirMode); err != nil {
		return fmt.Errorf("cannot create %s: %w", p.PKIDir, err)
	}
	if err := os.Chmod(p.PKIDir, dirMode); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", p.PKIDir, err)
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{p.VaultKey, b.LeafKeyPEM, keyMode},
		{p.VaultCert, b.ChainPEM(), certMode},
		{p.CACert, b.CACertPEM, certMode},
	}
	for _, f := range files {
		if len(f.data) == 0 {
			return fmt.Errorf("internal error: nothing to write to %s", f.path)
		}
		if err := fsutil.WriteFileAtomic(f.path, f.data, f.mode, fsutil.Self); err != nil {
			return err
		}
	}
	if p.SharedCA != "" {
		// The snap: consumer snaps pin this boot's CA from a directory they
		// may read and not write (the tokend-ca slot), not the socket's.
		if err := os.MkdirAll(filepath.Dir(p.SharedCA), dirMode); err != nil {
			return fmt.Errorf("cannot create %s: %w", filepath.Dir(p.SharedCA), err)
		}
		if err := fsutil.WriteFileAtomic(p.SharedCA, b.CACertPEM, certMode, fsutil.Self); err != nil {
			return err
		}
	}
	return nil
}

// LoadCAPool reads the per-boot CA certificate that clients of Vault trust.
func LoadCAPool(path string) (*x509.CertPool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the per-boot CA certificate %s (edgeseal-pki.service may not have run this boot): %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCAFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read the per-boot CA certificate %s: %w", path, err)
	}
	if len(data) > maxCAFileSize {
		return nil, fmt.Errorf("cannot use the per-boot CA certificate %s: larger than %d bytes", path, maxCAFileSize)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("cannot use the per-boot CA certificate %s: no PEM certificate in it (edgeseal-pki.service may not have run this boot)", path)
	}
	return pool, nil
}
