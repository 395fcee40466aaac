package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
)

// run is the boot step: config, PKI, Vault config; one log line each, never a
// key.
func run(ctx context.Context, log *journal.Logger, o options) error {
	t0 := time.Now()
	p := paths.Detect(o.root)
	configFile := o.configFile
	if configFile == "" {
		configFile = p.ConfigFile
	}
	cfg, err := config.Load(configFile)
	if err != nil {
		return exitError{exitUsage, err}
	}
	// Before anything is written: no config, and so no server start, for a
	// server edgeseal does not support.
	var kind vaultbin.Kind
	var identifyTook time.Duration
	if o.server != "" {
		t := time.Now()
		var info vaultbin.Info
		var cached bool
		var err error
		if o.stateDir != "" {
			info, cached, err = vaultbin.IdentifyCached(ctx, filepath.Join(o.stateDir, vaultbin.CacheName), o.server)
		} else {
			info, err = vaultbin.Identify(ctx, o.server)
		}
		if errors.Is(err, vaultbin.ErrUnsupported) {
			return exitError{exitUsage, err}
		}
		if err != nil {
			return err
		}
		kind = info.Kind
		identifyTook = time.Since(t)
		log.Info("the secret store server is supported", "server", o.server, "release", info.String(), "known_binary", cached)
	}

	tIssue := time.Now()
	b, err := pki.Issue(pki.Options{
		Validity:     cfg.PKI.Validity.D(),
		Intermediate: cfg.PKI.Intermediate,
		ExtraNames:   cfg.PKI.ExtraNames,
	})
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

	log.Info("issued this boot's CA and Vault certificate; the CA key was never written",
		"ca", b.CACert.Subject.CommonName,
		"ca_serial", fmt.Sprintf("%x", b.CACert.SerialNumber),
		"ca_sha256", pki.Fingerprint(b.CACert),
		"issuing_ca", b.IntermediateCert != nil,
		"vault_names", strings.Join(b.Names(), ","),
		"valid_until", b.CACert.NotAfter.UTC().Format(time.RFC3339),
		"dir", p.PKIDir)

	keyPath := o.vaultKeyPath
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

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
