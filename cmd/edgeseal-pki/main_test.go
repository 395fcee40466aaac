package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeseal/edgeseal/internal/paths"
)

func TestPKIStepWritesCertificatesAndVaultConfigUnderRoot(t *testing.T) {
	root := t.TempDir()
	p := paths.New(root)
	os.MkdirAll(filepath.Dir(p.ConfigFile), 0o755)
	os.WriteFile(p.ConfigFile, []byte("pki:\n  intermediate: true\n  extra_names: [vault.local]\n"), 0o644)
	if err := run([]string{"--root", root}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p.CACert, p.VaultCert, p.VaultKey, p.VaultConfig} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	var cfg map[string]any
	data, _ := os.ReadFile(p.VaultConfig)
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("Vault config is not JSON: %v", err)
	}
}

func TestPKIStepFailsOnABadConfig(t *testing.T) {
	root := t.TempDir()
	p := paths.New(root)
	os.MkdirAll(filepath.Dir(p.ConfigFile), 0o755)
	os.WriteFile(p.ConfigFile, []byte("pki:\n  validity: 1m\n"), 0o644)
	if err := run([]string{"--root", root}); err == nil {
		t.Fatal("a bad config was accepted")
	}
	if _, err := os.Stat(p.CACert); !os.IsNotExist(err) {
		t.Error("files were written despite a bad config")
	}
}
