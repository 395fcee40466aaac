package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pkistep"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
)

// mainEnv makes the test binary run main(), so tests see real exit statuses.
const mainEnv = "EDGESEAL_PKI_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// device is a root with a config file, as on a device.
func device(t *testing.T, cfg string) paths.Paths {
	t.Helper()
	// A short root: Vault's admin socket lies below it, and a socket's path
	// has at most 107 bytes (t.TempDir's names are long).
	root, err := os.MkdirTemp("", "es-pki-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	p := paths.New(root)
	if cfg != "" {
		os.MkdirAll(filepath.Dir(p.ConfigFile), 0o755)
		if err := os.WriteFile(p.ConfigFile, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestTheFlagsAreTheStepsOptions(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		stateDir string // $STATE_DIRECTORY
		want     pkistep.Options
	}{
		// No --vault-key-path: the step picks the credential's (or, in the snap, the key's).
		{"no flags: the root is /, the rest the step's defaults", nil, "",
			pkistep.Options{Root: "/"}},
		{"every flag", []string{"--root", "/r", "--config", "/c.yaml", "--server", "/usr/bin/bao", "--vault-key-path", "/k"}, "",
			pkistep.Options{Root: "/r", ConfigFile: "/c.yaml", Server: "/usr/bin/bao", VaultKeyPath: "/k"}},
		{"the unit's state directory keeps the server's answer", nil, "/var/lib/edgeseal-pki",
			pkistep.Options{Root: "/", StateDir: "/var/lib/edgeseal-pki"}},
		{"of several state directories, the first", nil, "/var/lib/a:/var/lib/b",
			pkistep.Options{Root: "/", StateDir: "/var/lib/a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("STATE_DIRECTORY", tc.stateDir)
			got, err := parseArgs(tc.args, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("parseArgs(%q) = %+v, want %+v", tc.args, got, tc.want)
			}
		})
	}
}

// The command as systemd runs it: exit status and stderr are what the journal
// and `systemctl status` show.
func TestTheCommandExitsWithAStatusThatSaysWhatToDo(t *testing.T) {
	notADir := t.TempDir()
	os.WriteFile(filepath.Join(notADir, "run"), nil, 0o644)
	os.MkdirAll(filepath.Join(notADir, "etc/edgeseal"), 0o755)
	os.WriteFile(filepath.Join(notADir, "etc/edgeseal/edgeseal.yaml"), nil, 0o644)
	good := device(t, "pki:\n  extra_names: [vault.local]\n")
	unsupported := filepath.Join(t.TempDir(), "bao")
	os.WriteFile(unsupported, []byte("#!/bin/sh\necho 'OpenBao v2.5.0 (x)'\n"), 0o755)

	cases := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"it succeeds and logs every step", []string{"--root", good.Root, "--vault-key-path", good.VaultKey}, 0,
			nil, []string{"level=INFO msg=\"issued this boot's CA", "wrote Vault's server config"}},
		{"--help says what it does and where files go", []string{"--help"}, 0,
			[]string{"every boot", "never written", "/run/edgeseal/pki/ca.crt", "/run/edgeseal/pki/vault.key", "/run/edgeseal/vault/vault.json", "--config FILE", vaultconf.CredentialKeyPath}, nil},
		{"an unknown flag is bad usage", []string{"--frobnicate"}, 2,
			nil, []string{"edgeseal-pki: flag provided but not defined: -frobnicate (see --help)"}},
		{"an argument is bad usage", []string{"extra"}, 2,
			nil, []string{`edgeseal-pki: unexpected argument "extra" (see --help)`}},
		{"a misspelt key names file, line and field", []string{"--root", device(t, "seal:\n  methd: none\n").Root}, 2,
			nil, []string{"edgeseal-pki: ", "/etc/edgeseal/edgeseal.yaml:2: seal.methd: unknown key"}},
		{"a missing config is named", []string{"--root", device(t, "").Root}, 2,
			nil, []string{"edgeseal-pki: cannot read config ", "/etc/edgeseal/edgeseal.yaml"}},
		{"an unsupported server is refused as a bad config is", []string{"--root", good.Root, "--server", unsupported}, 2,
			nil, []string{"edgeseal-pki: ", unsupported, "OpenBao 2.4.x, Vault 1.21.x"}},
		{"a /run it cannot write to is an error", []string{"--root", notADir}, 1,
			nil, []string{"edgeseal-pki: cannot create " + filepath.Join(notADir, "run/edgeseal/pki")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], tc.args...)
			cmd.Env = append(os.Environ(), mainEnv+"=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
			if tc.code != 0 {
				if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n") + 1; lines != 1 {
					t.Errorf("a failure takes %d lines of stderr, want 1:\n%s", lines, stderr.String())
				}
			}
			if strings.Contains(stdout.String()+stderr.String(), "PRIVATE KEY") {
				t.Error("a private key is in the output")
			}
		})
	}
}
