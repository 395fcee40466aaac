package tokend

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
	"github.com/edgeseal/edgeseal/tokenclient"
)

// The token provider's core, matching and refusing, in seconds and without
// root, a container or systemd: the caller is a socket peer of this test
// process, its identity a fake (asCaller) that says which unit it runs in,
// and the server an httptest stand-in that records each token-create.

// asCaller resolves every caller to this identity, keeping its real pid.
type asCaller struct{ unit string }

func (a asCaller) Resolve(_ context.Context, p *peer.Peer) (peer.Identity, error) {
	return peer.Identity{PID: p.PID, UID: p.UID, GID: p.GID, Unit: a.unit}, nil
}

// creates records the token-creates the stand-in server was asked for.
type creates struct {
	mu  sync.Mutex
	got []api.TokenCreateRequest
}

func (c *creates) list() []api.TokenCreateRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func recordingVault(t *testing.T) (*api.Client, *creates) {
	rec := &creates{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/auth/token/create/"+vaultlayout.ServiceRole {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var req api.TokenCreateRequest
		json.Unmarshal(body, &req)
		rec.mu.Lock()
		n := len(rec.got)
		rec.got = append(rec.got, req)
		rec.mu.Unlock()
		fmt.Fprintf(w, `{"auth":{"client_token":"tok-%d","accessor":"acc-%d","policies":%q}}`, n, n, req.Policies)
	}))
	t.Cleanup(srv.Close)
	return clientOf(t, srv.URL), rec
}

// matchingServer is a provider with services, seeing every caller as unit.
func matchingServer(t *testing.T, unit string, services ...config.Service) (*testServer, *creates, string) {
	return matchingServerWith(t, func(s *Server) { s.Resolver = asCaller{unit: unit} }, services...)
}

// matchingServerWith is a provider with services and a ledger, edited by edit
// before it serves (its Resolver, what it may ask).
func matchingServerWith(t *testing.T, edit func(*Server), services ...config.Service) (*testServer, *creates, string) {
	vault, rec := recordingVault(t)
	ledgerPath := filepath.Join(t.TempDir(), "issued.json")
	ts := startServer(t, func(s *Server) {
		s.Vault = vault
		s.Config.Services = services
		led, err := ledger.Open(ledgerPath, "boot-1", fsutil.Self)
		if err != nil {
			t.Fatal(err)
		}
		s.Ledger = led
		edit(s)
	}, nil)
	return ts, rec, ledgerPath
}

func ask(t *testing.T, ts *testServer, line string) tokenclient.Response {
	t.Helper()
	r, err := exchange(ts.dial(t), line)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestACallerGetsTheTokenOfTheServiceItsUnitNames(t *testing.T) {
	// Given two services told apart by their units, and a caller in app.service
	ts, rec, ledgerPath := matchingServer(t, "app.service",
		config.Service{Name: "app", Units: []string{"app.service"}},
		config.Service{Name: "other", Units: []string{"other.service"}})
	// When it asks for its token
	r := ask(t, ts, "{\"v\":1}\n")
	// Then it gets app's, made with app's policy and naming the caller
	if r.Status != tokenclient.StatusOK || r.Service != "app" || !strings.Contains(r.Identity, "app.service") {
		t.Fatalf("answer %+v; want app's token", r)
	}
	got := rec.list()
	if len(got) != 1 || !slices.Equal(got[0].Policies, []string{vaultlayout.ServicePolicyPrefix + "app"}) ||
		got[0].Metadata["edgeseal_service"] != "app" || got[0].Metadata["unit"] != "app.service" {
		t.Fatalf("the server was asked %+v", got)
	}
	// And the ledger says which token (by accessor, never the token) went to it
	ts.stop()
	data, err := os.ReadFile(ledgerPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ledger.Parse(data)
	if err != nil || f.Services["app"].Accessor != "acc-0" || strings.Contains(string(data), "tok-0") {
		t.Fatalf("ledger %+v, %v:\n%s", f, err, data)
	}
}

func TestAUnitRuleWinsOverAUIDRule(t *testing.T) {
	// Given one service for the caller's uid and another for its unit
	ts, rec, _ := matchingServer(t, "special.service",
		config.Service{Name: "by-uid", UIDs: []uint32{uint32(os.Getuid())}},
		config.Service{Name: "by-unit", Units: []string{"special.service"}})
	// Then the unit's service is the one it gets
	if r := ask(t, ts, "{\"v\":1}\n"); r.Status != tokenclient.StatusOK || r.Service != "by-unit" {
		t.Fatalf("answer %+v; want by-unit's token", r)
	}
	if got := rec.list(); len(got) != 1 || got[0].Metadata["edgeseal_service"] != "by-unit" {
		t.Fatalf("the server was asked %+v", got)
	}
}

func TestACallerNoServiceNamesIsRefusedAndTheServerIsNeverAsked(t *testing.T) {
	// Given services for other units and another uid
	ts, rec, _ := matchingServer(t, "intruder.service",
		config.Service{Name: "app", Units: []string{"app.service"}},
		config.Service{Name: "other", UIDs: []uint32{uint32(os.Getuid()) + 4242}})
	// When a caller none of them names asks
	r := ask(t, ts, "{\"v\":1}\n")
	// Then it is refused, told how it was seen, and no token was made
	if r.Status != tokenclient.StatusRefused || len(r.Token) != 0 || !strings.Contains(r.Identity, "intruder.service") {
		t.Fatalf("answer %+v; want refused", r)
	}
	if got := rec.list(); len(got) != 0 {
		t.Fatalf("the server was asked for a token for a refused caller: %+v", got)
	}
}

func TestACallerAskingForAnotherServicesTokenIsRefused(t *testing.T) {
	// Given a caller that is app
	ts, rec, _ := matchingServer(t, "app.service",
		config.Service{Name: "app", Units: []string{"app.service"}},
		config.Service{Name: "other", Units: []string{"other.service"}})
	// When it asks for other's token by name
	r := ask(t, ts, "{\"v\":1,\"service\":\"other\"}\n")
	// Then it is refused, and no token was made
	if r.Status != tokenclient.StatusRefused || len(r.Token) != 0 {
		t.Fatalf("answer %+v; want refused", r)
	}
	if got := rec.list(); len(got) != 0 {
		t.Fatalf("the server was asked %+v", got)
	}
	// And asking for its own by name works
	if r := ask(t, ts, "{\"v\":1,\"service\":\"app\"}\n"); r.Status != tokenclient.StatusOK || r.Service != "app" {
		t.Fatalf("its own by name: %+v", r)
	}
}
