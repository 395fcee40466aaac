// Command edgeseal-pki is edgeseal-pki.service: at every boot it makes a new CA and
// the Vault server's TLS certificate in /run/edgeseal/pki, and Vault's server
// config in /run/edgeseal/vault/vault.json.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
)

const usage = `Usage: edgeseal-pki [--config FILE]

Runs as edgeseal-pki.service (oneshot) at every boot. Makes a new CA (ECDSA P-384;
optionally an issuing CA, pki.intermediate) whose private key never leaves this
process, and the Vault listener's certificate for 127.0.0.1, ::1, localhost and
pki.extra_names. Writes, in tmpfs:
  /run/edgeseal/pki/ca.crt      the CA certificate every client verifies Vault with
  /run/edgeseal/pki/vault.crt   Vault's certificate chain
  /run/edgeseal/pki/vault.key   Vault's key (0600; Vault gets a copy by LoadCredential=)
  /run/edgeseal/vault/vault.json  Vault's server config

Options:
`

// Exit status: 1 an error a restart may cure, 2 bad usage or config (as for
// edgeseal-unseal).
func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "edgeseal-pki: %v\n", err)
		var cerr *config.Error
		if errors.As(err, &cerr) || errors.Is(err, os.ErrNotExist) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("edgeseal-pki", flag.ContinueOnError)
	root := fs.String("root", "/", "prefix of every path (tests)")
	cfgPath := fs.String("config", "", "config file (default /etc/edgeseal/edgeseal.yaml)")
	keyPath := fs.String("vault-key-path", vaultconf.CredentialKeyPath, "the key path Vault's config names")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := journal.New(os.Stderr)
	p := paths.New(*root)
	if *cfgPath == "" {
		*cfgPath = p.ConfigFile
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	b, err := pki.Issue(pki.Options{
		Validity:     cfg.PKI.Validity.D(),
		Intermediate: cfg.PKI.Intermediate,
		ExtraNames:   cfg.PKI.ExtraNames,
	})
	if err != nil {
		return err
	}
	if err := b.Write(p); err != nil {
		return err
	}
	names := append(append([]string{}, b.LeafCert.DNSNames...), ipStrings(b)...)
	log.Info("issued this boot's CA and Vault certificate; the CA key was never written",
		"ca", b.CACert.Subject.CommonName, "ca_sha256", pki.Fingerprint(b.CACert),
		"intermediate", b.IntermediateCert != nil, "vault_names", strings.Join(names, ","),
		"not_after", b.LeafCert.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
	data, err := vaultconf.Render(cfg, p.VaultCert, *keyPath)
	if err != nil {
		return err
	}
	if err := vaultconf.Write(p, data); err != nil {
		return err
	}
	log.Info("wrote Vault's server config", "path", p.VaultConfig, "listen", cfg.Vault.Listen, "storage", cfg.Vault.StoragePath)
	return nil
}

func ipStrings(b *pki.Bundle) []string {
	var out []string
	for _, ip := range b.LeafCert.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}
