package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/refctl"
)

// mainEnv makes the test binary run main(), so tests see real exit statuses.
const mainEnv = "EDGESEAL_CONTROLLER_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// ctl runs one command line; it returns stdout, stderr and the error.
func ctl(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := ctl(t, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func initialised(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ctl")
	mustCtl(t, "init", "--dir", dir)
	return dir
}

func TestEveryCommandHasHelp(t *testing.T) {
	cmds := [][]string{{"--help"}, {"init"}, {"serve"}, {"device", "add"}, {"device", "list"}, {"device", "show"},
		{"device", "revoke"}, {"device", "restore"}, {"device", "approve"}, {"device", "expect"}, {"vault", "rotate"}}
	for _, c := range cmds {
		args := c
		if c[0] != "--help" {
			args = append(append([]string{}, c...), "--help")
		}
		out, _, err := ctl(t, args...)
		if err != nil {
			t.Errorf("%v: %v", args, err)
		}
		want := "Usage: edgeseal-controller " + strings.Join(c, " ")
		if c[0] == "--help" {
			want = "Usage: edgeseal-controller COMMAND"
		}
		if !strings.HasPrefix(out, want) || !strings.Contains(out, "--dir") {
			t.Errorf("%v: help does not start with %q or lacks --dir:\n%s", args, want, out)
		}
	}
}

func TestDeviceAddPrintsTheTokenAlone(t *testing.T) {
	dir := initialised(t)
	out := mustCtl(t, "device", "add", "edge-7", "--dir", dir, "--pcrs", "7,16", "--claim", "location=hall-3")
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}\n$`).MatchString(out) {
		t.Errorf("device add printed %q, want the token alone", out)
	}
	show := mustCtl(t, "device", "show", "--dir", dir, "edge-7")
	for _, want := range []string{"device:    edge-7", "enrolled:  no (its token is valid until", "pcrs:      7, 16", `location = "hall-3"`, "vaults:    none yet"} {
		if !strings.Contains(show, want) {
			t.Errorf("device show lacks %q:\n%s", want, show)
		}
	}
	var v refctl.DeviceView
	if err := json.Unmarshal([]byte(mustCtl(t, "device", "show", "edge-7", "--json", "--dir", dir)), &v); err != nil || v.Name != "edge-7" || len(v.PCRs) != 2 {
		t.Errorf("device show --json: %+v %v", v, err)
	}
	if list := mustCtl(t, "device", "list", "--dir", dir); !regexp.MustCompile(`(?m)^edge-7\s+token waiting\s+no\s+0\s+-$`).MatchString(list) {
		t.Errorf("device list:\n%s", list)
	}
	if out := mustCtl(t, "device", "add", "edge-7", "--reenrol", "--dir", dir); !regexp.MustCompile(`^[A-Za-z0-9_-]{43}\n$`).MatchString(out) {
		t.Errorf("device add --reenrol printed %q", out)
	}
}

func TestOperatorCommandsSayWhatTheyDid(t *testing.T) {
	dir := initialised(t)
	mustCtl(t, "device", "add", "edge-7", "--dir", dir)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"device", "revoke", "edge-7"}, "device edge-7 is reported stolen"},
		{[]string{"device", "restore", "edge-7"}, "device edge-7 is restored"},
		{[]string{"device", "expect", "edge-7", "--claim", "location=hall-4", "--claim", "site=b"}, "claims location, site expected"},
		{[]string{"device", "expect", "edge-7", "--clear-claims"}, "no claim expected"},
	}
	for _, tc := range cases {
		if out := mustCtl(t, append(tc.args, "--dir", dir)...); !strings.Contains(out, tc.want) {
			t.Errorf("%v: %q, want %q", tc.args, out, tc.want)
		}
	}
	if _, _, err := ctl(t, "device", "approve", "edge-7", "--dir", dir); err == nil || !strings.Contains(err.Error(), "no refused quote") {
		t.Errorf("approve with nothing refused: %v", err)
	}
	if _, _, err := ctl(t, "vault", "rotate", "edge-7", "alpha", "--dir", dir); !errors.Is(err, refctl.ErrUnknownVault) {
		t.Errorf("rotate an unknown vault: %v", err)
	}
}

func TestBadUsageNamesTheFlagOrArgument(t *testing.T) {
	dir := initialised(t)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"device"}, "device needs a subcommand"},
		{[]string{"device", "frob"}, `unknown command "device frob"`},
		{[]string{"device", "add", "--dir", dir}, "device add takes NAME; given nothing"},
		{[]string{"device", "add", "a", "b", "--dir", dir}, `given "a" "b"`},
		{[]string{"device", "add", "x", "--pcrs", "7,99", "--dir", dir}, `-pcrs: "99" is not a PCR index`},
		{[]string{"device", "add", "x", "--claim", "nope", "--dir", dir}, `-claim: "nope": want NAME=VALUE`},
		{[]string{"device", "add", "x", "--color", "--dir", dir}, "flag provided but not defined: -color"},
		{[]string{"device", "add", "x", "--reenrol", "--pcrs", "7", "--dir", dir}, "--reenrol keeps"},
		{[]string{"device", "expect", "x", "--dir", dir}, "--claim K=V (one or more) or --clear-claims"},
		{[]string{"device", "list", "extra", "--dir", dir}, "device list takes no argument"},
		{[]string{"serve", "--rotate-every", "soon", "--dir", dir}, "-rotate-every"},
		{[]string{"init", "--host", ",", "--dir", dir}, "--host: no host given"},
	}
	for _, tc := range cases {
		_, _, err := ctl(t, tc.args...)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want a usage error saying %q", tc.args, err, tc.want)
		}
	}
	// Bad input caught by the controller is usage too (exit status 2).
	if _, _, err := ctl(t, "device", "add", "Bad_Name", "--dir", dir); !errors.Is(err, refctl.ErrInvalid) || !strings.Contains(err.Error(), `device name "Bad_Name"`) {
		t.Errorf("a bad device name: %v", err)
	}
}

func TestExitStatus(t *testing.T) {
	dir := initialised(t)
	cases := []struct {
		args   []string
		status int
		stderr string
	}{
		{[]string{"--help"}, 0, ""},
		{[]string{"device", "add", "Bad", "--dir", dir}, 2, "edgeseal-controller: cannot add device: invalid input"},
		{[]string{"device", "show", "--dir", dir}, 2, "bad usage"},
		{[]string{"device", "show", "nosuch", "--dir", dir}, 1, "edgeseal-controller: cannot show device nosuch: no such device"},
		{[]string{"init", "--dir", dir}, 1, "already initialised"},
	}
	for _, tc := range cases {
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		status := 0
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if status != tc.status || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, status, stderr.String(), tc.status, tc.stderr)
		}
	}
}

// syncBuffer is serve's stderr, read while it writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServeListensAndStopsWhenCancelled(t *testing.T) {
	dir := initialised(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dir", dir, "--listen", "127.0.0.1:0"}, &bytes.Buffer{}, &stderr)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(stderr.String(), "listening on 127.0.0.1:") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("serve did not say it listens: %q", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, _, err := ctl(t, "serve", "--dir", t.TempDir(), "--listen", "127.0.0.1:0"); !errors.Is(err, refctl.ErrNotInitialised) {
		t.Errorf("serve with no controller: %v", err)
	}
}
