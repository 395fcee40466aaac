package secretstore

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"
)

// staleVault answers what revokeStale asks, with lookups of each accessor as
// lookup says (a status and the errors of Vault's JSON), and records the
// accessors revoked.
type staleVault struct {
	lookup  map[string]func(w http.ResponseWriter)
	mu      sync.Mutex
	revoked []string
}

func (v *staleVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	switch {
	case strings.HasPrefix(path, "sys/leases/revoke-prefix/"):
		w.WriteHeader(http.StatusNoContent)
	case path == "auth/token/lookup-self":
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"accessor": "mine", "policies": []string{"root"}}})
	case path == "auth/token/accessors" && (r.Method == "LIST" || r.URL.Query().Get("list") == "true"):
		keys := []any{"mine"}
		for acc := range v.lookup {
			keys = append(keys, acc)
		}
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"keys": keys}})
	case path == "auth/token/lookup-accessor":
		var body struct{ Accessor string }
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &body)
		v.lookup[body.Accessor](w)
	case path == "auth/token/revoke-accessor":
		var body struct{ Accessor string }
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &body)
		v.mu.Lock()
		v.revoked = append(v.revoked, body.Accessor)
		v.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, `{"errors":["unexpected request"]}`, http.StatusNotFound)
	}
}

func vaultError(status int, msg string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}})
	}
}

func tokenWith(policies ...string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"policies": policies}})
	}
}

func revokeStaleAgainst(t *testing.T, v *staleVault) error {
	t.Helper()
	srv := httptest.NewServer(v)
	t.Cleanup(srv.Close)
	cfg := api.DefaultConfig()
	cfg.Address = srv.URL
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("admin")
	b := &Bootstrap{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return b.revokeStale(context.Background(), c)
}

// Issue 15, finding 11: a token the setup cannot look up might be a root token
// left over by a crash; only one Vault says is gone ("invalid accessor") may be
// skipped.
func TestASetupThatCannotLookUpATokenFailsRatherThanSkipIt(t *testing.T) {
	// Given a Vault that fails the lookup of one accessor with a server error
	v := &staleVault{lookup: map[string]func(http.ResponseWriter){
		"broken": vaultError(http.StatusInternalServerError, "internal error"),
	}}
	// When the setup revokes the previous boot's tokens
	err := revokeStaleAgainst(t, v)
	// Then it fails, naming the accessor, and revokes nothing
	if err == nil || !strings.Contains(err.Error(), "cannot look up token accessor broken") {
		t.Fatalf("revokeStale with a failing lookup: %v, want an error naming the accessor", err)
	}
	if len(v.revoked) != 0 {
		t.Errorf("revoked %v", v.revoked)
	}
}

func TestASetupSkipsAGoneTokenAndRevokesEveryStrayRootToken(t *testing.T) {
	// Given a token gone between list and lookup, a stray root token and a
	// token of another policy
	v := &staleVault{lookup: map[string]func(http.ResponseWriter){
		"gone":  vaultError(http.StatusBadRequest, "invalid accessor"),
		"stray": tokenWith("root"),
		"app":   tokenWith("default", "app"),
	}}
	// When the setup revokes the previous boot's tokens
	if err := revokeStaleAgainst(t, v); err != nil {
		t.Fatalf("revokeStale: %v", err)
	}
	// Then only the root token is revoked, and not its own
	if len(v.revoked) != 1 || v.revoked[0] != "stray" {
		t.Errorf("revoked %v, want [stray]", v.revoked)
	}
}
