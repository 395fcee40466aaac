//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// Figures for the README: medians over b.N runs, each on a fresh device or a
// reboot under real systemd. Run with `make bench` (go test -bench . -benchtime 5x).
// Every benchmark runs once per server, side by side in one run: sub-benchmarks
// named by the server (BenchmarkReunseal/openbao, BenchmarkReunseal/vault), with
// the same metrics.

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func report(b *testing.B, name string, ds []time.Duration) {
	b.ReportMetric(float64(median(ds).Milliseconds()), "median-ms/"+name)
	b.Logf("%s: median %v over %d runs (all: %v)", name, median(ds), len(ds), ds)
}

// onEachServerBench runs bench once per server of the test bed (OpenBao, then
// HashiCorp Vault), as sub-benchmarks named by the server.
func onEachServerBench(b *testing.B, bench func(b *testing.B, srv testbed.Server)) {
	for _, srv := range servers {
		b.Run(srv.Name, func(b *testing.B) { bench(b, srv) })
	}
}

// BenchmarkColdFirstBoot: `systemctl start edgeseal.target` to active on a device
// that has never booted (PKI, Vault start, init, seal, unseal, setup).
func BenchmarkColdFirstBoot(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		var ds []time.Duration
		for range b.N {
			d := newDevice(b, false, nil, withServer(srv))
			ds = append(ds, d.start())
			d.m.Stop(b)
		}
		report(b, "cold-first-boot", ds)
	})
}

// BenchmarkWarmReboot: `systemctl start edgeseal.target` to active after a reboot
// (PKI, Vault start, unseal the sealed key, unseal Vault, setup, new tokens).
func BenchmarkWarmReboot(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		d := newDevice(b, false, nil, withServer(srv))
		d.start()
		var ds []time.Duration
		for range b.N {
			d.m.Reboot(b)
			ds = append(ds, d.start())
		}
		report(b, "warm-reboot", ds)
	})
}

// BenchmarkReunseal: from `systemctl restart edgeseal-vault` (which returns when
// Vault's listener is up, sealed) to Vault unsealed again by edgeseal, and from a
// SIGKILL of Vault to unsealed (includes systemd's restart and Vault's start).
func BenchmarkReunseal(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		d := newDevice(b, false, nil, withServer(srv))
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
	})
}

// BenchmarkTokenDelivery: one token through the socket (client, SO_PEERCRED,
// D-Bus unit lookup, pid re-check, token-create, ledger) against Vault's
// token-create called straight with the token-issuing token (the floor), then
// throughput with 50 concurrent clients, 200 requests at once (no errors
// allowed), and the provider's peak RSS. Figures come from tokenbench, which
// runs inside the device.
func BenchmarkTokenDelivery(b *testing.B) {
	onEachServerBench(b, tokenDelivery)
}

func tokenDelivery(b *testing.B, srv testbed.Server) {
	d := newDevice(b, false, func(c *config.Config) {
		c.Tokend.IdleExit = 0
		c.Services = []config.Service{{Name: "collector", UIDs: []uint32{1001}}}
	}, withServer(srv))
	d.start()
	d.run("systemctl", "start", "edgeseal-tokend.service")
	for range b.N {
		// The floor first, as root (it reads the token-issuing token).
		out := d.run("/usr/lib/edgeseal-tests/tokenbench", "-n", "100", "-c", "1", "-burst", "1", "-direct", d.cfg.VaultAddr())
		var floor map[string]float64
		if err := json.Unmarshal([]byte(out), &floor); err != nil {
			b.Fatalf("tokenbench: %v: %q", err, out)
		}
		out, stderr, err := d.m.RunAs(context.Background(), 1001, 1001, "/usr/lib/edgeseal-tests/tokenbench", "-n", "200", "-c", "50", "-burst", "200")
		if err != nil {
			b.Fatalf("tokenbench as uid 1001: %v\n%s\n%s", err, stderr, d.journal())
		}
		var f struct {
			SocketMedian float64 `json:"socket_median_ms"`
			SocketP99    float64 `json:"socket_p99_ms"`
			Throughput   float64 `json:"throughput_per_s"`
			BurstErrors  int     `json:"burst_errors"`
			Superseded   int     `json:"superseded"`
			FirstError   string  `json:"first_error"`
		}
		if err := json.Unmarshal([]byte(out), &f); err != nil {
			b.Fatalf("tokenbench: %v: %q", err, out)
		}
		hwm := d.run("sh", "-c", "grep VmHWM /proc/$(systemctl show -p MainPID --value edgeseal-tokend.service)/status")
		b.ReportMetric(f.SocketMedian, "socket-median-ms")
		b.ReportMetric(f.SocketP99, "socket-p99-ms")
		b.ReportMetric(floor["direct_median_ms"], "direct-median-ms")
		b.ReportMetric(floor["direct_p99_ms"], "direct-p99-ms")
		b.ReportMetric(f.SocketMedian/floor["direct_median_ms"], "socket/direct")
		b.ReportMetric(f.Throughput, "tokens/s@50")
		b.ReportMetric(float64(f.BurstErrors), "errors@200")
		b.ReportMetric(float64(f.Superseded), "superseded")
		b.Logf("socket: median %.2f ms, p99 %.2f ms; direct token-create: median %.2f ms, p99 %.2f ms; ratio %.2f; "+
			"%.0f tokens/s with 50 clients; %d errors of 200 at once (%s); %d deliveries superseded before the client's check "+
			"(the same service fetching concurrently: each new token revokes the one before); provider %s",
			f.SocketMedian, f.SocketP99, floor["direct_median_ms"], floor["direct_p99_ms"], f.SocketMedian/floor["direct_median_ms"],
			f.Throughput, f.BurstErrors, f.FirstError, f.Superseded, strings.TrimSpace(hwm))
		if f.BurstErrors != 0 {
			b.Errorf("%d of 200 concurrent requests failed: %s", f.BurstErrors, f.FirstError)
		}
	}
}
