package tokend

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/ledger"
)

// Replaced tokens are revoked off the request path. A delivery records, in the
// ledger, the service's previous token as pending and wakes the revoker, which
// waits until no request has been served for revokeQuiet, or until the oldest
// pending token was replaced tokens.revoke_delay ago, whichever comes first,
// and then revokes every pending token, revokeWorkers at a time (one at a time
// while requests are being served, so that revocations, which cost the server
// more than creations, take little of it from them), recording them revoked
// in one ledger write. So a replaced token stays valid at most
// tokens.revoke_delay, plus the time the batch takes, while Vault answers;
// a delivery does not wait for a revocation, nor share the server with one
// while requests keep coming (revoking costs Vault more than creating).
//
// A revocation Vault refuses (sealed, restarting) stays pending in the ledger:
// the revoker tries again after pendingRetry, and a provider started later
// tries at its start, as edgeseal-unseal does at the next boot.
const (
	revokeQuiet   = 50 * time.Millisecond
	revokeWorkers = 4
	// revokeTimeout bounds one revocation.
	revokeTimeout = 10 * time.Second
	// finalDrain bounds the revocations tried when the provider stops.
	finalDrain = 10 * time.Second
)

// pendingRetry is how long the revoker waits, after Vault refused a
// revocation, before it tries the pending ones again.
const pendingRetry = time.Minute

// revoker is the one goroutine that revokes replaced tokens.
type revoker struct {
	s     *Server
	delay time.Duration // tokens.revoke_delay
	// busy says whether a request is being served, and since when none is.
	busy  func() (serving bool, idleSince time.Time)
	kick  chan struct{}
	retry time.Time // after a refusal: no try before this, unless the provider stops
}

func newRevoker(s *Server, delay time.Duration, busy func() (bool, time.Time)) *revoker {
	return &revoker{s: s, delay: delay, busy: busy, kick: make(chan struct{}, 1)}
}

// wake tells the revoker that a token was replaced; it never blocks. A nil
// revoker (a Server that was never served: tests of issue alone) ignores it.
func (r *revoker) wake() {
	if r == nil {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run revokes replaced tokens until ctx ends, then tries once more those
// still pending (within finalDrain), so that an idle exit leaves none behind
// while Vault answers.
func (r *revoker) run(ctx context.Context) {
	if r.s.Ledger == nil { // a server that issues nothing (tests of its connections)
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalDrain)
		defer cancel()
		r.s.revokePending(dctx, revokeWorkers)
	}()
	// Those a provider before this one left pending (long due).
	r.wake()
	tick := time.NewTicker(pendingRetry)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-tick.C:
		}
		if !r.waitForTurn(ctx) {
			return
		}
		r.batch(ctx)
	}
}

// waitForTurn waits until the provider is quiet or the oldest pending token
// has waited tokens.revoke_delay; false if ctx ended first.
func (r *revoker) waitForTurn(ctx context.Context) bool {
	for {
		pending := r.s.Ledger.PendingRevocations()
		if len(pending) == 0 {
			return true
		}
		now := time.Now()
		due := pending[0].Since.Add(r.delay)
		if !r.retry.IsZero() && now.Before(r.retry) {
			due = r.retry
		} else {
			if !now.Before(due) {
				return true
			}
			if serving, since := r.busy(); !serving && now.Sub(since) >= revokeQuiet {
				return true
			}
		}
		wait := min(time.Until(due), revokeQuiet)
		t := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// batch revokes the pending tokens.
func (r *revoker) batch(ctx context.Context) {
	workers := revokeWorkers
	if serving, _ := r.busy(); serving {
		workers = 1
	}
	if r.s.revokePending(ctx, workers) {
		r.retry = time.Time{}
	} else {
		r.retry = time.Now().Add(pendingRetry)
	}
}

// revokePending revokes every token pending in the ledger, workers at a time,
// and records the ones done in one ledger write. It stops at the first
// revocation Vault refuses (it would refuse the others too), logs it once,
// and returns false; those not done stay pending.
func (s *Server) revokePending(ctx context.Context, workers int) bool {
	if s.Ledger == nil { // a server that issues nothing (tests of its connections)
		return true
	}
	pending := s.Ledger.PendingRevocations()
	if len(pending) == 0 {
		return true
	}
	work := make(chan ledger.Pending)
	var (
		mu      sync.Mutex
		done    []string
		refused error
		wg      sync.WaitGroup
	)
	plain, _ := s.issuing.clients()
	for range min(workers, len(pending)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				rctx, cancel := context.WithTimeout(ctx, revokeTimeout)
				err := plain.Auth().Token().RevokeAccessorWithContext(rctx, p.Accessor)
				cancel()
				mu.Lock()
				if err == nil || isGone(err) {
					done = append(done, p.Accessor)
				} else if refused == nil {
					refused = err
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, p := range pending {
		mu.Lock()
		stop := refused != nil
		mu.Unlock()
		if stop {
			break
		}
		select {
		case work <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if len(done) > 0 {
		if err := s.Ledger.Revoked(done...); err != nil {
			s.Log.Warn("cannot record revocations in the ledger; they are tried again", "tokens", len(done), "error", err)
		}
		s.Log.Info("revoked replaced service tokens", "tokens", len(done), "oldest_replaced", pending[0].Since.Format(time.RFC3339Nano))
	}
	if refused != nil || len(done) < len(pending) {
		if refused == nil {
			refused = ctx.Err()
		}
		s.Log.Warn("cannot revoke replaced service tokens yet; they stay pending in the ledger and are tried again within a minute while the provider runs, and at its next start",
			"pending", len(pending)-len(done), "error", refused)
		return false
	}
	return true
}

// revokeNow revokes one token at once: one that was issued but could not be
// recorded, and so must not outlive the request.
func (s *Server) revokeNow(ctx context.Context, service, accessor, why string) {
	rctx, cancel := context.WithTimeout(ctx, revokeTimeout)
	defer cancel()
	plain, _ := s.issuing.clients()
	if err := plain.Auth().Token().RevokeAccessorWithContext(rctx, accessor); err != nil && !isGone(err) {
		s.Log.Error("cannot revoke a service token that could not be recorded; it expires one period after its holder stops renewing it",
			"service", service, "accessor", accessor, "error", err)
		return
	}
	s.Log.Info("revoked a service token", "service", service, "accessor", accessor, "why", why)
}

// isGone: the token was already revoked or expired.
func isGone(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "invalid accessor")
}
