package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsvault"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/sdbus"
	"github.com/edgeseal/edgeseal/internal/secretstore"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
)

// stepUnit names the unit of a step of the chain ("pki", "vault", "unseal",
// "tokend"), and restartStep the command that restarts it, on the units
// install or in the snap.
func stepUnit(p paths.Paths, step string) string {
	if p.SnapInstance != "" {
		return "snap." + p.SnapInstance + "." + step + ".service"
	}
	return "edgeseal-" + step + ".service"
}

func restartStep(p paths.Paths, step string) string {
	if p.SnapInstance != "" {
		return "snap restart " + p.SnapInstance + "." + step
	}
	return "systemctl restart edgeseal-" + step + ".service"
}

// chainUnits are the boot chain, in order, then the token provider, as
// `edgeseal status` shows them: edgeseal's units, or the snap's (snapd names
// a daemon snap.<snap>.<app>.service, a socket snap.<snap>.<app>.<name>.socket).
func chainUnits(p paths.Paths) []string {
	if p.SnapInstance == "" {
		return []string{"edgeseal-pki.service", "edgeseal-vault.service", "edgeseal-unseal.service", "edgeseal.target",
			"edgeseal-tokend.socket", "edgeseal-tokend.service"}
	}
	return []string{stepUnit(p, "pki"), stepUnit(p, "vault"), stepUnit(p, "unseal"),
		"snap." + p.SnapInstance + ".tokend.tokend.socket", stepUnit(p, "tokend")}
}

type statusReport struct {
	Ready     bool                `json:"ready"`
	Summary   string              `json:"summary"`
	Units     map[string]string   `json:"units,omitempty"`
	Vault     vaultReport         `json:"vault"`
	SealedKey sealedKeyReport     `json:"sealed_key"`
	Daemon    *secretstore.Status `json:"daemon,omitempty"`
	PKI       *pkiReport          `json:"pki,omitempty"`
	// FileVaults counts the file vaults by state, from their status file
	// (`edgeseal vault list` has the detail).
	FileVaults map[string]int `json:"file_vaults,omitempty"`
	Problems   []string       `json:"problems,omitempty"`

	units []string // the units asked about, in the order shown
}

type vaultReport struct {
	Addr        string `json:"addr"`
	Reachable   bool   `json:"reachable"`
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Version     string `json:"version,omitempty"`
	Server      string `json:"server,omitempty"` // OpenBao or Vault, as edgeseal-unseal identified it
}

type sealedKeyReport struct {
	Path    string `json:"path"`
	Present bool   `json:"present"`
	Method  string `json:"method"`
}

type pkiReport struct {
	CA       string    `json:"ca"`
	NotAfter time.Time `json:"not_after"`
}

func cmdStatus(ctx context.Context, p paths.Paths, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("edgeseal status", flag.ContinueOnError)
	fs.SetOutput(stdout)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cfgPath := fs.String("config", p.ConfigFile, "config file")
	if _, help, err := parseArgs(fs, args); help || err != nil {
		return err
	}
	r := gatherStatus(ctx, p, *cfgPath)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		printStatus(stdout, r)
	}
	if !r.Ready {
		return errNotReady
	}
	return nil
}

func gatherStatus(ctx context.Context, p paths.Paths, cfgPath string) *statusReport {
	r := &statusReport{SealedKey: sealedKeyReport{Path: p.SealedKey}}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		cfg = config.Default()
	}
	r.Vault.Addr = cfg.VaultAddr()
	r.SealedKey.Method = cfg.Seal.Method
	if _, err := os.Stat(p.SealedKey); err == nil {
		r.SealedKey.Present = true
	}
	r.units = chainUnits(p)
	r.Units = unitStates(ctx, r.units)

	if st, err := secretstore.ReadStatus(p.StatusFile); err == nil {
		r.Daemon = st
		r.Vault.Server = st.Server
	}
	if vr, err := (&fsvault.Manager{Paths: p}).LastReport(); err == nil && len(vr.Vaults) > 0 {
		r.FileVaults = map[string]int{}
		for _, v := range vr.Vaults {
			r.FileVaults[v.State]++
		}
	}
	if data, err := os.ReadFile(p.CACert); err == nil {
		if blk, _ := pem.Decode(data); blk != nil {
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
				r.PKI = &pkiReport{CA: c.Subject.CommonName, NotAfter: c.NotAfter}
			}
		}
	}
	pool, err := pki.LoadCAPool(p.CACert)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	} else if c, err := vaultclient.New(r.Vault.Addr, pool); err == nil {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := c.Sys().SealStatusWithContext(qctx)
		cancel()
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("cannot reach Vault at %s: %v", r.Vault.Addr, err))
		} else {
			r.Vault.Reachable = true
			r.Vault.Initialized = st.Initialized
			r.Vault.Sealed = st.Sealed
			r.Vault.Version = st.Version
		}
	}
	r.Ready = r.Vault.Reachable && r.Vault.Initialized && !r.Vault.Sealed && r.SealedKey.Present
	switch {
	case r.Ready:
		r.Summary = "ready: Vault is unsealed"
	case !r.Vault.Reachable:
		r.Summary = "not ready: Vault does not answer"
	case !r.Vault.Initialized:
		r.Summary = "not ready: Vault is not initialised yet"
	case r.Vault.Sealed:
		r.Summary = "not ready: Vault is sealed"
	default:
		r.Summary = "not ready: no sealed unseal key"
	}
	return r
}

// unitStates asks systemd for the chain's units; nil when there is no systemd.
func unitStates(ctx context.Context, units []string) map[string]string {
	conn, err := sdbus.Systemd(ctx)
	if err != nil {
		return nil
	}
	defer conn.Close()
	list, err := conn.ListUnitsByNamesContext(ctx, units)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, u := range list {
		out[u.Name] = u.ActiveState + " (" + u.SubState + ")"
	}
	return out
}

// maxCell bounds a cell of the status table; longer text goes below it.
const maxCell = 60

func printStatus(w io.Writer, r *statusReport) {
	fmt.Fprintf(w, "edgeseal: %s\n\n", r.Summary)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	v := r.Vault
	state := "does not answer"
	if v.Reachable {
		state = map[bool]string{true: "initialised", false: "NOT initialised"}[v.Initialized] + ", " +
			map[bool]string{true: "SEALED", false: "unsealed"}[v.Sealed]
		if v.Version != "" {
			name := v.Server
			if name == "" {
				name = "version"
			}
			state += " (" + name + " " + v.Version + ")"
		}
	}
	fmt.Fprintf(tw, "  Vault\t%s\t%s\n", v.Addr, state)
	var long string // the daemon's line, when too long for the table
	key := "absent"
	if r.SealedKey.Present {
		key = "present, seal method " + r.SealedKey.Method
	}
	fmt.Fprintf(tw, "  Unseal key\t%s\t%s\n", r.SealedKey.Path, key)
	if d := r.Daemon; d != nil {
		line := d.Phase
		if d.Reunseals > 0 && d.LastReunseal != nil {
			line += fmt.Sprintf("; re-unsealed Vault %d time(s), last at %s, %d ms after it went away",
				d.Reunseals, d.LastReunseal.Local().Format(time.DateTime), d.LastReunsealMillis)
		}
		cell := line
		if len(line) > maxCell {
			// A long reason (a failure) would widen every row: it goes below.
			cell, long = strings.SplitN(line, ":", 2)[0]+" (below)", line
		}
		fmt.Fprintf(tw, "  Unseal daemon\t%s\t(updated %s)\n", cell, d.Updated.Local().Format(time.DateTime))
	}
	if r.PKI != nil {
		fmt.Fprintf(tw, "  Per-boot PKI\t%s\tvalid until %s\n", r.PKI.CA, r.PKI.NotAfter.Local().Format(time.DateTime))
	}
	if len(r.FileVaults) > 0 {
		var counts []string
		for _, state := range slices.Sorted(maps.Keys(r.FileVaults)) {
			counts = append(counts, fmt.Sprintf("%d %s", r.FileVaults[state], state))
		}
		fmt.Fprintf(tw, "  File vaults\t%s\t(edgeseal vault list)\n", strings.Join(counts, ", "))
	}
	for _, u := range r.units {
		if s, ok := r.Units[u]; ok {
			fmt.Fprintf(tw, "  Unit\t%s\t%s\n", u, s)
		}
	}
	tw.Flush()
	if long != "" {
		fmt.Fprintf(w, "\nUnseal daemon: %s\n", long)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "\nProblems:\n  %s\n", strings.Join(r.Problems, "\n  "))
	}
}
