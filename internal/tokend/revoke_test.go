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
	"time"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/hashicorp/vault/api"
)

// revokeBed is a provider's revoking part against a Vault (an httptest
// server) that answers revocations with 503 until up is set.
type revokeBed struct {
	s       *Server
	led     *ledger.Ledger
	up      atomic.Bool
	revokes atomic.Int64
	log     lockedBuffer
}

func newRevokeBed(t *testing.T) *revokeBed {
	rb := &revokeBed{}
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/auth/token/revoke-accessor" {
			http.Error(w, `{"errors":["unexpected request"]}`, http.StatusNotFound)
			return
		}
		rb.revokes.Add(1)
		if !rb.up.Load() {
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
	rb.led, err = ledger.Open(filepath.Join(dir, "ledger.json"), "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	rb.s = &Server{Ledger: rb.led, Log: slog.New(slog.NewTextHandler(&rb.log, nil)), issuing: iss}
	return rb
}

// replace issues service a token "<service>-old" and then "<service>-new".
func (rb *revokeBed) replace(t *testing.T, service string) {
	for _, acc := range []string{service + "-old", service + "-new"} {
		if _, _, err := rb.led.Swap(service, ledger.Entry{Accessor: acc, Issued: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}

// runRevoker runs a revoker with delay whose provider is busy as busy says,
// until the returned stop is called (which waits for its last drain).
func (rb *revokeBed) runRevoker(delay time.Duration, busy func() (bool, time.Time)) (r *revoker, stop func()) {
	r = newRevoker(rb.s, delay, busy)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
	return r, func() { cancel(); <-done }
}

// waitNoPending waits up to limit for the ledger to hold no pending token, and
// returns how long it took.
func (rb *revokeBed) waitNoPending(t *testing.T, limit time.Duration) time.Duration {
	t0 := time.Now()
	for len(rb.led.PendingRevocations()) > 0 {
		if time.Since(t0) > limit {
			t.Fatalf("still pending after %v: %+v\n%s", limit, rb.led.PendingRevocations(), rb.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(t0)
}

func always(serving bool) func() (bool, time.Time) {
	return func() (bool, time.Time) { return serving, time.Now().Add(-time.Hour) }
}

// Issue 15, finding 10: a replaced token whose revocation Vault refuses at the
// moment the provider sends it stays pending in the ledger, and is revoked by
// the next try, not forgotten.
func TestARevocationVaultRefusesStaysPendingUntilATryThatWorks(t *testing.T) {
	// Given a Vault that answers 503 to revocations until told otherwise,
	// and a service whose token was just replaced
	rb := newRevokeBed(t)
	rb.replace(t, "app")
	// When the provider revokes the replaced token and Vault refuses
	if rb.s.revokePending(context.Background(), revokeWorkers) {
		t.Fatal("revokePending says done although Vault refused")
	}
	// Then it is still pending, and the journal says it is tried again
	if p := rb.led.PendingRevocations(); len(p) != 1 || p[0].Accessor != "app-old" {
		t.Fatalf("pending after a refused revocation: %+v, want app-old", p)
	}
	if !strings.Contains(rb.log.String(), "cannot revoke replaced service tokens yet") {
		t.Errorf("no journal line about the refused revocation:\n%s", rb.log.String())
	}
	// When Vault answers again and the provider tries the pending ones
	rb.up.Store(true)
	if !rb.s.revokePending(context.Background(), revokeWorkers) {
		t.Fatalf("revokePending failed with Vault up:\n%s", rb.log.String())
	}
	// Then it is revoked and no longer pending
	if p := rb.led.PendingRevocations(); len(p) != 0 {
		t.Fatalf("pending after a revocation that worked: %+v", p)
	}
	if n := rb.revokes.Load(); n != 2 {
		t.Errorf("Vault got %d revocations, want 2", n)
	}
}

// Issue 18: a replaced token is revoked off the request path, as soon as no
// request is being served.
func TestAReplacedTokenIsRevokedOnceTheProviderIsQuiet(t *testing.T) {
	rb := newRevokeBed(t)
	rb.up.Store(true)
	r, stop := rb.runRevoker(time.Minute, always(false))
	defer stop()
	rb.replace(t, "app")
	r.wake()
	if took := rb.waitNoPending(t, 5*time.Second); took > time.Second {
		t.Errorf("revoked after %v with the provider quiet; want within about %v", took, revokeQuiet)
	}
}

// Issue 18: while requests keep coming, a replaced token still does not stay
// valid longer than tokens.revoke_delay (plus the revocation itself).
func TestAReplacedTokenIsRevokedWithinTheDelayWhileTheProviderIsBusy(t *testing.T) {
	rb := newRevokeBed(t)
	rb.up.Store(true)
	const delay = 300 * time.Millisecond
	r, stop := rb.runRevoker(delay, always(true))
	defer stop()
	t0 := time.Now()
	rb.replace(t, "app")
	r.wake()
	rb.waitNoPending(t, 5*time.Second)
	if took := time.Since(t0); took < delay || took > delay+2*time.Second {
		t.Errorf("revoked %v after the replacement with the provider busy; want just after %v", took, delay)
	}
}

// Issue 18: a provider that stops (idle exit, SIGTERM) revokes what is
// pending before it goes, without waiting for the delay.
func TestAStoppingProviderRevokesWhatIsPending(t *testing.T) {
	rb := newRevokeBed(t)
	rb.up.Store(true)
	r, stop := rb.runRevoker(time.Minute, always(true))
	rb.replace(t, "app")
	rb.replace(t, "db")
	r.wake()
	stop()
	if p := rb.led.PendingRevocations(); len(p) != 0 {
		t.Fatalf("pending after the provider stopped: %+v\n%s", p, rb.log.String())
	}
}

// Issue 18: with Vault refusing, the revoker does not hammer it on every
// delivery: after a refusal it waits pendingRetry, whatever wakes it.
func TestAfterARefusalTheRevokerWaitsBeforeTryingAgain(t *testing.T) {
	rb := newRevokeBed(t)
	r, stop := rb.runRevoker(0, always(false))
	defer stop()
	rb.replace(t, "app")
	r.wake()
	deadline := time.Now().Add(5 * time.Second)
	for rb.revokes.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for range 20 {
		rb.replace(t, "app")
		r.wake()
		time.Sleep(5 * time.Millisecond)
	}
	if n := rb.revokes.Load(); n != 1 {
		t.Errorf("Vault got %d revocations within a retry period after refusing the first, want 1", n)
	}
}
