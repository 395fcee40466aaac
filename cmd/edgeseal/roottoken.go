package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/secretstore"
)

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
	if *ttl < time.Minute || *ttl > secretstore.MaxMaintenanceTTL {
		return fmt.Errorf("%w: --ttl must be between 1m and %s", errUsage, secretstore.MaxMaintenanceTTL)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	t, err := secretstore.MaintenanceRootToken(ctx, p, cfg, *ttl, func(msg string) { fmt.Fprintln(stderr, msg) })
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "edgeseal: root token valid for %s (accessor %s); it is shown once and never stored\n", ttl, t.Accessor)
	fmt.Fprintln(stdout, t.Token)
	return nil
}
