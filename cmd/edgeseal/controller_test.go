package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/paths"
)

// enrolledRoot is a root whose device is enrolled (the enrolment fixture of
// internal/controller) with a client key.
func enrolledRoot(t *testing.T) (string, paths.Paths) {
	t.Helper()
	root := t.TempDir()
	p := paths.New(root)
	data, err := os.ReadFile("../../internal/controller/testdata/enrolment-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.Controller, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Enrolment, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.ClientKey, []byte("the old key"), 0o600); err != nil {
		t.Fatal(err)
	}
	return root, p
}

func TestControllerCommands(t *testing.T) {
	enrolled, _ := enrolledRoot(t)
	corrupt, cp := enrolledRoot(t)
	os.WriteFile(cp.Enrolment, []byte("{}"), 0o600)
	empty := t.TempDir()
	dir := t.TempDir()
	noTPM := filepath.Join(dir, "edgeseal.yaml")
	os.WriteFile(noTPM, []byte("seal:\n  tpm2:\n    device: /dev/nonexistent-tpm\n"), 0o644)
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("not read before the flags are checked"), 0o644)
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("abcdefghijklmnopqrstuvwxyz\n"), 0o600)
	blank := filepath.Join(dir, "blank")
	os.WriteFile(blank, []byte("\n\n"), 0o600)
	enrol := func(extra ...string) []string {
		return append([]string{"controller", "enrol", "--url", "https://127.0.0.1:1", "--ca", ca, "--token-file", tokenFile, "--config", noTPM}, extra...)
	}
	cases := []struct {
		name   string
		args   []string
		out    string // on stdout
		errOut string // on stderr
		err    string
		usage  bool
	}{
		{"no command is a usage error", []string{"controller"}, "", "Commands:", "needs a command", true},
		{"an unknown command is a usage error", []string{"controller", "frob"}, "", "", `unknown controller command "frob"`, true},
		{"--help prints the commands", []string{"controller", "--help"}, "enrol --url", "", "", false},
		{"enrol --help says what it does", []string{"controller", "enrol", "--help"}, "", "one-time token", "", false},
		{"status --help says not enrolled is no error", []string{"controller", "status", "--help"}, "", "not an error", "", false},
		{"attest --help says nothing is sent", []string{"controller", "attest", "--help"}, "", "does not\nsend the quote", "", false},
		{"a bad flag is named", []string{"controller", "status", "--colour"}, "", "", "-colour", true},
		{"an argument left over is named", []string{"controller", "status", "extra"}, "", "", `"extra"`, true},
		{"enrol without --url", []string{"controller", "enrol", "--ca", ca, "--token-file", tokenFile}, "", "", "--url is required", true},
		{"enrol without --ca", []string{"controller", "enrol", "--url", "https://x", "--token-file", tokenFile}, "", "", "--ca is required", true},
		{"enrol without --token-file", []string{"controller", "enrol", "--url", "https://x", "--ca", ca}, "", "", "--token-file is required", true},
		{"enrol with an empty token file", []string{"--root", empty, "controller", "enrol", "--url", "https://x", "--ca", ca, "--token-file", blank}, "", "", "holds no token", true},
		{"enrol with a missing CA file", []string{"controller", "enrol", "--url", "https://x", "--ca", filepath.Join(dir, "nope"), "--token-file", tokenFile}, "", "", "(--ca)", false},
		{"enrol over an enrolment", append([]string{"--root", enrolled}, enrol()...), "", "", "edgeseal controller enrol --force", false},
		{"status when not enrolled says so", []string{"--root", empty, "controller", "status"}, "not enrolled with a controller", "", "", false},
		{"status when not enrolled, as JSON", []string{"--root", empty, "controller", "status", "--json"}, `{"enrolled":false}`, "", "", false},
		{"status when enrolled", []string{"--root", enrolled, "controller", "status"}, "device id:           plant7-gw-01\ncontroller:          https://controller.example:8443\nenrolled at:         2026-05-01T10:00:00Z\nclient cert expires: 21", "", "", false},
		{"status of a corrupt enrolment is an error saying what to do", []string{"--root", corrupt, "controller", "status"}, "", "", "--force", false},
		{"attest when not enrolled", []string{"--root", empty, "controller", "attest", "--config", noTPM}, "", "", "not enrolled", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runCLI(t, tc.args...)
			if !strings.Contains(out, tc.out) {
				t.Errorf("stdout %q lacks %q", out, tc.out)
			}
			if !strings.Contains(errOut, tc.errOut) {
				t.Errorf("stderr %q lacks %q", errOut, tc.errOut)
			}
			if tc.err == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("err = %v, want it to mention %q", err, tc.err)
			}
			if errors.Is(err, errUsage) != tc.usage {
				t.Errorf("usage error = %v (%v), want %v", errors.Is(err, errUsage), err, tc.usage)
			}
		})
	}
}

func TestControllerStatusJSON(t *testing.T) {
	root, _ := enrolledRoot(t)
	out, _, err := runCLI(t, "--root", root, "controller", "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v["enrolled"] != true || v["device_id"] != "plant7-gw-01" || v["url"] != "https://controller.example:8443" ||
		v["enrolled_at"] != "2026-05-01T10:00:00Z" || v["client_cert_expires"] == nil {
		t.Errorf("status --json: %s", out)
	}
}

// enrol --force sets the old enrolment aside, and puts it back when the new
// one fails (here: no TPM), so a failed attempt does not unenrol the device.
func TestEnrolForceKeepsTheOldEnrolmentWhenItFails(t *testing.T) {
	root, p := enrolledRoot(t)
	before, _ := os.ReadFile(p.Enrolment)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgeseal.yaml")
	os.WriteFile(cfg, []byte("seal:\n  tpm2:\n    device: /dev/nonexistent-tpm\n"), 0o644)
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), 0o644)
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("abcdefghijklmnopqrstuvwxyz"), 0o600)
	_, _, err := runCLI(t, "--root", root, "controller", "enrol", "--force", "--url", "https://127.0.0.1:1", "--ca", ca, "--token-file", token, "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), "nonexistent-tpm") {
		t.Fatalf("err = %v; want the TPM named", err)
	}
	after, _ := os.ReadFile(p.Enrolment)
	key, _ := os.ReadFile(p.ClientKey)
	if string(before) != string(after) || string(key) != "the old key" {
		t.Errorf("the old enrolment was not put back: %d bytes, key %q", len(after), key)
	}
	if left, _ := filepath.Glob(filepath.Join(p.Controller, "*.replaced")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
