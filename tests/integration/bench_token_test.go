//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

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
