package main

import (
	"bytes"
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
