//go:build integration

package integration

import (
	"slices"
	"testing"
	"time"
)

// Figures for the README: medians over b.N runs, each on a fresh device or a
// reboot under real systemd. Run with `make bench` (go test -bench . -benchtime 5x).

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func report(b *testing.B, name string, ds []time.Duration) {
	b.ReportMetric(float64(median(ds).Milliseconds()), "median-ms/"+name)
	b.Logf("%s: median %v over %d runs (all: %v)", name, median(ds), len(ds), ds)
}

// BenchmarkColdFirstBoot: `systemctl start edgeseal.target` to active on a device
// that has never booted (PKI, Vault start, init, seal, unseal, setup).
func BenchmarkColdFirstBoot(b *testing.B) {
	var ds []time.Duration
	for range b.N {
		d := newDevice(b, false, nil)
		ds = append(ds, d.start())
		d.m.Stop(b)
	}
	report(b, "cold-first-boot", ds)
}

// BenchmarkWarmReboot: `systemctl start edgeseal.target` to active after a reboot
// (PKI, Vault start, unseal the sealed key, unseal Vault, setup, new tokens).
func BenchmarkWarmReboot(b *testing.B) {
	d := newDevice(b, false, nil)
	d.start()
	var ds []time.Duration
	for range b.N {
		d.m.Reboot(b)
		ds = append(ds, d.start())
	}
	report(b, "warm-reboot", ds)
}

// BenchmarkReunseal: from `systemctl restart edgeseal-vault` (which returns when
// Vault's listener is up, sealed) to Vault unsealed again by edgeseal, and from a
// SIGKILL of Vault to unsealed (includes systemd's restart and Vault's start).
func BenchmarkReunseal(b *testing.B) {
	d := newDevice(b, false, nil)
	d.start()
	var afterRestart, afterKill []time.Duration
	for range b.N {
		d.run("systemctl", "restart", "edgeseal-vault.service")
		afterRestart = append(afterRestart, d.waitUnsealed(30*time.Second))
		pid := d.mainPID("edgeseal-vault.service")
		t0 := time.Now()
		d.run("kill", "-9", pid)
		time.Sleep(20 * time.Millisecond)
		d.waitUnsealed(30 * time.Second)
		afterKill = append(afterKill, time.Since(t0))
	}
	report(b, "reunseal-after-restart", afterRestart)
	report(b, "reunseal-after-kill", afterKill)
}
