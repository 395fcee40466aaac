package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/edgeseal/edgeseal/internal/cmdline"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/seal"
)

func cmdTPM(p paths.Paths, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "reseal" {
		return fmt.Errorf("%w: tpm needs a subcommand: reseal", errUsage)
	}
	values := cmdline.PCRValues{}
	fs := flag.NewFlagSet("edgeseal tpm reseal", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(values, "pcr", "approve this value for a PCR, as N=HEX (repeat; default: every sealed PCR's current value)")
	cfgPath := fs.String("config", p.ConfigFile, "config file")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: edgeseal tpm reseal [--pcr N=HEX ...]

Approves new PCR values for the TPM-sealed unseal key and every file vault's
key, without changing the keys or the sealed objects, and rewrites each sealed
blob atomically. It must run where the keys unseal now (an approved state):
before an update, pass the values the update will produce (--pcr 7=...); with
no --pcr, it approves the current values. With seal.tpm2.storage nv it then
advances the TPM's rollback counter, so older copies of the sealed key are
refused.
Must run as root.

`)
		fs.PrintDefaults()
	}
	if _, help, err := parseArgs(fs, args[1:]); help || err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.Seal.Method != seal.MethodTPM2 {
		return fmt.Errorf("%w: seal.method is %s, not tpm2: there are no PCR values to approve", errUsage, cfg.Seal.Method)
	}
	var approve map[int][]byte
	if len(values) > 0 {
		approve = map[int][]byte{}
		for _, pcr := range cfg.Seal.TPM2.PCRs {
			v, ok := values[pcr]
			if !ok {
				return fmt.Errorf("%w: the key is sealed to PCRs %v: give a value for each (missing %d)", errUsage, cfg.Seal.TPM2.PCRs, pcr)
			}
			approve[pcr] = v
		}
		for pcr := range values {
			if !slices.Contains(cfg.Seal.TPM2.PCRs, pcr) {
				return fmt.Errorf("%w: the key is not sealed to PCR %d (seal.tpm2.pcrs is %v)", errUsage, pcr, cfg.Seal.TPM2.PCRs)
			}
		}
	}
	what := "the current values"
	if approve != nil {
		what = "the given values"
	}
	approveBlob := func(blob []byte) ([]byte, error) { return seal.ApproveTPM2(cfg.Seal.TPM2, blob, approve) }
	blob, err := os.ReadFile(p.SealedKey)
	switch {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(stdout, "no sealed unseal key in %s yet (before the first boot): only file vaults to approve\n", p.SealedKey)
	case err != nil:
		return fmt.Errorf("cannot read the sealed unseal key (run as root): %w", err)
	default:
		newBlob, err := approveBlob(blob)
		if err != nil {
			return fmt.Errorf("cannot approve new PCR values: %w", err)
		}
		if err := fsutil.WriteFileAtomic(p.SealedKey, newBlob, 0o600, fsutil.Self); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "approved %s of PCRs %v for %s\n", what, cfg.Seal.TPM2.PCRs, p.SealedKey)
		// Only now that the new blob is on disk: in NV storage, the counter
		// moves past every older blob's approval.
		nv, err := seal.CommitTPM2(cfg.Seal.TPM2, newBlob)
		if err != nil {
			return fmt.Errorf("cannot advance the TPM's rollback counter (the new blob is written; its next unseal advances it): %w", err)
		}
		if nv {
			fmt.Fprintln(stdout, "advanced the TPM's rollback counter: older copies of the sealed key are refused")
		}
	}
	// The file vaults' keys are sealed to the same PCRs.
	m, err := newVaultManager(p, cfg)
	if err != nil {
		return err
	}
	changes, err := m.ReplaceTPM(nil, approveBlob)
	printChanges(stdout, changes)
	if err != nil {
		return fmt.Errorf("cannot approve new PCR values for every file vault: %w", err)
	}
	return nil
}
