// Package snapctl runs snapd's snapctl for the edgeseal snap's hooks: reading
// and setting options and health, asking about plugs and services, starting
// and restarting the snap's daemons. It is the snap's one way to reach snapd.
package snapctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// MaxOutput bounds what is read from one snapctl command (the options
// document of `snapctl get -d` is the largest).
const MaxOutput = 1 << 20

// Ctl is the path of snapctl.
type Ctl string

// Find finds snapctl: /usr/bin/snapctl on most bases, only in snapd's own
// directory on others (the bare base).
func Find() (Ctl, error) {
	for _, p := range []string{"/usr/bin/snapctl", "/usr/lib/snapd/snapctl"} {
		if _, err := os.Stat(p); err == nil {
			return Ctl(p), nil
		}
	}
	return "", errors.New("cannot find snapctl in /usr/bin or /usr/lib/snapd")
}

// Output runs `snapctl ARGS...` and returns its output (at most MaxOutput
// bytes); a failure carries snapctl's first 4 KiB of stderr.
func (c Ctl) Output(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, string(c), args...)
	cmd.Stdout = &limited{w: &stdout, n: MaxOutput + 1}
	cmd.Stderr = &limited{w: &stderr, n: 4096}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("snapctl %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	if stdout.Len() > MaxOutput {
		return nil, fmt.Errorf("snapctl %s: more than %d bytes of output", args[0], MaxOutput)
	}
	return stdout.Bytes(), nil
}

// Connected tells whether the snap's plug is connected (snapctl
// is-connected exits 1 when it is not).
func (c Ctl) Connected(ctx context.Context, plug string) bool {
	_, err := c.Output(ctx, "is-connected", plug)
	return err == nil
}

// Enabled tells whether snapctl services lists app ("<snap>.<app>") as
// enabled.
func (c Ctl) Enabled(ctx context.Context, app string) (bool, error) {
	out, err := c.Output(ctx, "services", app)
	if err != nil {
		return false, err
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == app {
			return f[1] == "enabled", nil
		}
	}
	return false, fmt.Errorf("snapctl services does not list %s", app)
}

// limited keeps the first n bytes written to it and takes the rest unread.
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
