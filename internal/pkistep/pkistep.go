// Package pkistep is edgeseal-pki.service's step, run at every boot before the
// secret-store server starts: it reads the config, checks the server binary is
// a supported release, issues this boot's CA and the server's certificate
// (package pki; the CA key never leaves the process, or with pki.ca_key tpm
// never leaves the TPM), and writes the server's
// config for the server it is (package vaultconf). It exists so that the
// command only parses its flags and calls Run; cmd/edgeseal-pki is its only
// importer.
package pkistep

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
)

// ErrUsage is matched (errors.Is) by the errors of Run a retry cannot cure: a
// config that does not load, a server binary that is not a supported release
// (which also matches vaultbin.ErrUnsupported). Nothing has been written when
// Run returns one; the operator must mend the config or the server. The
// command exits with status 2 for them.
var ErrUsage = errors.New("bad usage or config")

// usageError is an error that matches ErrUsage and reads as its cause.
type usageError struct{ err error }

func (e usageError) Error() string        { return e.err.Error() }
func (e usageError) Unwrap() error        { return e.err }
func (e usageError) Is(target error) bool { return target == ErrUsage }

// Options are the step's inputs, from the command line and the unit.
type Options struct {
	// Root is the prefix of every path (paths.Detect): "/" (or "") on a
	// device or in the snap, a temporary directory in tests.
	Root string
	// ConfigFile is edgeseal's config; "" means the default under Root.
	ConfigFile string
	// VaultKeyPath is the TLS key path the server's config names; "" means
	// the systemd credential's (vaultconf.CredentialKeyPath), or in the snap
	// the key itself.
	VaultKeyPath string
	// Server is the server binary the server's unit runs; "" means not known,
	// and the config is one both servers read.
	Server string
	// StateDir keeps what the server binary said it is, for the next boot
	// (vaultbin.IdentifyCached): systemd's StateDirectory= of the unit
	// ($STATE_DIRECTORY), kept across boots though the user is new each boot;
	// "" (the snap) asks the binary every time.
	StateDir string
}

// Run is the boot step: config, PKI, the server's config; one log line each
// (and one for the server binary, if named), never a key. The last line
// carries the step's timings (identify_ms, issue_ms, total_ms), which the boot
// benchmarks read. Nothing is written before the config has loaded and the
// server has been identified.
func Run(ctx context.Context, log *slog.Logger, o Options) error {
	t0 := time.Now()
	p := paths.Detect(o.Root)
	configFile := o.ConfigFile
	if configFile == "" {
		configFile = p.ConfigFile
	}
	cfg, err := config.Load(configFile)
	if err != nil {
		return usageError{err}
	}
	// Before anything is written: no config, and so no server start, for a
	// server edgeseal does not support.
	var kind vaultbin.Kind
	var identifyTook time.Duration
	if o.Server != "" {
		t := time.Now()
		var info vaultbin.Info
		var cached bool
		var err error
		if o.StateDir != "" {
			info, cached, err = vaultbin.IdentifyCached(ctx, filepath.Join(o.StateDir, vaultbin.CacheName), o.Server)
		} else {
			info, err = vaultbin.Identify(ctx, o.Server)
		}
		if errors.Is(err, vaultbin.ErrUnsupported) {
			return usageError{err}
		}
		if err != nil {
			return err
		}
		kind = info.Kind
		identifyTook = time.Since(t)
		log.Info("the secret store server is supported", "server", o.Server, "release", info.String(), "known_binary", cached)
	}

	tIssue := time.Now()
	opts := pki.Options{
		Validity:     cfg.PKI.Validity.D(),
		Intermediate: cfg.PKI.Intermediate,
		ExtraNames:   cfg.PKI.ExtraNames,
	}
	where := "the CA key was never written"
	if cfg.PKI.CAKey == config.CAKeyTPM {
		t, err := tpm.Open(cfg.Seal.TPM2.Device)
		if err != nil {
			return fmt.Errorf("cannot make this boot's CA in the TPM (pki.ca_key tpm): %w%s", err, tpmAccessHint(err))
		}
		defer t.Close()
		opts.NewCAKey = func() (pki.CAKey, error) { return tpm.NewCAKey(t) }
		where = "the CA key was made in the TPM and flushed from it"
	}
	b, err := pki.Issue(opts)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cannot finish this boot's PKI: %w", err)
	}
	if err := b.Write(p); err != nil {
		return err
	}
	issueTook := time.Since(tIssue)

	log.Info("issued this boot's CA and Vault certificate; "+where,
		"ca", b.CACert.Subject.CommonName,
		"ca_key", cfg.PKI.CAKey,
		"ca_serial", fmt.Sprintf("%x", b.CACert.SerialNumber),
		"ca_sha256", pki.Fingerprint(b.CACert),
		"issuing_ca", b.IntermediateCert != nil,
		"vault_names", strings.Join(b.Names(), ","),
		"valid_until", b.CACert.NotAfter.UTC().Format(time.RFC3339),
		"dir", p.PKIDir)

	keyPath := o.VaultKeyPath
	if keyPath == "" {
		// The unit hands Vault a copy of the key with LoadCredential=; the snap
		// has no credentials, and its Vault reads the key where it is.
		keyPath = vaultconf.CredentialKeyPath
		if p.SnapInstance != "" {
			keyPath = p.VaultKey
		}
	}
	if p.SnapInstance != "" {
		// The unit's Vault gets its admin socket's directory from systemd
		// (RuntimeDirectory=); the snap's, all root, from this step.
		if err := os.MkdirAll(filepath.Dir(p.VaultAdmin), 0o700); err != nil {
			return fmt.Errorf("cannot create the directory of Vault's admin socket: %w", err)
		}
	}
	c, err := vaultconf.Render(cfg.Vault, kind, p.VaultCert, keyPath, p.VaultAdmin)
	if err != nil {
		return err
	}
	tcp := initialised(p)
	if err := vaultconf.Write(p, c, tcp); err != nil {
		return err
	}
	listen := cfg.Vault.Listen
	if !tcp {
		listen = "admin socket only until edgeseal has initialised Vault"
	}
	// The last line says where the step's time went (milliseconds, from its
	// start): the boot benchmarks read it.
	log.Info("wrote Vault's server config",
		"dir", p.VaultConfDir, "listen", listen, "admin_socket", p.VaultAdmin, "storage", cfg.Vault.StoragePath,
		"tls_key_file", keyPath,
		"identify_ms", ms(identifyTook), "issue_ms", ms(issueTook), "total_ms", ms(time.Since(t0)))
	return nil
}

// initialised tells whether edgeseal has initialised Vault: its sealed
// unseal key exists. This step's user may not read /var/lib/edgeseal's files,
// only look a name up in it (the directory is 0711). When it cannot tell, the
// answer is no: Vault then starts without its TCP listener, and edgeseal-unseal
// turns it on once it has unsealed Vault, at the cost of one Vault restart.
func initialised(p paths.Paths) bool {
	_, err := os.Stat(p.SealedKey)
	return err == nil
}

// tpmAccessHint says what to do when edgeseal-pki, a dynamic user of group
// tss, may not open the TPM's device node.
func tpmAccessHint(err error) string {
	if !errors.Is(err, fs.ErrPermission) {
		return ""
	}
	return ": edgeseal-pki opens it as a member of group tss: the device node must be the group's " +
		"(Debian and Ubuntu: the tpm-udev package's rules)"
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
