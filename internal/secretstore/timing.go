package secretstore

import (
	"time"

	"golang.org/x/sys/unix"
)

// The boot's own account of where its time went: Run logs one line at its
// end ("boot timing") with each phase's duration in milliseconds, the phases
// being the points where it already tells systemd what it does (setStatus),
// and the CLOCK_MONOTONIC reading of its end, which systemd's unit
// timestamps (…TimestampMonotonic) and the journal share, so that the
// benchmarks place it on the same clock as the units. It names no secret.

// Phases of Run, in order, as the timing line names them. A phase that did
// not happen in this run (init and seal on a warm boot) is not logged.
const (
	PhaseWaitServer   = "wait_server_ms"   // until the server answers on the admin socket, its release checked
	PhaseInit         = "init_ms"          // first boot: the server's init, made durable
	PhaseSealKey      = "seal_key_ms"      // first boot: the unseal key sealed, checked, written
	PhaseUnsealKey    = "unseal_key_ms"    // every other boot: the unseal key unsealed by the sealer
	PhaseTCPRestart   = "tcp_restart_ms"   // first boot: the server restarted with its TCP listener
	PhaseUnsealServer = "unseal_server_ms" // the server unsealed with the key
	PhaseAdminToken   = "admin_token_ms"   // the admin token opened and looked up
	PhaseSetup        = "setup_ms"         // secrets engine, policies, token roles
	PhaseRevoke       = "revoke_ms"        // the previous boot's tokens revoked
	PhaseTokens       = "tokens_ms"        // this boot's token-issuing and supervisor tokens
)

// Lap is a phase the caller of Run timed itself, for the timing line.
type Lap struct {
	Phase string // as the line names it: "identify_ms"
	Took  time.Duration
}

// bootClock times the phases of one Run.
type bootClock struct {
	start, last time.Time
	attrs       []any
}

func newBootClock() *bootClock {
	now := time.Now()
	return &bootClock{start: now, last: now}
}

// lap ends phase now: its time is from the end of the previous one.
func (c *bootClock) lap(phase string) {
	if c == nil {
		return
	}
	now := time.Now()
	c.attrs = append(c.attrs, phase, millis(now.Sub(c.last)))
	c.last = now
}

// line is the timing line's attributes: the phases, the total and the
// monotonic clock now.
func (c *bootClock) line(extra ...any) []any {
	out := append([]any{}, c.attrs...)
	out = append(out, extra...)
	return append(out, "total_ms", millis(time.Since(c.start)), "mono_us", MonotonicMicros())
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// MonotonicMicros is CLOCK_MONOTONIC in microseconds: the clock of systemd's
// …TimestampMonotonic properties and of the journal's monotonic stamps.
func MonotonicMicros() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1000
}
