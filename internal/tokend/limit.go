package tokend

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Connection limits. A connection holds a socket and a pidfd (two file
// descriptors), a goroutine and, while it is served, a Vault request: the cap of
// all callers keeps that below the unit's LimitNOFILE= (edgeseal-tokend.service
// has the arithmetic), and the cap of one uid keeps one local user from taking
// all of it. A connection over a cap is answered "overloaded" (the client's exit
// status 75: try again later) and closed at once, with no goroutine started.
const (
	maxConns       = 1024
	maxConnsPerUID = 256
)

// connGate counts the connections being served, in all and per uid.
type connGate struct {
	max, perUID int

	mu    sync.Mutex
	total int
	byUID map[uint32]int
}

func newConnGate(max, perUID int) *connGate {
	return &connGate{max: max, perUID: perUID, byUID: map[uint32]int{}}
}

// enter admits a connection of uid, or says why not (an ErrOverloaded). An
// admitted connection must leave.
func (g *connGate) enter(uid uint32) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total >= g.max {
		return fmt.Errorf("%w: %d connections open, the limit of all callers", ErrOverloaded, g.total)
	}
	if n := g.byUID[uid]; n >= g.perUID {
		return fmt.Errorf("%w: uid %d has %d connections open, the limit of one uid", ErrOverloaded, uid, n)
	}
	g.total++
	g.byUID[uid]++
	return nil
}

func (g *connGate) leave(uid uint32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.byUID[uid]--; g.byUID[uid] <= 0 {
		delete(g.byUID, uid)
	}
}

// Journal lines of refusals are limited per caller (its uid), so that a flood
// of refusals neither fills the journal nor trips journald's rate limit, which
// would drop every line of the provider, the audit of other callers with them:
// a caller may write refusalBurst lines at once and one more every refusalEvery;
// lines over that are counted, and each count is written in one line every
// suppressReport. A new caller always has its first lines written.
const (
	refusalBurst   = 20
	refusalEvery   = time.Second
	suppressReport = 10 * time.Second
	// maxLogKeys bounds the callers with a count of their own; more share one.
	maxLogKeys = 4096
)

// otherCallers is the key callers share once maxLogKeys have their own.
const otherCallers = "other callers"

// lineLimiter is a token bucket of journal lines per key.
type lineLimiter struct {
	burst   float64
	every   time.Duration
	maxKeys int

	mu   sync.Mutex
	keys map[string]*lineBucket
}

type lineBucket struct {
	tokens     float64
	last       time.Time
	suppressed int
	since      time.Time // of the first line suppressed since the last report
}

func newLineLimiter(burst int, every time.Duration, maxKeys int) *lineLimiter {
	return &lineLimiter{burst: float64(burst), every: every, maxKeys: maxKeys, keys: map[string]*lineBucket{}}
}

// allow reports whether a line of key may be written now; a line that may not
// is counted for the next report.
func (l *lineLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.keys[key]
	if b == nil && len(l.keys) >= l.maxKeys {
		key = otherCallers
		b = l.keys[key]
	}
	if b == nil {
		b = &lineBucket{tokens: l.burst, last: now}
		l.keys[key] = b
	}
	b.refill(l, now)
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	if b.suppressed == 0 {
		b.since = now
	}
	b.suppressed++
	return false
}

func (b *lineBucket) refill(l *lineLimiter, now time.Time) {
	if now.After(b.last) {
		b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.last))/float64(l.every))
		b.last = now
	}
}

// suppression is what a report says of one key.
type suppression struct {
	key   string
	lines int
	over  time.Duration // from the first suppressed line to the report
}

// report returns the counts of lines suppressed since the last report, by key,
// and forgets the keys that have their whole burst again.
func (l *lineLimiter) report(now time.Time) []suppression {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []suppression
	for key, b := range l.keys {
		if b.suppressed > 0 {
			out = append(out, suppression{key: key, lines: b.suppressed, over: now.Sub(b.since)})
			b.suppressed = 0
			continue
		}
		if b.refill(l, now); b.tokens >= l.burst {
			delete(l.keys, key)
		}
	}
	slices.SortFunc(out, func(a, b suppression) int { return strings.Compare(a.key, b.key) })
	return out
}

// uidKey is the key of a caller's lines.
func uidKey(uid uint32) string { return fmt.Sprintf("uid %d", uid) }
