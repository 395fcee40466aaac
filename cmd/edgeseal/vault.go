package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/cmdline"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/controller"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/fsvault"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/recovery"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

const vaultUsage = `Usage: edgeseal vault COMMAND [OPTIONS] [NAME]

File vaults are directories encrypted by the kernel (fscrypt), whose keys are
sealed to the TPM, or wrapped by a key from the controller the device is
enrolled with (key_source controller), or both (tpm+controller). The config's
file_vaults section says which exist and their policy (unlock, lock,
change-key); the default vaults "config" and "images" exist unless
file_vaults.defaults is false.

Commands:
  list [--json]             every vault's state: unlocked (and how: tpm,
                            controller-key, escrow-recovery), locked, lock
                            pending (files busy), orphaned, not created,
                            awaiting attestation, or error (why)
  apply [--json]            make the device match the config: create new vaults,
                            unlock, lock or change keys per policy, lock orphans
  unlock NAME               create (if new) and unlock NAME; its policy must not
                            be lock (edgeseal-fsvault@NAME.service runs this)
  lock [--wait D] NAME|--all
                            lock NAME (or every vault) now; with files open, wait
                            up to D for them to close, else report "lock pending:
                            files busy"
  delete --purge NAME       erase NAME's key material and files, for good; NAME
                            must be out of the config first
  recover --recovery-key F [NAME...]
                            seal vault keys to the TPM again from their recovery
                            copies (after PCR values changed unapproved)

Every command but list must run as root. The states are written to
/run/edgeseal/fsvault/status.json after every change; list run as a user shows
that file.
`

func cmdVault(ctx context.Context, p paths.Paths, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, vaultUsage)
		return fmt.Errorf("%w: vault needs a command", errUsage)
	}
	cmd, args := args[0], args[1:]
	if cmd == "-h" || cmd == "--help" || cmd == "help" {
		fmt.Fprint(stdout, vaultUsage)
		return nil
	}
	fs := flag.NewFlagSet("edgeseal vault "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, vaultUsage) }
	cfgPath := fs.String("config", p.ConfigFile, "config file")
	asJSON, wait, purge, all, keyFile := new(bool), new(time.Duration), new(bool), new(bool), new(string)
	switch cmd {
	case "list", "apply":
		fs.BoolVar(asJSON, "json", false, "print JSON")
	case "lock":
		fs.DurationVar(wait, "wait", 0, "wait this long for open files to close")
		fs.BoolVar(all, "all", false, "lock every vault on the device (no NAME)")
	case "delete":
		fs.BoolVar(purge, "purge", false, "erase the vault's key material and files (required)")
	case "recover":
		fs.StringVar(keyFile, "recovery-key", "", "the recovery private key (PKCS#8 PEM) matching seal.recovery_key (required)")
	case "unlock":
	default:
		fmt.Fprint(stderr, vaultUsage)
		return fmt.Errorf("%w: unknown vault command %q", errUsage, cmd)
	}
	names, err := cmdline.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case cmd == "lock" && *all:
		if len(names) != 0 {
			return fmt.Errorf("%w: vault lock --all takes no vault name", errUsage)
		}
	case cmd == "unlock" || cmd == "lock" || cmd == "delete":
		if len(names) != 1 {
			return fmt.Errorf("%w: vault %s takes one vault name", errUsage, cmd)
		}
	case cmd == "list" || cmd == "apply":
		if len(names) != 0 {
			return fmt.Errorf("%w: vault %s takes no vault name", errUsage, cmd)
		}
	}
	if cmd == "delete" && !*purge {
		return fmt.Errorf("%w: vault delete destroys the vault's data for good: say so with --purge", errUsage)
	}
	if cmd == "recover" && *keyFile == "" {
		return fmt.Errorf("%w: --recovery-key is required", errUsage)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if cmd == "list" {
		m := &fsvault.Manager{Paths: p, Config: cfg}
		if os.Geteuid() != 0 {
			// The vaults' metadata is root's: a user sees the last status.
			r, err := m.LastReport()
			if err != nil {
				return fmt.Errorf("cannot read the vaults' status (run as root for their live state): %w", err)
			}
			if !*asJSON {
				fmt.Fprintf(stdout, "(as of %s, from %s; run as root for the live state)\n", r.Updated.Format(time.RFC3339), p.VaultStatus)
			}
			return printVaults(stdout, r.Vaults, *asJSON)
		}
		list, err := m.List()
		if err != nil {
			return err
		}
		return printVaults(stdout, list, *asJSON)
	}
	m, err := newVaultManager(p, cfg)
	if err != nil {
		return err
	}
	var changes []fsvault.Change
	switch cmd {
	case "apply":
		changes, list, err := m.Apply(ctx)
		if *asJSON {
			if perr := json.NewEncoder(stdout).Encode(struct {
				Changes []fsvault.Change `json:"changes"`
				Vaults  []fsvault.Status `json:"vaults"`
			}{changes, list}); perr != nil {
				return perr
			}
			return err
		}
		printChanges(stdout, changes)
		if list != nil {
			printVaults(stdout, list, false)
		}
		return err
	case "unlock":
		changes, err = m.Unlock(ctx, names[0])
	case "lock":
		if *all {
			changes, err = m.LockAll(ctx, *wait)
		} else {
			changes, err = m.Lock(ctx, names[0], *wait)
		}
	case "delete":
		changes, err = m.Delete(ctx, names[0])
	case "recover":
		changes, err = recoverVaults(ctx, m, names, *keyFile)
	}
	printChanges(stdout, changes)
	if err == nil && len(changes) == 0 {
		if len(names) == 1 {
			fmt.Fprintf(stdout, "vault %s: nothing to do\n", names[0])
		} else {
			fmt.Fprintln(stdout, "vaults: nothing to do")
		}
	}
	return err
}

// newVaultManager builds the manager: the TPM sealer of seal.tpm2 wraps vault
// keys, a recovery copy goes to seal.recovery_key if set, and the controller
// the device is enrolled with (if any) releases keys and keeps escrow.
func newVaultManager(p paths.Paths, cfg *config.Config) (*fsvault.Manager, error) {
	// File vaults' keys are sealed objects in files whatever seal.tpm2.storage
	// says: NV holds the one Vault unseal key.
	fileTPM := cfg.Seal.TPM2
	fileTPM.Storage = config.TPM2StorageFile
	m := &fsvault.Manager{Paths: p, Config: cfg, TPM: seal.NewTPM2(fileTPM)}
	switch _, err := controller.LoadEnrolment(p); {
	case err == nil:
		m.Controller = &controller.Device{Paths: p, Config: cfg.Controller,
			OpenTPM: func() (*tpm2.TPMContext, error) { return tpm.Open(cfg.Seal.TPM2.Device) }}
	case !errors.Is(err, controller.ErrNotEnrolled):
		return nil, err
	}
	if cfg.Seal.RecoveryKey != "" {
		data, err := fsutil.ReadBounded(cfg.Seal.RecoveryKey, 64<<10)
		if err != nil {
			return nil, fmt.Errorf("cannot read the recovery public key (seal.recovery_key): %w", err)
		}
		if m.Recovery, err = recovery.ParseRecipient(data); err != nil {
			return nil, fmt.Errorf("cannot use the recovery public key %s (seal.recovery_key): %w", cfg.Seal.RecoveryKey, err)
		}
	}
	return m, nil
}

func recoverVaults(ctx context.Context, m *fsvault.Manager, names []string, keyFile string) ([]fsvault.Change, error) {
	data, err := fsutil.ReadBounded(keyFile, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("cannot read the recovery private key: %w", err)
	}
	priv, err := recovery.ParsePrivate(data)
	clear(data)
	if err != nil {
		return nil, err
	}
	return m.Recover(ctx, names, priv)
}

func printChanges(w io.Writer, changes []fsvault.Change) {
	for _, c := range changes {
		fmt.Fprintf(w, "vault %s: %s\n", c.Vault, c.Action)
	}
}

func printVaults(w io.Writer, list []fsvault.Status, asJSON bool) error {
	if asJSON {
		if list == nil {
			list = []fsvault.Status{}
		}
		return json.NewEncoder(w).Encode(struct {
			Vaults []fsvault.Status `json:"vaults"`
		}{list})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPOLICY\tKEY\tLAST CHANGE\tPATH")
	for _, s := range list {
		policy := s.Policy
		if s.Orphaned {
			policy = "-"
		}
		key := "-"
		if s.KeyVersion > 0 {
			key = fmt.Sprintf("%s v%d", s.KeySource, s.KeyVersion)
		}
		changed := "-"
		if !s.LastChange.IsZero() {
			changed = s.LastChange.Format(time.RFC3339)
		}
		state := s.Describe()
		switch s.State {
		case fsvault.StateError:
			state = "error (below)"
		case fsvault.StateAwaiting:
			state = "awaiting attestation (below)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, state, policy, key, changed, s.Path)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Reasons are long: each on its own lines, so the table stays narrow.
	for _, s := range list {
		if s.State == fsvault.StateError || s.State == fsvault.StateAwaiting {
			fmt.Fprintf(w, "\n%s: %s\n", s.Name, s.Reason)
		}
	}
	return nil
}
