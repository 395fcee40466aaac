package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
)

// run is the boot step: config, PKI, Vault config; one log line each, never a
// key.
func run(ctx context.Context, log *journal.Logger, o options) error {
	p := paths.Detect(o.root)
	configFile := o.configFile
	if configFile == "" {
		configFile = p.ConfigFile
	}
	cfg, err := config.Load(configFile)
	if err != nil {
		return exitError{exitUsage, err}
	}

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
	data, err := vaultconf.Render(cfg.Vault, p.VaultCert, keyPath)
	if err != nil {
		return err
	}
	if err := vaultconf.Write(p, data); err != nil {
		return err
	}
	log.Info("wrote Vault's server config",
		"path", p.VaultConfig, "listen", cfg.Vault.Listen, "storage", cfg.Vault.StoragePath,
		"tls_key_file", keyPath)
	return nil
}
