package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/secretstore"
)

// maxRootTTL bounds a maintenance root token: long enough for a repair, short
// enough that a forgotten one is not a standing key to everything.
const maxRootTTL = 24 * time.Hour

func cmdRootToken(ctx context.Context, p paths.Paths, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgeseal root-token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ttl := fs.Duration("ttl", 15*time.Minute, "lifetime of the token (at most 24h)")
	cfgPath := fs.String("config", p.ConfigFile, "config file")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: edgeseal root-token [--ttl 15m]

Makes a root token for maintenance, prints it once on stdout, and lets it
expire after --ttl. It is never written to disk. It is made on Vault's admin
socket with edgeseal's admin token, which only the unseal key opens: must run
as root (it unseals the unseal key).

`)
		fs.PrintDefaults()
	}
	if _, help, err := parseArgs(fs, args); help || err != nil {
		return err
	}
	if *ttl < time.Minute || *ttl > maxRootTTL {
		return fmt.Errorf("%w: --ttl must be between 1m and %s", errUsage, maxRootTTL)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	blob, err := os.ReadFile(p.SealedKey)
	if err != nil {
		return fmt.Errorf("cannot read the sealed unseal key (run as root, after the first boot): %w", err)
	}
	sealer, err := seal.New(cfg.Seal, func(msg string) { fmt.Fprintln(stderr, msg) })
	if err != nil {
		return err
	}
	key, err := sealer.Unseal(ctx, blob)
	if err != nil {
		return fmt.Errorf("cannot unseal the unseal key from %s: %w", p.SealedKey, err)
	}
	defer clear(key)
	admin, err := secretstore.OpenAdminToken(ctx, p.AdminToken, key)
	if err != nil {
		return fmt.Errorf("%w (it is made when edgeseal-unseal.service sets Vault up)", err)
	}
	c, err := secretstore.NewClient("unix://"+p.VaultAdmin, nil)
	if err != nil {
		return err
	}
	c.SetToken(admin)
	defer c.ClearToken()
	s, err := c.Auth().Token().CreateOrphanWithContext(ctx, &api.TokenCreateRequest{
		Policies:       []string{"root"},
		TTL:            ttl.String(),
		ExplicitMaxTTL: ttl.String(),
		Renewable:      new(bool),
		DisplayName:    "edgeseal-maintenance",
		Metadata:       map[string]string{"edgeseal": "root-token"},
	})
	if err != nil {
		return fmt.Errorf("cannot create the maintenance root token: %w", err)
	}
	fmt.Fprintf(stderr, "edgeseal: root token valid for %s (accessor %s); it is shown once and never stored\n", ttl, s.Auth.Accessor)
	fmt.Fprintln(stdout, s.Auth.ClientToken)
	return nil
}
