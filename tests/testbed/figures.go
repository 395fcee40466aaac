//go:build integration

package testbed

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// Series is one figure over several runs: printed as its N and
// min/median/max, reported once (testing keeps only the last ReportMetric of
// a name).
type Series struct {
	name, unit string
	vals       []float64
}

// NewSeries is an empty series of a figure in unit.
func NewSeries(name, unit string) *Series { return &Series{name: name, unit: unit} }

// Add adds a run's figure.
func (s *Series) Add(v float64) { s.vals = append(s.vals, v) }

// AddDur adds a run's duration, in ms.
func (s *Series) AddDur(d time.Duration) { s.Add(float64(d.Microseconds()) / 1000) }

// Vals are the runs' figures, in order.
func (s *Series) Vals() []float64 { return s.vals }

// Stats are the min, median and max of the series (the upper median for an
// even N).
func (s *Series) Stats() (lo, med, hi float64) {
	if len(s.vals) == 0 {
		return 0, 0, 0
	}
	v := slices.Clone(s.vals)
	slices.Sort(v)
	return v[0], v[len(v)/2], v[len(v)-1]
}

// Median is the series' median.
func (s *Series) Median() float64 { _, m, _ := s.Stats(); return m }

// String is "12.3 ms (N=5: 11.0 to 14.2)".
func (s *Series) String() string {
	lo, med, hi := s.Stats()
	return fmt.Sprintf("%s %s (N=%d: %s to %s)", Num(med), s.unit, len(s.vals), Num(lo), Num(hi))
}

// Report reports the series' median once, as "<name>-<unit>"; its spread
// goes in a table.
func (s *Series) Report(b *testing.B) {
	b.ReportMetric(s.Median(), s.name+"-"+strings.ReplaceAll(s.unit, " ", ""))
}

// Num prints a figure with 3 significant digits at most, no exponent.
func Num(v float64) string {
	switch {
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// Table prints rows under header as a Markdown table, the README's form, on
// stdout, under the benchmark's name and title.
func Table(b *testing.B, title string, header []string, rows [][]string) {
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

// Name is the figure's name; Unit, its unit.
func (s *Series) Name() string { return s.name }

// Unit is the figure's unit.
func (s *Series) Unit() string { return s.unit }
