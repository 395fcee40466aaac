package tokend

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/tokenclient"
)

// byUID resolves every caller to its uid, which the config names.
type byUID struct{}

func (byUID) Resolve(_ context.Context, p *peer.Peer) (peer.Identity, error) {
	return peer.Identity{PID: p.PID, UID: p.UID, GID: p.GID}, nil
}

// slowVault answers token-create after each request's wait (taken from
// delays in order), with a token of a new accessor.
func slowVault(t *testing.T, delays ...time.Duration) *api.Client {
	var n atomic.Int64
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/auth/token/create/"+"edgeseal-service" {
			w.WriteHeader(http.StatusNoContent) // revocations, lookups
			return
		}
		i := n.Add(1) - 1
		if int(i) < len(delays) {
			time.Sleep(delays[i])
		}
		fmt.Fprintf(w, `{"auth":{"client_token":"tok-%d","accessor":"acc-%d","policies":["edgeseal-svc-app"]}}`, i, i)
	}))
	t.Cleanup(vault.Close)
	return clientOf(t, vault.URL)
}

// clientOf is a server client of a stand-in at url, without retries.
func clientOf(t *testing.T, url string) *api.Client {
	t.Helper()
	vc := api.DefaultConfig()
	vc.Address = url
	vc.MaxRetries = 0
	c, err := api.NewClient(vc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startIssuingServer is a provider that gives the caller's uid the token of
// service "app", with one in-flight slot, against vault.
func startIssuingServer(t *testing.T, vault *api.Client, edit func(*Server)) *testServer {
	return startServer(t, func(s *Server) {
		s.Vault = vault
		s.Resolver = byUID{}
		s.Config.Services = []config.Service{{Name: "app", UIDs: []uint32{uint32(os.Getuid())}}}
		s.Config.Tokend.MaxInFlight = 1
		led, err := ledger.Open(filepath.Join(t.TempDir(), "issued.json"), "boot-1", fsutil.Self)
		if err != nil {
			t.Fatal(err)
		}
		s.Ledger = led
		if edit != nil {
			edit(s)
		}
	}, nil)
}

// sendAsync sends a request on a new connection and returns where its answer
// (or the error of reading it) arrives.
func sendAsync(t *testing.T, ts *testServer) <-chan tokenclient.Response {
	c := ts.dial(t)
	out := make(chan tokenclient.Response, 1)
	go func() {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r, err := exchange(c, "{\"v\":1}\n")
		if err != nil {
			r = tokenclient.Response{Status: "no answer", Error: err.Error()}
		}
		out <- r
	}()
	return out
}

// Issue 18: in a burst, a request queued behind others for longer than
// tokend.request_timeout still gets its token: the wait for a slot and the
// token-create are not the caller's stall. Before, it was cut off mid-create
// and its caller read a closed connection.
func TestARequestQueuedPastTheRequestTimeoutStillGetsItsToken(t *testing.T) {
	// Given one slot, a request timeout of 300ms, and a Vault whose
	// token-creates take 200ms each
	ts := startIssuingServer(t, slowVault(t, 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond), func(s *Server) {
		s.Config.Tokend.RequestTimeout = config.Duration(300 * time.Millisecond)
	})
	// When three requests come at once
	var answers []<-chan tokenclient.Response
	for range 3 {
		answers = append(answers, sendAsync(t, ts))
		time.Sleep(20 * time.Millisecond)
	}
	// Then all three get their token, the third after waiting about 400ms
	// for its slot
	for i, ch := range answers {
		if r := <-ch; r.Status != tokenclient.StatusOK {
			t.Errorf("request %d: %+v; want ok\n%s", i+1, r, ts.log.String())
		}
	}
}

// Issue 18: a request whose budget runs out while it waits for a slot is
// told "overloaded" (try again), never left with a closed connection.
func TestARequestThatCannotGetASlotInTimeIsToldOverloaded(t *testing.T) {
	// Given one slot, a budget of 300ms a request, and token-creates of 150ms
	delays := make([]time.Duration, 6)
	for i := range delays {
		delays[i] = 150 * time.Millisecond
	}
	ts := startIssuingServer(t, slowVault(t, delays...), func(s *Server) {
		s.budget = 300 * time.Millisecond
	})
	// When six requests come at once
	var answers []<-chan tokenclient.Response
	for range 6 {
		answers = append(answers, sendAsync(t, ts))
		time.Sleep(10 * time.Millisecond)
	}
	// Then the first gets its token, the last ones are told overloaded, and
	// every one gets an answer
	overloaded := 0
	for i, ch := range answers {
		r := <-ch
		switch {
		case i == 0 && r.Status != tokenclient.StatusOK:
			t.Errorf("the first request: %+v; want ok", r)
		case r.Status == tokenclient.StatusOverloaded:
			overloaded++
		case r.Status != tokenclient.StatusOK && r.Status != tokenclient.StatusError:
			t.Errorf("request %d: %+v; want an answer", i+1, r)
		}
	}
	if overloaded == 0 {
		t.Errorf("no request was told overloaded\n%s", ts.log.String())
	}
}
