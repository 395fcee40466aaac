// Command edgeseal-snap-hook is the edgeseal snap's install, configure and
// connect-plug-* hooks (one static binary, installed as each of meta/hooks/:
// the snap needs nothing of its base, no shell either). The install hook makes
// the snap's state directory; the configure hook, which snapd runs after
// install and after every `snap set edgeseal ...`, turns the options into the
// YAML config the daemons read (internal/snapconf), shows the effective config
// back to `snap get`, and starts or restarts the daemons once nothing they
// need is missing (waitingFor); each connect-plug-* hook does the same. A bad option fails the hook with a message
// naming it: snapd then keeps the previous options, and the file is untouched.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/snapconf"
	"github.com/edgeseal/edgeseal/internal/snapctl"
)

// daemons are the snap's boot chain, in order.
var daemons = []string{"pki", "vault", "unseal", "tokend"}

func main() {
	hook := filepath.Base(os.Args[0])
	if len(os.Args) == 2 {
		hook = os.Args[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, hook, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "edgeseal: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, hook string, stderr io.Writer) error {
	p := paths.Detect("/")
	if p.SnapInstance == "" {
		return errors.New("this is the edgeseal snap's hook: snapd runs it, with $SNAP_DATA and $SNAP_INSTANCE_NAME set")
	}
	sc, err := snapctl.Find()
	if err != nil {
		return err
	}
	switch hook {
	case "install":
		return install(p)
	case "configure", "connect-plug-tpm", "connect-plug-daemon-notify", "connect-plug-system-observe":
		// Connecting a plug is what the chain may have been waiting for
		// (waitingFor): the same checks, then start.
		return configure(ctx, p, sc, stderr)
	default:
		return fmt.Errorf("unknown hook %q: want install, configure or connect-plug-<%s>", hook, strings.Join(chainPlugs, "|"))
	}
}

// install makes the state directory, root's alone, and the directory the
// tokend-ca slot shares (it must exist before a consumer connects; the pki
// app writes the CA certificate in it at every boot). The config file is the
// configure hook's, which snapd runs next.
func install(p paths.Paths) error {
	if err := os.MkdirAll(p.StateDir, 0o700); err != nil {
		return fmt.Errorf("cannot make the state directory: %w", err)
	}
	if err := os.Chmod(p.StateDir, 0o700); err != nil {
		return fmt.Errorf("cannot set the mode of the state directory: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(p.SharedCA), 0o755); err != nil {
		return fmt.Errorf("cannot make the shared CA's directory: %w", err)
	}
	return nil
}

func configure(ctx context.Context, p paths.Paths, sc snapctl.Ctl, stderr io.Writer) error {
	// snapctl get needs keys: the config's sections. (A misspelt top-level
	// option is therefore not seen; a misspelt option within one is refused.)
	doc, err := sc.Output(ctx, append([]string{"get", "-d"}, snapconf.Sections...)...)
	if err != nil {
		return err
	}
	cfg, data, err := snapconf.Parse(p.SnapInstance, doc)
	if err != nil {
		return fmt.Errorf("cannot apply the options: %w (the previous options and config stay in force)", err)
	}
	old, err := os.ReadFile(p.ConfigFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot read the config: %w", err)
	}
	changed := !bytes.Equal(old, data)
	if changed {
		if err := os.MkdirAll(filepath.Dir(p.ConfigFile), 0o755); err != nil {
			return fmt.Errorf("cannot write the config: %w", err)
		}
		// 0644: the config holds no secret, and every app of the snap reads it.
		if err := fsutil.WriteFileAtomic(p.ConfigFile, data, 0o644, fsutil.Self); err != nil {
			return fmt.Errorf("cannot write the config: %w", err)
		}
	}
	// `snap get edgeseal` shows every value in force, defaults included.
	eff, err := snapconf.Effective(cfg)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(eff))
	for k := range eff {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []string{"set"}
	for _, k := range keys {
		args = append(args, k+"="+eff[k])
	}
	if _, err := sc.Output(ctx, args...); err != nil {
		return err
	}

	if code, why := waitingFor(ctx, p, cfg, sc, stderr); code != "" {
		// The chain waits, and says why in `snap info edgeseal` (health);
		// the hook's output has it in full.
		_, err := sc.Output(ctx, "set-health", "--code="+code, "blocked", why)
		return err
	}
	if _, err := sc.Output(ctx, "set-health", "okay"); err != nil {
		return err
	}
	apps := make([]string, len(daemons))
	for i, d := range daemons {
		apps[i] = p.SnapInstance + "." + d
	}
	enabled, err := sc.Enabled(ctx, p.SnapInstance+".unseal")
	if err != nil {
		return err
	}
	switch {
	case !enabled:
		// snapd starts them in order (after:) once this hook has succeeded.
		_, err = sc.Output(ctx, append([]string{"start", "--enable"}, apps...)...)
	case changed:
		_, err = sc.Output(ctx, append([]string{"restart"}, apps...)...)
	}
	return err
}

// chainPlugs are the plugs the chain cannot run without, none connected
// automatically by snapd: daemon-notify (vault, unseal and tokend tell
// systemd they are ready; without it each start times out), system-observe
// (tokend reads a caller's /proc entries and cgroup to know who it is;
// unseal reads the server's) and tpm (only for a TPM device; see waitingFor).
var chainPlugs = []string{"daemon-notify", "system-observe", "tpm"}

// waitingFor says what the chain waits for before it may start: a health code
// and a line of at most 70 characters for snapctl set-health, with the whole
// story on stderr; "" when nothing.
func waitingFor(ctx context.Context, p paths.Paths, cfg *config.Config, sc snapctl.Ctl, stderr io.Writer) (code, why string) {
	notConnected := func(plug string) (string, string) {
		connect := "snap connect " + p.SnapInstance + ":" + plug
		fmt.Fprintf(stderr, "edgeseal: the daemons stay stopped until the %s plug is connected: %s\n", plug, connect)
		why := "the " + plug + " plug is not connected: " + connect
		if len(why) > 70 {
			why = "not connected: " + connect
		}
		if len(why) > 70 {
			why = "the " + plug + " plug is not connected"
		}
		return plug + "-not-connected", why
	}
	for _, plug := range chainPlugs {
		if plug != "tpm" && !sc.Connected(ctx, plug) {
			return notConnected(plug)
		}
	}
	if cfg.Seal.Method != "tpm2" || !strings.HasPrefix(cfg.Seal.TPM2.Device, "/") {
		return "", ""
	}
	device := cfg.Seal.TPM2.Device
	if _, err := os.Stat(device); err != nil {
		fmt.Fprintf(stderr, "edgeseal: the daemons stay stopped: the TPM %s (seal.tpm2.device) is missing: %v; "+
			"set seal.method or seal.tpm2.device\n", device, err)
		return "no-tpm", "no TPM device: set seal.tpm2.device, or seal.method"
	}
	if !sc.Connected(ctx, "tpm") {
		return notConnected("tpm")
	}
	// The tpm plug grants the device node, but no capability: a confined
	// root opens it only if the file's mode lets root in without
	// CAP_DAC_OVERRIDE. Debian's tpm-udev rules make /dev/tpmrm0 owned by
	// tss (mode 0660), which keeps root out.
	f, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(stderr, "edgeseal: the daemons stay stopped: cannot open the TPM %s: %v; under strict confinement "+
			"root has no CAP_DAC_OVERRIDE, so the device must let root in by its owner or group "+
			"(a udev rule such as KERNEL==\"tpmrm[0-9]*\", OWNER=\"root\", GROUP=\"tss\", MODE=\"0660\"; docs/snap.md)\n",
			device, err)
		return "tpm-not-usable", "cannot open " + device + ": see docs/snap.md"
	}
	f.Close()
	return "", ""
}
