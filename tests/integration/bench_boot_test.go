//go:build integration

package integration

import (
	"strconv"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/tests/testbed"
)

// warmOwnBound is the bound on edgeseal's part of a warm reboot: the
// chain to edgeseal.target less the server's own start, on the test bed.
const warmOwnBound = 150.0 // ms

// BenchmarkColdFirstBoot: `systemctl start edgeseal.target` to active on a device
// that has never booted (PKI, Vault start, init, seal, unseal, setup), split
// into its parts from inside the device (bootParts).
func BenchmarkColdFirstBoot(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		ds := newSeries("cold-first-boot", "ms")
		bd := newBreakdown()
		for range b.N {
			d := newDevice(b, false, nil, withServer(srv))
			ds.AddDur(d.start())
			d.bootParts(bd, true)
			d.m.Stop(b)
		}
		ds.Report(b)
		bd.print(b, "cold first boot on "+srv.String())
	})
}

// BenchmarkWarmReboot: `systemctl start edgeseal.target` to active after a reboot
// (PKI, Vault start, unseal the sealed key, unseal Vault, setup, new tokens),
// split into its parts; edgeseal's part (the chain less the server's own
// start) is held to warmOwnBound.
func BenchmarkWarmReboot(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		d := newDevice(b, false, nil, withServer(srv))
		d.start()
		ds, own := newSeries("warm-reboot", "ms"), newSeries("warm-reboot-edgeseal", "ms")
		bd := newBreakdown()
		for range b.N {
			d.m.Reboot(b)
			took := d.start()
			ds.AddDur(took)
			bd.add("wall time", "`systemctl start edgeseal.target`, the host's clock around it (an nsenter round trip)", float64(took.Microseconds())/1000)
			own.Add(d.bootParts(bd, false))
		}
		ds.Report(b)
		own.Report(b)
		bd.print(b, "warm reboot on "+srv.String())
		if m := own.Median(); m > warmOwnBound {
			b.Logf("edgeseal's part of a warm reboot is %s ms (median), over the issue's %v ms", num(m), warmOwnBound)
		}
	})
}

// BenchmarkReunseal: Vault restarted (`systemctl restart edgeseal-vault`) and
// killed (SIGKILL) to unsealed again by edgeseal. Every time is taken inside
// the device on one clock: the server unit's timestamps (its death as
// systemd saw it, its exec, its READY=1) and the monotonic stamp of
// edgeseal-unseal's own line saying it unsealed the server. The host only
// waits.
func BenchmarkReunseal(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		d := newDevice(b, false, nil, withServer(srv))
		d.start()
		afterRestart, afterKill := newSeries("reunseal-after-restart", "ms"), newSeries("reunseal-after-kill", "ms")
		bdRestart, bdKill := newBreakdown(), newBreakdown()
		count := 0
		for range b.N {
			d.run("systemctl", "restart", "edgeseal-vault.service")
			count++
			up := d.unitTimestamps("edgeseal-vault.service")
			done := d.reunsealedAt(count)
			afterRestart.Add(spanMs(up.ActiveEnter, done))
			bdRestart.add("restart's end to unsealed", "edgeseal-vault's READY=1 to edgeseal-unseal's line (watch tick and unseal)", spanMs(up.ActiveEnter, done))

			pid := d.mainPID("edgeseal-vault.service")
			d.run("kill", "-9", pid)
			count++
			done = d.reunsealedAt(count)
			u := d.unitTimestamps("edgeseal-vault.service")
			afterKill.Add(spanMs(u.ActiveExit, done))
			bdKill.add("kill to unsealed", "systemd sees the server die to edgeseal-unseal's line", spanMs(u.ActiveExit, done))
			bdKill.add("  systemd's restart", "the death to the new server's exec (RestartSec=200ms)", spanMs(u.ActiveExit, u.ExecMainStart))
			bdKill.add("  the server's own start", "its exec to its READY=1 (listener up, sealed)", spanMs(u.ExecMainStart, u.ActiveEnter))
			bdKill.add("  edgeseal", "READY=1 to unsealed (watch tick and unseal)", spanMs(u.ActiveEnter, done))
		}
		afterRestart.Report(b)
		afterKill.Report(b)
		bdRestart.print(b, "re-unseal after systemctl restart on "+srv.String())
		bdKill.print(b, "re-unseal after SIGKILL on "+srv.String())
	})
}

// reunsealedAt waits for edgeseal-unseal's count-th re-unseal of this boot
// and returns its monotonic stamp (µs).
func (d *device) reunsealedAt(count int) int64 {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	want := strconv.Itoa(count)
	for {
		l := d.tryTimingLine("edgeseal-unseal.service", "Vault was sealed (it restarted); unsealed it again", func(l logLine) bool { return l["count"] == want })
		if l != nil {
			n, err := strconv.ParseInt(l["mono_us"], 10, 64)
			if err != nil {
				d.t.Fatalf("re-unseal line without mono_us: %v", l)
			}
			return n
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("Vault not unsealed again (re-unseal %d) within 30s:\n%s", count, d.journal())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
