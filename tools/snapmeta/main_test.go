package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestTheRepositorysSnapcraftYAMLMakesASnapYAML(t *testing.T) {
	data, err := os.ReadFile("../../snap/snapcraft.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := snapYAML(data, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"socket-mode: 0666", "architectures: [amd64]", "install-mode: disable", "interface: content"} {
		if !strings.Contains(s, want) {
			t.Errorf("snap.yaml lacks %q", want)
		}
	}
	var meta map[string]any
	if err := yaml.Unmarshal(out, &meta); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"parts", "build-base"} {
		if _, ok := meta[k]; ok {
			t.Errorf("snap.yaml holds snapcraft's %s", k)
		}
	}
}

func TestAnUnknownTopLevelKeyIsRefusedWithItsLine(t *testing.T) {
	_, err := snapYAML([]byte("name: x\nversion: '1'\nsummary: s\nbase: bare\nconfinement: strict\ncolour: red\n"), "amd64")
	if err == nil || !strings.Contains(err.Error(), "line 6") || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("got %v", err)
	}
}

func TestAMissingExecutableStopsThePacking(t *testing.T) {
	prime := t.TempDir()
	meta := []byte("apps:\n  a:\n    command: bin/a --flag\n  b:\n    command: bin/b\nhooks:\n  configure: {}\n")
	os.MkdirAll(filepath.Join(prime, "bin"), 0o755)
	os.WriteFile(filepath.Join(prime, "bin", "a"), []byte("#!/bin/true\n"), 0o755)
	os.WriteFile(filepath.Join(prime, "bin", "b"), []byte("not executable"), 0o644)
	err := checkExecutables(meta, prime)
	if err == nil || !strings.Contains(err.Error(), "app b: bin/b") || !strings.Contains(err.Error(), "hook configure") || strings.Contains(err.Error(), "app a") {
		t.Fatalf("got %v", err)
	}
}
