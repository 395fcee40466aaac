//go:build integration

package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/tests/testbed"
)

// Figures for the README, printed by `make bench` (go test -bench . -benchtime
// 5x): every figure is a series of runs (b.N of them, each on a fresh device or
// a reboot under real systemd), printed as its N and min/median/max, each
// reported once (testing keeps only the last ReportMetric of a name). Every
// benchmark runs once per server, side by side in one run: sub-benchmarks
// named by the server (BenchmarkReunseal/openbao, BenchmarkReunseal/vault).
// Tables are printed on stdout (a benchmark's b.Log output is cut to 10 lines).

// series is one figure over several runs.
type series struct {
	name, unit string
	vals       []float64
}

func newSeries(name, unit string) *series { return &series{name: name, unit: unit} }

func (s *series) add(v float64)          { s.vals = append(s.vals, v) }
func (s *series) addDur(d time.Duration) { s.add(float64(d.Microseconds()) / 1000) }

// min, median and max of the series (the upper median for an even N).
func (s *series) stats() (lo, med, hi float64) {
	if len(s.vals) == 0 {
		return 0, 0, 0
	}
	v := slices.Clone(s.vals)
	slices.Sort(v)
	return v[0], v[len(v)/2], v[len(v)-1]
}

func (s *series) median() float64 { _, m, _ := s.stats(); return m }

// String is "12.3 ms (N=5: 11.0 to 14.2)".
func (s *series) String() string {
	lo, med, hi := s.stats()
	return fmt.Sprintf("%s %s (N=%d: %s to %s)", num(med), s.unit, len(s.vals), num(lo), num(hi))
}

// report reports the series' median once, as "<name>-<unit>"; its spread
// goes in a table.
func (s *series) report(b *testing.B) {
	b.ReportMetric(s.median(), s.name+"-"+strings.ReplaceAll(s.unit, " ", ""))
}

// num prints a figure with 3 significant digits at most, no exponent.
func num(v float64) string {
	switch {
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// table prints rows under header as a Markdown table, the README's form, on
// stdout, under the benchmark's name and title.
func table(b *testing.B, title string, header []string, rows [][]string) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%s: %s\n\n| %s |\n|", b.Name(), title, strings.Join(header, " | "))
	for range header {
		sb.WriteString("---|")
	}
	for _, r := range rows {
		fmt.Fprintf(&sb, "\n| %s |", strings.Join(r, " | "))
	}
	fmt.Println(sb.String())
}

// onEachServerBench runs bench once per server of the test bed (OpenBao, then
// HashiCorp Vault), as sub-benchmarks named by the server.
func onEachServerBench(b *testing.B, bench func(b *testing.B, srv testbed.Server)) {
	for _, srv := range servers {
		b.Run(srv.Name, func(b *testing.B) { bench(b, srv) })
	}
}
