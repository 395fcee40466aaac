package tokenclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/fsutil"
)

// Token is a service's token and where to use it.
type Token struct {
	Service   string // the service it belongs to
	Identity  string // how the provider saw the caller
	VaultAddr string // https://127.0.0.1:8200
	CACert    string // the CA certificate file that verifies Vault
	// Secret is Vault's token-create response; Secret.Auth.ClientToken is the
	// token. It is never logged by this package.
	Secret *api.Secret
	// Certificate is the service's TLS certificate, if Options.Cert asked
	// for it; KeepCertificateRenewed renews it.
	Certificate *Certificate
}

// ClientToken is the token itself.
func (t *Token) ClientToken() string { return t.Secret.Auth.ClientToken }

// Period is how often the token must be renewed.
func (t *Token) Period() time.Duration {
	return time.Duration(t.Secret.Auth.LeaseDuration) * time.Second
}

// Client returns a Vault client for VaultAddr, verifying it with CACert, with
// the token set.
func (t *Token) Client() (*api.Client, error) {
	c, err := t.client()
	if err != nil {
		return nil, err
	}
	c.SetToken(t.ClientToken())
	return c, nil
}

func (t *Token) client() (*api.Client, error) {
	cfg := api.DefaultConfig()
	if t.VaultAddr != "" {
		cfg.Address = t.VaultAddr
	}
	if t.CACert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: t.CACert}); err != nil {
			return nil, fmt.Errorf("cannot use the CA certificate %s to verify Vault: %w", t.CACert, err)
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot make a Vault client for %s: %w", t.VaultAddr, err)
	}
	// Never read a token from the environment by accident.
	c.ClearToken()
	return c, nil
}

// unwrap exchanges a wrapping token for the token it wraps; the wrapping token
// works once, so a token intercepted on its way has been noticed by the time
// the service gets here (the unwrap fails).
func (t *Token) unwrap(ctx context.Context, wrapping string) (*api.Secret, error) {
	c, err := t.client()
	if err != nil {
		return nil, err
	}
	c.SetToken(wrapping)
	sec, err := c.Logical().UnwrapWithContext(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("cannot unwrap the token of service %s (someone else may have unwrapped it: "+
			"tell the operator): %w", t.Service, err)
	}
	if sec == nil {
		return nil, fmt.Errorf("%w: unwrapping gave nothing", ErrProtocol)
	}
	return sec, nil
}

// MarshalFile is the token file's content: Vault's auth response as JSON,
// {"auth":{"client_token":...}}, the format of an EdgeX secrets-token.json.
func (t *Token) MarshalFile() ([]byte, error) {
	data, err := json.MarshalIndent(t.Secret, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot encode the token: %w", err)
	}
	return append(data, '\n'), nil
}

// KeepRenewed renews the token, with Vault's lifetime watcher, until ctx ends
// (then it returns nil) or the token cannot be renewed any more, e.g. it was
// revoked because a newer one was issued to the service (then it returns the
// error: fetch a new one). onRenew, if not nil, is called after each renewal.
func (t *Token) KeepRenewed(ctx context.Context, onRenew func(*api.Secret)) error {
	c, err := t.Client()
	if err != nil {
		return err
	}
	w, err := c.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: t.Secret})
	if err != nil {
		return fmt.Errorf("cannot renew the token of service %s: %w", t.Service, err)
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.DoneCh():
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("Vault will not extend it further")
			}
			return fmt.Errorf("cannot renew the token of service %s: %w", t.Service, err)
		case r := <-w.RenewCh():
			if onRenew != nil && r != nil {
				onRenew(r.Secret)
			}
		}
	}
}

// DefaultTokenPath is where `edgeseal token fetch` writes the token:
// $XDG_RUNTIME_DIR/edgeseal/token.json, or, in a systemd service with
// RuntimeDirectory=, $RUNTIME_DIRECTORY/token.json.
func DefaultTokenPath() (string, error) {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "edgeseal", "token.json"), nil
	}
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		d, _, _ = strings.Cut(d, ":")
		return filepath.Join(d, "token.json"), nil
	}
	return "", errors.New("cannot choose where to write the token: neither $XDG_RUNTIME_DIR nor $RUNTIME_DIRECTORY " +
		"is set; pass --out with a path on a tmpfs, e.g. under /run")
}

// WriteTokenFile writes t's file content to path atomically with mode 0600: a
// temporary file in the same directory, synced, renamed over path. A missing
// directory is made with mode 0700.
//
// The directory must be the caller's own, reached through directories and
// symlinks only root and the caller control, and path must not be a symlink
// (fsutil.OpenPrivateDir, fsutil.WriteFileAtomicAt): run as root with a
// user's $XDG_RUNTIME_DIR (su keeps it), it refuses rather than follows what
// that user put there.
func WriteTokenFile(path string, t *Token) error {
	data, err := t.MarshalFile()
	if err != nil {
		return err
	}
	dir, err := fsutil.OpenPrivateDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("cannot write the token file: %w", err)
	}
	defer dir.Close()
	if err := fsutil.WriteFileAtomicAt(dir, filepath.Base(path), data, 0o600); err != nil {
		return fmt.Errorf("cannot write the token file: %w", err)
	}
	return nil
}

// CheckFiles tells, before a fetch, whether WriteTokenFile could write the
// token file path (and, with cert, WriteCertificateFiles the certificate's
// beside it): a fetch for a file it would then refuse to write would only
// have revoked the service's previous token for nothing.
func CheckFiles(path string, cert bool) error {
	dir, err := fsutil.OpenPrivateDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("cannot write the token file: %w", err)
	}
	defer dir.Close()
	names := []string{filepath.Base(path)}
	if cert {
		names = append(names, CertificateFile, CertificateCAFile)
	}
	for _, name := range names {
		if err := fsutil.CheckWritableAt(dir, name); err != nil {
			return err
		}
	}
	return nil
}

// Files WriteCertificateFiles writes, in the token file's directory.
const (
	CertificateFile   = "tls.pem"    // the certificate, then its key
	CertificateCAFile = "tls-ca.pem" // the service CA: verifies the other services
)

// WriteCertificateFiles writes c into dir, as WriteTokenFile writes a token
// (a directory of the caller's own, atomically, 0600): CertificateFile, the
// certificate and its key in one file, so that a renewal replaces both at
// once; CertificateCAFile, the service CA's certificate.
func WriteCertificateFiles(dir string, c *Certificate) error {
	d, err := fsutil.OpenPrivateDir(dir)
	if err != nil {
		return fmt.Errorf("cannot write the certificate files: %w", err)
	}
	defer d.Close()
	pair := c.KeyPairPEM()
	defer clear(pair)
	if err := fsutil.WriteFileAtomicAt(d, CertificateCAFile, []byte(strings.TrimSpace(c.CA)+"\n"), 0o600); err != nil {
		return fmt.Errorf("cannot write the service CA's certificate: %w", err)
	}
	if err := fsutil.WriteFileAtomicAt(d, CertificateFile, pair, 0o600); err != nil {
		return fmt.Errorf("cannot write the certificate and its key: %w", err)
	}
	return nil
}
