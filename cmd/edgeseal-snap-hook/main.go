// Command edgeseal-snap-hook is the edgeseal snap's install, configure and
// connect-plug-tpm hook (one static binary, installed as each of meta/hooks/:
// the snap's bare base has no shell). The install hook makes the snap's state
// directory; the configure hook, which snapd runs after install and after every
// `snap set edgeseal ...`, turns the options into the YAML config the daemons
// read (internal/snapconf), shows the effective config back to `snap get`, and
// starts or restarts the daemons. A bad option fails the hook with a message
// naming it: snapd then keeps the previous options, and the file is untouched.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/snapconf"
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
	sc, err := findSnapctl()
	if err != nil {
		return err
	}
	switch hook {
	case "install":
		return install(p)
	case "configure", "connect-plug-tpm":
		// Connecting the tpm plug is what a TPM-sealed chain may have been
		// waiting for: the same checks, then start.
		return configure(ctx, p, sc, stderr)
	default:
		return fmt.Errorf("unknown hook %q: want install, configure or connect-plug-tpm", hook)
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

func configure(ctx context.Context, p paths.Paths, sc snapctl, stderr io.Writer) error {
	// snapctl get needs keys: the config's sections. (A misspelt top-level
	// option is therefore not seen; a misspelt option within one is refused.)
	doc, err := sc.output(ctx, append([]string{"get", "-d"}, snapconf.Sections...)...)
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
	if _, err := sc.output(ctx, args...); err != nil {
		return err
	}

	if cfg.Seal.Method == "tpm2" && strings.HasPrefix(cfg.Seal.TPM2.Device, "/") {
		// A TPM device: it must exist, and the tpm plug must be connected for
		// the snap to open it (it is not connected automatically). Until
		// then the chain waits, and says why in `snap info edgeseal`
		// (health: at most 70 characters); its hook's output has it in full.
		code, why := "", ""
		if _, err := os.Stat(cfg.Seal.TPM2.Device); err != nil {
			code, why = "no-tpm", "no TPM device: set seal.tpm2.device, or seal.method"
			fmt.Fprintf(stderr, "edgeseal: the daemons stay stopped: the TPM %s (seal.tpm2.device) is missing: %v; "+
				"set seal.method or seal.tpm2.device\n", cfg.Seal.TPM2.Device, err)
		} else if !sc.connected(ctx, "tpm") {
			code, why = "tpm-not-connected", "the tpm plug is not connected: snap connect "+p.SnapInstance+":tpm"
			fmt.Fprintf(stderr, "edgeseal: the daemons stay stopped until the tpm plug is connected: snap connect %s:tpm\n", p.SnapInstance)
		}
		if code != "" {
			_, err := sc.output(ctx, "set-health", "--code="+code, "blocked", why)
			return err
		}
	}
	if _, err := sc.output(ctx, "set-health", "okay"); err != nil {
		return err
	}
	apps := make([]string, len(daemons))
	for i, d := range daemons {
		apps[i] = p.SnapInstance + "." + d
	}
	enabled, err := sc.enabled(ctx, p.SnapInstance+".unseal")
	if err != nil {
		return err
	}
	switch {
	case !enabled:
		// snapd starts them in order (after:) once this hook has succeeded.
		_, err = sc.output(ctx, append([]string{"start", "--enable"}, apps...)...)
	case changed:
		_, err = sc.output(ctx, append([]string{"restart"}, apps...)...)
	}
	return err
}

// snapctl runs snapd's snapctl, which reaches snapd for the hook's context.
type snapctl string

// findSnapctl finds snapctl: /usr/bin/snapctl on most bases, only in snapd's
// own directory on the bare base.
func findSnapctl() (snapctl, error) {
	for _, p := range []string{"/usr/bin/snapctl", "/usr/lib/snapd/snapctl"} {
		if _, err := os.Stat(p); err == nil {
			return snapctl(p), nil
		}
	}
	return "", errors.New("cannot find snapctl in /usr/bin or /usr/lib/snapd")
}

func (s snapctl) output(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, string(s), args...)
	cmd.Stdout = io.Writer(&limited{w: &stdout, n: snapconf.MaxDocument + 1})
	cmd.Stderr = &limited{w: &stderr, n: 4096}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("snapctl %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// connected tells whether the snap's plug is connected (snapctl is-connected
// exits 1 when it is not).
func (s snapctl) connected(ctx context.Context, plug string) bool {
	_, err := s.output(ctx, "is-connected", plug)
	return err == nil
}

// enabled tells whether snapctl services lists app as enabled.
func (s snapctl) enabled(ctx context.Context, app string) (bool, error) {
	out, err := s.output(ctx, "services", app)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == app {
			return f[1] == "enabled", nil
		}
	}
	return false, fmt.Errorf("snapctl services does not list %s", app)
}

// limited keeps the first n bytes written to it.
type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(b []byte) (int, error) {
	if l.n > 0 {
		k := min(len(b), l.n)
		l.w.Write(b[:k])
		l.n -= k
	}
	return len(b), nil
}
