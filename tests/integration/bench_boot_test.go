//go:build integration

package integration

import (
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/tests/testbed"
)

// BenchmarkColdFirstBoot: `systemctl start edgeseal.target` to active on a device
// that has never booted (PKI, Vault start, init, seal, unseal, setup).
func BenchmarkColdFirstBoot(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		ds := newSeries("cold-first-boot", "ms")
		for range b.N {
			d := newDevice(b, false, nil, withServer(srv))
			ds.addDur(d.start())
			d.m.Stop(b)
		}
		ds.report(b)
	})
}

// BenchmarkWarmReboot: `systemctl start edgeseal.target` to active after a reboot
// (PKI, Vault start, unseal the sealed key, unseal Vault, setup, new tokens).
func BenchmarkWarmReboot(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		d := newDevice(b, false, nil, withServer(srv))
		d.start()
		ds := newSeries("warm-reboot", "ms")
		for range b.N {
			d.m.Reboot(b)
			ds.addDur(d.start())
		}
		ds.report(b)
	})
}

// BenchmarkReunseal: from `systemctl restart edgeseal-vault` (which returns when
// Vault's listener is up, sealed) to Vault unsealed again by edgeseal, and from a
// SIGKILL of Vault to unsealed (includes systemd's restart and Vault's start).
func BenchmarkReunseal(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		d := newDevice(b, false, nil, withServer(srv))
		d.start()
		afterRestart, afterKill := newSeries("reunseal-after-restart", "ms"), newSeries("reunseal-after-kill", "ms")
		for range b.N {
			d.run("systemctl", "restart", "edgeseal-vault.service")
			afterRestart.addDur(d.waitUnsealed(30 * time.Second))
			pid := d.mainPID("edgeseal-vault.service")
			t0 := time.Now()
			d.run("kill", "-9", pid)
			time.Sleep(20 * time.Millisecond)
			d.waitUnsealed(30 * time.Second)
			afterKill.addDur(time.Since(t0))
		}
		afterRestart.report(b)
		afterKill.report(b)
	})
}
