package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/recovery"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/secretstore"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
)

func cmdRecover(ctx context.Context, p paths.Paths, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgeseal recover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("recovery-key", "", "the recovery private key (PKCS#8 PEM) matching seal.recovery_key (required)")
	cfgPath := fs.String("config", p.ConfigFile, "config file")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: edgeseal recover --recovery-key PRIVATE.pem

Brings a device back when its sealer will not release the Vault unseal key (for
tpm2: PCR values that were not approved in time). It opens the recovery copy
(/var/lib/edgeseal/unseal-key.recovery) with your recovery private key, proves the
key against Vault (it unseals Vault, or makes and revokes a root token), then
seals it again with the configured sealer to the device's current state. The old
sealed blob is kept beside the new one (.before-recovery). Must run as root; then
restart edgeseal-unseal.service (in the snap: snap restart edgeseal.unseal).

`)
		fs.PrintDefaults()
	}
	if _, help, err := parseArgs(fs, args); help || err != nil {
		return err
	}
	if *keyFile == "" {
		return fmt.Errorf("%w: --recovery-key is required", errUsage)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	privPEM, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("cannot read the recovery private key: %w", err)
	}
	priv, err := recovery.ParsePrivate(privPEM)
	clear(privPEM)
	if err != nil {
		return err
	}
	copyBlob, err := os.ReadFile(p.Recovery)
	if err != nil {
		return fmt.Errorf("cannot read the recovery copy (was seal.recovery_key set before this happened?): %w", err)
	}
	key, err := recovery.Open(priv, copyBlob)
	if err != nil {
		return fmt.Errorf("cannot open the recovery copy %s: %w", p.Recovery, err)
	}
	defer clear(key)
	if err := proveKey(ctx, p, key); err != nil {
		return err
	}
	sealer, err := seal.New(cfg.Seal, func(msg string) { fmt.Fprintln(stderr, msg) })
	if err != nil {
		return err
	}
	old, _ := os.ReadFile(p.SealedKey) // nil if there is none
	var blob []byte
	if cfg.Seal.Method == seal.MethodTPM2 {
		// With storage nv, the new index must not take the old one's slot.
		blob, err = seal.ResealTPM2(cfg.Seal.TPM2, key, old)
	} else {
		blob, err = sealer.Seal(ctx, key)
	}
	if err != nil {
		return fmt.Errorf("cannot seal the recovered key again with %s: %w", cfg.Seal.Method, err)
	}
	// Keep the old blob by a second link, so that at every instant a sealed key is
	// in place: the atomic write then replaces the first link only.
	if _, err := os.Stat(p.SealedKey); err == nil {
		kept := p.SealedKey + ".before-recovery"
		if err := os.Remove(kept); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("cannot replace %s: %w", kept, err)
		}
		if err := os.Link(p.SealedKey, kept); err != nil {
			return fmt.Errorf("cannot keep the old sealed blob: %w", err)
		}
	}
	if err := fsutil.WriteFileAtomic(p.SealedKey, blob, 0o600, fsutil.Self); err != nil {
		return err
	}
	// The new blob in place, the rollback counter moves past every older one
	// (storage nv), then the old NV index goes.
	if cfg.Seal.Method == seal.MethodTPM2 {
		if _, err := seal.CommitTPM2(cfg.Seal.TPM2, blob); err != nil {
			fmt.Fprintf(stderr, "warning: the key is sealed again, but the TPM's rollback counter did not advance "+
				"(the next unseal advances it): %v\n", err)
		}
		if err := seal.ReleaseTPM2(cfg.Seal.TPM2, old); err != nil {
			fmt.Fprintf(stderr, "warning: the key is sealed again, but the old TPM NV index stays: %v\n", err)
		}
	}
	fmt.Fprintf(stdout, "recovered: the unseal key is sealed again (%s) to this device's current state in %s; "+
		"now run: %s\n", cfg.Seal.Method, p.SealedKey, restartStep(p, "unseal"))
	return nil
}

// proveKey shows the recovered key is Vault's: a sealed Vault accepts it; for
// an unsealed one, the admin token sealed under it opens and Vault knows it
// (or, on a device that has no admin token yet, Vault makes a root token with
// the key, revoked at once). It talks to Vault's admin socket.
func proveKey(ctx context.Context, p paths.Paths, key []byte) error {
	c, err := vaultclient.New("unix://"+p.VaultAdmin, nil)
	if err != nil {
		return err
	}
	st, err := c.Sys().SealStatusWithContext(ctx)
	if err != nil {
		return fmt.Errorf("cannot reach Vault to check the recovered key (is %s running?): %w", stepUnit(p, "vault"), err)
	}
	if st.Sealed {
		if _, err := secretstore.Unseal(ctx, c, key); err != nil {
			return fmt.Errorf("the recovered key does not unseal Vault: %w", err)
		}
		return nil
	}
	admin, err := secretstore.OpenAdminToken(ctx, p.AdminToken, key)
	if err == nil {
		c.SetToken(admin)
		defer c.ClearToken()
		if _, err := c.Auth().Token().LookupSelfWithContext(ctx); err != nil {
			return fmt.Errorf("the recovered key opens the admin token, but Vault refuses that token: %w", err)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the recovered key is not this Vault's: %w", err)
	}
	root, err := secretstore.GenerateRoot(ctx, c, key)
	if err != nil {
		return fmt.Errorf("the recovered key is not this Vault's: %w", err)
	}
	c.SetToken(root)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return c.Auth().Token().RevokeSelfWithContext(rctx, "")
}
