//go:build integration

package integration

import (
	"testing"

	"github.com/edgeseal/edgeseal/tests/testbed"
)

// Figures for the README, printed by `make bench` (go test -bench . -benchtime
// 5x): every figure is a series of runs (b.N of them, each on a fresh device or
// a reboot under real systemd), printed as its N and min/median/max, each
// reported once (testing keeps only the last ReportMetric of a name). Every
// benchmark runs once per server, side by side in one run: sub-benchmarks
// named by the server (BenchmarkReunseal/openbao, BenchmarkReunseal/vault).
// Tables are printed on stdout (a benchmark's b.Log output is cut to 10 lines).

// A figure over several runs, and the README's tables: test bed tooling
// (testbed.Series, testbed.Table), shared with the controller's benchmarks.
type series = testbed.Series

var (
	newSeries = testbed.NewSeries
	num       = testbed.Num
	table     = testbed.Table
)

// onEachServerBench runs bench once per server of the test bed (OpenBao, then
// HashiCorp Vault), as sub-benchmarks named by the server.
func onEachServerBench(b *testing.B, bench func(b *testing.B, srv testbed.Server)) {
	for _, srv := range servers {
		b.Run(srv.Name, func(b *testing.B) { bench(b, srv) })
	}
}
