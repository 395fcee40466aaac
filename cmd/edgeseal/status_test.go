package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/secretstore"
)

// A long reason (the unseal daemon's failure) goes below the status table,
// whole, so the table stays as narrow as its short cells.
func TestALongFailureIsPrintedBelowTheStatusTable(t *testing.T) {
	reason := "failed: cannot unseal the Vault unseal key from /var/lib/edgeseal/unseal-key.sealed: PCR values differ from the approved ones: PCR 7 (sha256)"
	var out bytes.Buffer
	printStatus(&out, &statusReport{Summary: "not ready: Vault is sealed", Vault: vaultReport{Addr: "https://127.0.0.1:8200"},
		Daemon: &secretstore.Status{Phase: reason}})
	for _, line := range strings.Split(out.String(), "\n") {
		if len(line) > 100 && line != "Unseal daemon: "+reason {
			t.Errorf("a wide line: %q", line)
		}
	}
	if !strings.Contains(out.String(), "Unseal daemon  failed (below)") || !strings.Contains(out.String(), "\nUnseal daemon: "+reason+"\n") {
		t.Errorf("status:\n%s", out.String())
	}
}

// The file vaults show as counts by state, from their status file.
func TestStatusCountsTheFileVaultsByState(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, &statusReport{Summary: "ready: Vault is unsealed", FileVaults: map[string]int{"unlocked": 2, "error": 1}})
	if !regexp.MustCompile(`(?m)^  File vaults +1 error, 2 unlocked +\(edgeseal vault list\)$`).MatchString(out.String()) {
		t.Errorf("status:\n%s", out.String())
	}
}
