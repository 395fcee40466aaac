package tokend

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/hashicorp/vault/api"
)

// Issue 15, finding 10: a replaced token whose revocation Vault refuses at the
// moment the provider sends it stays pending in the ledger, and is revoked by
// the next try, not forgotten.
func TestARevocationVaultRefusesStaysPendingUntilATryThatWorks(t *testing.T) {
	// Given a Vault that answers 503 to revocations until told otherwise
	var up atomic.Bool
	var revokes atomic.Int64
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/auth/token/revoke-accessor" {
			http.Error(w, `{"errors":["unexpected request"]}`, http.StatusNotFound)
			return
		}
		revokes.Add(1)
		if !up.Load() {
			http.Error(w, `{"errors":["Vault is sealed"]}`, http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(vault.Close)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "issuing-token.json")
	if err := os.WriteFile(tokenFile, []byte(`{"auth":{"client_token":"issuing"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := api.DefaultConfig()
	cfg.Address = vault.URL
	cfg.MaxRetries = 0
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := newIssuer(client, tokenFile, 0)
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(filepath.Join(dir, "ledger.json"), "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	s := &Server{Ledger: led, Log: slog.New(slog.NewTextHandler(&log, nil)), issuing: iss}
	// and a service whose token was just replaced
	if _, _, err := led.Swap("app", ledger.Entry{Accessor: "old"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := led.Swap("app", ledger.Entry{Accessor: "new"}); err != nil {
		t.Fatal(err)
	}
	// When the provider revokes the replaced token and Vault refuses
	s.revoke(context.Background(), "app", "old", "a new token was issued to the service")
	// Then it is still pending, and the journal says it is tried again
	if p := led.PendingRevocations(); len(p) != 1 || p[0].Accessor != "old" {
		t.Fatalf("pending after a refused revocation: %+v, want old", p)
	}
	if !strings.Contains(log.String(), "cannot revoke a service token yet") {
		t.Errorf("no journal line about the refused revocation:\n%s", log.String())
	}
	// When Vault answers again and the provider tries the pending ones
	up.Store(true)
	s.revokePending(context.Background())
	// Then it is revoked and no longer pending
	if p := led.PendingRevocations(); len(p) != 0 {
		t.Fatalf("pending after a revocation that worked: %+v", p)
	}
	if n := revokes.Load(); n != 2 {
		t.Errorf("Vault got %d revocations, want 2", n)
	}
}
