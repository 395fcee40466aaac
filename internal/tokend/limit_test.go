package tokend

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConnGateCapsEachUIDAndAllCallers(t *testing.T) {
	g := newConnGate(5, 3)
	for range 3 {
		if err := g.enter(1000); err != nil {
			t.Fatalf("uid 1000 within its cap: %v", err)
		}
	}
	// The fourth of uid 1000 is over its own cap, and says so.
	err := g.enter(1000)
	if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "uid 1000 has 3 connections open") {
		t.Fatalf("uid 1000 over its cap: %v, want ErrOverloaded naming the uid", err)
	}
	// Another uid still gets in, until all callers together reach theirs.
	for range 2 {
		if err := g.enter(1001); err != nil {
			t.Fatalf("uid 1001 while uid 1000 is at its cap: %v", err)
		}
	}
	if err := g.enter(1002); !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "limit of all callers") {
		t.Fatalf("a sixth connection: %v, want ErrOverloaded at the limit of all callers", err)
	}
	// A connection that ends makes room for its uid again.
	g.leave(1000)
	if err := g.enter(1000); err != nil {
		t.Fatalf("uid 1000 after one of its connections ended: %v", err)
	}
	for range 3 {
		g.leave(1000)
	}
	g.leave(1001)
	g.leave(1001)
	if g.total != 0 || len(g.byUID) != 0 {
		t.Errorf("after every connection left: total %d, by uid %v; want nothing", g.total, g.byUID)
	}
}

func TestLineLimiterLetsABurstThroughThenOneLinePerPeriod(t *testing.T) {
	l := newLineLimiter(3, time.Second, 10)
	t0 := time.Unix(1000, 0)
	allowed := 0
	for i := range 10 {
		if l.allow("uid 4242", t0.Add(time.Duration(i)*time.Millisecond)) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Errorf("10 lines at once: %d written, want the burst of 3", allowed)
	}
	// Another caller is not held back by the first one's flood.
	if !l.allow("uid 4243", t0) {
		t.Errorf("a new caller's first line was suppressed")
	}
	// One period later one more line of the flooder gets through.
	if !l.allow("uid 4242", t0.Add(1100*time.Millisecond)) {
		t.Errorf("no line of uid 4242 a period after its burst")
	}
	if l.allow("uid 4242", t0.Add(1200*time.Millisecond)) {
		t.Errorf("a second line of uid 4242 within the same period")
	}
	got := l.report(t0.Add(2 * time.Second))
	want := []suppression{{key: "uid 4242", lines: 8, over: 2*time.Second - 3*time.Millisecond}}
	if len(got) != 1 || got[0] != want[0] {
		t.Errorf("report: %+v, want %+v", got, want)
	}
	if got := l.report(t0.Add(3 * time.Second)); len(got) != 0 {
		t.Errorf("a second report with nothing suppressed since: %+v", got)
	}
}

func TestLineLimiterForgetsQuietCallersAndSharesABucketBeyondItsKeys(t *testing.T) {
	l := newLineLimiter(1, time.Second, 2)
	t0 := time.Unix(1000, 0)
	l.allow("uid 1", t0)
	l.allow("uid 2", t0)
	// A third caller shares the bucket of "other callers".
	if !l.allow("uid 3", t0) || l.allow("uid 4", t0) {
		t.Errorf("callers beyond the keys: want the first line of them written, the second suppressed")
	}
	if got := l.report(t0.Add(time.Second)); len(got) != 1 || got[0].key != otherCallers || got[0].lines != 1 {
		t.Errorf("report: %+v, want one suppressed line of %q", got, otherCallers)
	}
	// Callers whose bucket is full again are forgotten.
	l.report(t0.Add(time.Hour))
	if len(l.keys) != 0 {
		t.Errorf("keys after an hour of quiet: %v, want none", l.keys)
	}
}
