package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/paths"
)

// A bad vault config, or bad use of the vault commands, is refused before
// anything is made: no metadata, no status file, no vault directory.
func TestVaultCommandsRefuseBadInputAndChangeNothing(t *testing.T) {
	root := t.TempDir()
	vaults := filepath.Join(root, "vaults")
	write := func(name, text string) string {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	head := "file_vaults:\n  dir: " + vaults + "\n  vaults:\n"
	entry := func(uuid, name, extra string) string {
		return "    - {schema: 1, uuid: " + uuid + ", name: " + name + extra + "}\n"
	}
	u1, u2 := "0f9c4a3e-2b7d-4e1a-9c55-3d2f8e6a1b70", "5b1c7d2e-8f3a-4c6b-a1d9-0e7f2c4b8a63"
	cases := []struct {
		name, args, config, want string
		usage                    bool
	}{
		{"duplicate names", "apply", head + entry(u1, "logs", "") + entry(u2, "logs", ""), `file_vaults.vaults[1].name: "logs" is already the name of file_vaults.vaults[0]`, false},
		{"duplicate uuids", "apply", head + entry(u1, "logs", "") + entry(u1, "cache", ""), "is already the UUID of file_vaults.vaults[0]", false},
		{"an unknown policy", "apply", head + entry(u1, "logs", ", policy: shred"), `file_vaults.vaults[0].policy: "shred" is not a vault policy`, false},
		{"a misspelt key", "apply", head + entry(u1, "logs", ", polcy: lock"), "file_vaults.vaults[0].polcy: unknown key", false},
		{"a vault on tmpfs", "apply", head + entry(u1, "logs", ", path: /run/logs"), "is under /run, which is not a disk filesystem", false},
		{"delete without --purge", "delete logs", head, "say so with --purge", true},
		{"unlock without a name", "unlock", head, "takes one vault name", true},
		{"an unknown vault command", "shred logs", head, `unknown vault command "shred"`, true},
		{"a misspelt flag after the vault name", "lock images --wiat 5s", head, "flag provided but not defined: -wiat", true},
		{"two vault names", "lock images logs --wait 5s", head, "takes one vault name", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := write("edgeseal.yaml", tc.config)
			args := append([]string{"--root", root, "vault"}, strings.Fields(tc.args)...)
			args = append(args[:3], append([]string{args[3], "--config", cfg}, args[4:]...)...)
			_, _, err := runCLI(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("edgeseal %s: %v; want %q", strings.Join(args, " "), err, tc.want)
			}
			if got := errors.Is(err, errUsage); got != tc.usage {
				t.Errorf("usage error = %v; want %v", got, tc.usage)
			}
			p := paths.New(root)
			for _, made := range []string{p.VaultMeta, p.VaultStatus, vaults} {
				if _, err := os.Stat(made); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s was made: %v", made, err)
				}
			}
		})
	}
}

// Flags may stand anywhere among the arguments, as systemctl and snap take
// them: `vault lock images --wait 5s` is `vault lock --wait 5s images`.
func TestVaultFlagsMayFollowTheVaultName(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(root, "edgeseal.yaml")
	if err := os.WriteFile(cfg, []byte("file_vaults:\n  dir: "+filepath.Join(root, "vaults")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// images is a default vault, not made yet: nothing to lock.
	out, _, err := runCLI(t, "--root", root, "vault", "lock", "images", "--wait", "5s", "--config", cfg)
	if err != nil || out != "vault images: nothing to do\n" {
		t.Fatalf("vault lock images --wait 5s --config ...: %q, %v", out, err)
	}
}
