// Package vaultbin tells which Vault-compatible server a binary is (OpenBao or
// HashiCorp Vault) and whether edgeseal supports its version, so that the boot
// chain refuses an unknown server before it writes a config for it or
// initialises anything with it.
//
// Both servers speak the same HTTP API, but their server configs differ (OpenBao
// has listener options Vault does not know) and each release may change a
// default edgeseal relies on, so edgeseal runs only the releases it is tested
// with. A binary says what it is in the first line of `BIN version`:
//
//	OpenBao v2.4.1 (efb9efa12f550e8322f3cec040862355e966f565), built 2025-...
//	Vault v1.21.0 ('...'), built 2025-...
package vaultbin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Kind is a Vault-compatible server.
type Kind string

const (
	OpenBao Kind = "openbao"
	Vault   Kind = "vault"
)

// ErrUnsupported is returned for a binary that is not a supported release of
// OpenBao or HashiCorp Vault.
var ErrUnsupported = errors.New("unsupported secret store server")

// Series is a release series edgeseal supports: Major.Minor.x.
type Series struct {
	Kind         Kind
	Major, Minor int
}

// Supported are the release series edgeseal is tested with (`make test` runs
// its boot stories on one release of each). OpenBao first: it is the server the
// snap ships and the default of `make install`.
var Supported = []Series{
	{OpenBao, 2, 4},
	{Vault, 1, 21},
}

func (s Series) String() string {
	return fmt.Sprintf("%s %d.%d.x", s.Kind.Name(), s.Major, s.Minor)
}

// Name is the product's name as its binary prints it.
func (k Kind) Name() string {
	switch k {
	case OpenBao:
		return "OpenBao"
	case Vault:
		return "Vault"
	}
	return string(k)
}

// Info is what a binary said it is.
type Info struct {
	Kind    Kind
	Version string // without the "v": "2.4.1"
	Major   int
	Minor   int
	Patch   int
}

func (i Info) String() string { return i.Kind.Name() + " v" + i.Version }

// SupportedList is the supported series for a message: "OpenBao 2.4.x, Vault 1.21.x".
func SupportedList() string {
	var s []string
	for _, r := range Supported {
		s = append(s, r.String())
	}
	return strings.Join(s, ", ")
}

// maxVersionOutput bounds what is read of `BIN version`: its first line is a few
// dozen bytes.
const maxVersionOutput = 4096

// versionTimeout bounds `BIN version`. A Go binary of some hundred megabytes
// starts in well under a second on a device, but it took 7 s from a cold page
// cache in an emulated VM (qemu without KVM), and more than 10 s there while
// snapd started beside it.
const versionTimeout = 60 * time.Second

// ErrNoAnswer is returned when `BIN version` did not finish within its time
// (or ctx ended): the machine is slow or busy, which a later try may cure.
var ErrNoAnswer = errors.New("the server binary did not answer in time")

// Identify runs `bin version` and checks what it prints against Supported. The
// error names bin, what it said and the supported releases. It wraps
// ErrUnsupported when bin cannot be run, fails, or is not a supported server
// (nothing a retry cures), and ErrNoAnswer when it did not answer in time.
func Identify(ctx context.Context, bin string) (Info, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "version")
	// A clean environment: nothing of the caller's (VAULT_ADDR, tokens) reaches
	// it. A HOME, so that it does not look its user up (both servers run
	// `getent passwd` without one); TZ=UTC, so that it reads no zone file. Then
	// it reads nothing but its own binary and what the Go runtime reads.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "HOME=/nonexistent", "TZ=UTC"}
	out := &limitedBuffer{max: maxVersionOutput}
	cmd.Stdout = out
	cmd.Stderr = out
	// Once it is killed, do not wait for children that keep its output open.
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return Info{}, fmt.Errorf("cannot identify the secret store server %s: %w (%s)", bin, ErrNoAnswer, ctx.Err())
		}
		return Info{}, fmt.Errorf("cannot identify the secret store server %s: %w: `%s version` failed: %w%s", bin, ErrUnsupported, bin, err, quoteOutput(out.Bytes()))
	}
	info, err := Parse(out.Bytes())
	if err != nil {
		return Info{}, fmt.Errorf("secret store server %s: %w", bin, err)
	}
	if err := info.Check(); err != nil {
		return info, fmt.Errorf("secret store server %s: %w", bin, err)
	}
	return info, nil
}

// Check returns an error wrapping ErrUnsupported unless i is of a supported
// series.
func (i Info) Check() error {
	for _, s := range Supported {
		if s.Kind == i.Kind && s.Major == i.Major && s.Minor == i.Minor {
			return nil
		}
	}
	return fmt.Errorf("%w: it is %s; edgeseal supports %s", ErrUnsupported, i, SupportedList())
}

// Parse reads the first line of `BIN version`. It wraps ErrUnsupported for a
// line that names neither OpenBao nor Vault, or no version of the form vX.Y.Z.
func Parse(out []byte) (Info, error) {
	line, _, _ := bytes.Cut(out, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 2 {
		return Info{}, fmt.Errorf("%w: `version` printed %s, which names neither OpenBao nor Vault; edgeseal supports %s", ErrUnsupported, quote(line), SupportedList())
	}
	var kind Kind
	switch fields[0] {
	case "OpenBao":
		kind = OpenBao
	case "Vault":
		kind = Vault
	default:
		return Info{}, fmt.Errorf("%w: `version` printed %s, which names neither OpenBao nor Vault; edgeseal supports %s", ErrUnsupported, quote(line), SupportedList())
	}
	v := strings.TrimSuffix(fields[1], ",")
	info, ok := parseVersion(v)
	if !ok {
		return Info{}, fmt.Errorf("%w: `version` printed %s: %q is not a version vX.Y.Z; edgeseal supports %s", ErrUnsupported, quote(line), v, SupportedList())
	}
	info.Kind = kind
	return info, nil
}

// Running reads the version a running server reports (sys/seal-status:
// "2.4.1"), as a release of i's kind, and checks that it is supported: the
// server edgeseal talks to may have been started from another binary than the
// one now on disk. Same tells whether it is the release i names.
func (i Info) Running(reported string) (r Info, same bool, err error) {
	r, ok := parseVersion("v" + strings.TrimPrefix(reported, "v"))
	if !ok {
		return Info{}, false, fmt.Errorf("%w: the running server reports version %q, not a version X.Y.Z; edgeseal supports %s", ErrUnsupported, reported, SupportedList())
	}
	r.Kind = i.Kind
	if err := r.Check(); err != nil {
		return r, false, fmt.Errorf("the running server: %w", err)
	}
	return r, r.Version == i.Version, nil
}

// parseVersion reads "vX.Y.Z" with an optional "-suffix" or "+metadata",
// keeping it in Version.
func parseVersion(v string) (Info, bool) {
	if !strings.HasPrefix(v, "v") || len(v) > 64 {
		return Info{}, false
	}
	full := v[1:]
	core, _, _ := strings.Cut(full, "+")
	core, _, _ = strings.Cut(core, "-")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return Info{}, false
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 || x > 9999 || p != strconv.Itoa(x) {
			return Info{}, false
		}
		n[i] = x
	}
	return Info{Version: full, Major: n[0], Minor: n[1], Patch: n[2]}, true
}

func quote(b []byte) string {
	const max = 120
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}

func quoteOutput(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return ""
	}
	return ": " + quote(b)
}

// limitedBuffer keeps the first max bytes written and discards the rest, so a
// binary that prints without end cannot grow the caller's memory.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}

func (l *limitedBuffer) Bytes() []byte { return l.buf.Bytes() }
