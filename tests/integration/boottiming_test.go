//go:build integration

package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Where a boot's time went, read from inside the device: systemd's unit
// timestamps (CLOCK_MONOTONIC, in microseconds) and the timing lines that
// edgeseal-pki (its last line) and edgeseal-unseal ("boot timing", and each
// re-unseal's line) write to the journal, whose mono_us is the same clock.
// No figure here depends on the host's clock or on an nsenter round trip.

// unitTimes are a unit's timestamps on CLOCK_MONOTONIC, in microseconds (0:
// not reached in this boot).
type unitTimes struct {
	InactiveExit, ExecMainStart, ActiveEnter, ActiveExit int64
}

// unitTimestamps reads the timestamps of unit inside the device.
func (d *device) unitTimestamps(unit string) unitTimes {
	d.t.Helper()
	out := d.run("systemctl", "show", unit,
		"-p", "InactiveExitTimestampMonotonic,ExecMainStartTimestampMonotonic,ActiveEnterTimestampMonotonic,ActiveExitTimestampMonotonic")
	var u unitTimes
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			d.t.Fatalf("systemctl show %s: %q", unit, line)
		}
		switch k {
		case "InactiveExitTimestampMonotonic":
			u.InactiveExit = n
		case "ExecMainStartTimestampMonotonic":
			u.ExecMainStart = n
		case "ActiveEnterTimestampMonotonic":
			u.ActiveEnter = n
		case "ActiveExitTimestampMonotonic":
			u.ActiveExit = n
		}
	}
	return u
}

// spanMs is the time from a to b, both CLOCK_MONOTONIC microseconds, in ms.
func spanMs(a, b int64) float64 { return float64(b-a) / 1000 }

// logLine is one timing line's attributes (slog's key=value text).
type logLine map[string]string

// ms is the attribute key as milliseconds (0 if absent).
func (l logLine) ms(key string) float64 {
	v, _ := strconv.ParseFloat(l[key], 64)
	return v
}

// has tells whether the line has key.
func (l logLine) has(key string) bool { _, ok := l[key]; return ok }

// timingLine waits (briefly: journald may lag the unit) for the last line of
// unit's journal in this boot whose msg is msg and for which match holds,
// and returns its attributes.
func (d *device) timingLine(unit, msg string, match func(logLine) bool) logLine {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l := d.tryTimingLine(unit, msg, match); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no line %q in the journal of %s:\n%s", msg, unit, d.journal())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tryTimingLine is the last such line now, or nil.
func (d *device) tryTimingLine(unit, msg string, match func(logLine) bool) logLine {
	out, _, _ := d.m.Run(context.Background(), "journalctl", "--no-pager", "-b", "-o", "cat", "-u", unit)
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := parseLogLine(lines[i])
		if l["msg"] == msg && (match == nil || match(l)) {
			return l
		}
	}
	return nil
}

// parseLogLine splits one of slog's text lines: key=value, a value quoted
// when it has spaces or quotes.
func parseLogLine(s string) logLine {
	l := logLine{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		l[k] = v
		s = rest
	}
	return l
}

// breakdown is a table of named series, each row a part of one whole,
// printed as its median (least to most) with what it measures.
type breakdown struct {
	names []string
	rows  map[string]*series
	what  map[string]string
}

func newBreakdown() *breakdown {
	return &breakdown{rows: map[string]*series{}, what: map[string]string{}}
}

// add adds v (ms) to row name, measured as what says.
func (b *breakdown) add(name, what string, v float64) {
	s, ok := b.rows[name]
	if !ok {
		s = newSeries(name, "ms")
		b.rows[name] = s
		b.names = append(b.names, name)
		b.what[name] = what
	}
	s.Add(v)
}

// cell is a row's figure: "12.3 (11.0 to 14.2)".
func (b *breakdown) cell(name string) string {
	s := b.rows[name]
	if s == nil {
		return "-"
	}
	lo, med, hi := s.Stats()
	return fmt.Sprintf("%s (%s to %s)", num(med), num(lo), num(hi))
}

// print logs the breakdown as a table with N.
func (b *breakdown) print(tb *testing.B, title string) {
	var rows [][]string
	n := 0
	for _, name := range b.names {
		rows = append(rows, []string{name, b.cell(name), b.what[name]})
		n = max(n, len(b.rows[name].Vals()))
	}
	table(tb, fmt.Sprintf("%s (ms, median (least to most) of N=%d)", title, n), []string{"part", "ms", "measured from, to"}, rows)
}

// bootParts adds one boot's parts to bd: systemd's timestamps of the chain's
// units and the two timing lines. It returns edgeseal's own part: the chain
// less the server's own start.
func (d *device) bootParts(bd *breakdown, cold bool) float64 {
	d.t.Helper()
	pkiU := d.unitTimestamps("edgeseal-pki.service")
	vault := d.unitTimestamps("edgeseal-vault.service")
	unseal := d.unitTimestamps("edgeseal-unseal.service")
	target := d.unitTimestamps("edgeseal.target")
	pl := d.timingLine("edgeseal-pki.service", "wrote Vault's server config", nil)
	ul := d.timingLine("edgeseal-unseal.service", "boot timing", nil)
	// A failed attempt before the one the line times (runUntilReady tries
	// again in the same process) shows as process start: say it.
	if l := d.tryTimingLine("edgeseal-unseal.service", "cannot set Vault up yet; trying again", nil); l != nil {
		d.t.Logf("edgeseal-unseal tried again in this boot; the timing line is of its last attempt; the first failure: %s", l["error"])
	}

	chain := spanMs(pkiU.InactiveExit, target.ActiveEnter)
	serverOwn := spanMs(vault.ExecMainStart, vault.ActiveEnter)
	bd.add("chain", "edgeseal-pki's start to edgeseal.target active (systemd's timestamps)", chain)
	bd.add("pki", "edgeseal-pki's start to its exit", spanMs(pkiU.InactiveExit, pkiU.ActiveEnter))
	bd.add("  of which the server's version check", "`BIN version`, in edgeseal-pki (its timing line)", pl.ms("identify_ms"))
	bd.add("server start", "edgeseal-pki's exit to edgeseal-unseal's exec (the server started and ready, systemd's forks)", spanMs(pkiU.ActiveEnter, unseal.ExecMainStart))
	if cold {
		bd.add("  its first start, own", "the server's exec to its READY=1, admin socket only (from the journal)", d.firstServerStart())
	} else {
		bd.add("  of which the server's own", "edgeseal-vault's exec to its READY=1 (listener up)", serverOwn)
	}
	unsealTotal := spanMs(unseal.ExecMainStart, unseal.ActiveEnter)
	bd.add("unseal", "edgeseal-unseal's exec to its READY=1", unsealTotal)
	accounted := 0.0
	lineEnd, _ := strconv.ParseInt(ul["mono_us"], 10, 64)
	// main's start: the line's end less everything it accounts for.
	mainStart := lineEnd - int64((ul.ms("total_ms")+ul.ms("identify_ms")+ul.ms("prepare_ms"))*1000)
	if ul.has("prepare_ms") {
		bd.add("  process start", "edgeseal-unseal's exec to its main (loading, the Go runtime)", spanMs(unseal.ExecMainStart, mainStart))
	}
	for _, p := range []struct{ key, name, what string }{
		{"prepare_ms", "  prepare", "config, sealer, owner, boot id: main to the boot sequence, less the version check"},
		{"identify_ms", "  version check", "`BIN version`, again, in edgeseal-unseal (kept by the binary's stamp after the first boot)"},
		{"wait_server_ms", "  server answers", "init status and release over the admin socket"},
		{"init_ms", "  init", "first boot: the server's init, synced to disk"},
		{"seal_key_ms", "  seal the key", "first boot: the unseal key sealed, checked, written; the admin token"},
		{"tcp_restart_ms", "  server restart with TCP", "first boot: the server restarted by D-Bus, its listener on"},
		{"unseal_key_ms", "  unseal the key", "the sealer opens the sealed unseal key"},
		{"unseal_server_ms", "  unseal the server", "seal status and unseal over the admin socket"},
		{"admin_token_ms", "  admin token", "the admin token opened and looked up"},
		{"setup_ms", "  setup", "secrets engine, policies, token roles"},
		{"revoke_ms", "  revocations", "the previous boot's tokens, stray root tokens"},
		{"tokens_ms", "  new tokens", "this boot's token-issuing and supervisor tokens"},
	} {
		if !ul.has(p.key) {
			continue
		}
		bd.add(p.name, p.what, ul.ms(p.key))
		accounted += ul.ms(p.key)
	}
	if ul.has("prepare_ms") {
		accounted += spanMs(unseal.ExecMainStart, mainStart)
		bd.add("  READY=1 seen", "the timing line to systemd's READY=1 (sd_notify, systemd's loop)", spanMs(lineEnd, unseal.ActiveEnter))
		accounted += spanMs(lineEnd, unseal.ActiveEnter)
	}
	bd.add("  the rest", "edgeseal-unseal's exec to READY=1 less the parts above (0 but rounding)", unsealTotal-accounted)
	ready := d.unitTimestamps("edgeseal-ready.service")
	bd.add("ready to target", "edgeseal-unseal's READY=1 to edgeseal.target active", spanMs(unseal.ActiveEnter, target.ActiveEnter))
	bd.add("  edgeseal-ready.service's run", "its exec to its exit: a shell asking `systemctl show` for edgeseal-unseal's state", spanMs(ready.ExecMainStart, ready.ActiveEnter))
	own := chain - serverOwn
	if cold {
		own = chain - d.firstServerStart() - serverOwn
		bd.add("edgeseal's part", "the chain less the server's own two starts", own)
	} else {
		bd.add("edgeseal's part", "the chain less the server's own start", own)
	}
	return own
}

// firstServerStart is, on a first boot, the server's first start (exec to
// READY=1), which the unit's timestamps no longer show once edgeseal-unseal
// restarted it: from the journal's monotonic stamps of systemd's lines.
func (d *device) firstServerStart() float64 {
	d.t.Helper()
	out := d.run("journalctl", "--no-pager", "-b", "-o", "json", "--output-fields=MESSAGE,JOB_TYPE,JOB_RESULT", "-u", "edgeseal-vault.service")
	// systemd logs "Starting ..." when it forks and "Started ..." at READY=1.
	var starting, started int64
	for _, line := range strings.Split(out, "\n") {
		mono := jsonField(line, "__MONOTONIC_TIMESTAMP")
		msg := jsonField(line, "MESSAGE")
		n, _ := strconv.ParseInt(mono, 10, 64)
		switch {
		case starting == 0 && strings.HasPrefix(msg, "Starting "):
			starting = n
		case started == 0 && strings.HasPrefix(msg, "Started "):
			started = n
		}
	}
	if starting == 0 || started == 0 {
		d.t.Fatalf("no Starting/Started lines of edgeseal-vault.service in the journal:\n%s", out)
	}
	return spanMs(starting, started)
}

// jsonField is the string value of key in one line of journalctl -o json
// (values there are strings; no escapes in the fields read here).
func jsonField(line, key string) string {
	_, rest, ok := strings.Cut(line, `"`+key+`":"`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}
