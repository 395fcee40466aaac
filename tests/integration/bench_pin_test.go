//go:build integration

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
)

// BenchmarkPinnedDelivery: what a service's pins add to a delivery. Per run,
// tokenbench sends 100 requests on the socket, one at a time, as each of three
// services in turn: one without pins, one that pins its unit's files
// (unit_files: two property reads of systemd over D-Bus per request), and one
// that pins its executable (exe_sha256: the caller's uid map and capabilities
// from /proc, its unit's RestrictNamespaces= from systemd, and a question to
// edgeseal-exeid, whose digest of tokenbench is cached after the first); the
// ratios are per run (pinned / plain). The default server only: what is
// measured is the provider's, before the token-create.
func BenchmarkPinnedDelivery(b *testing.B) {
	const tokenbench = "/usr/lib/edgeseal-tests/tokenbench"
	d := newDevice(b, false, func(c *config.Config) {
		c.Tokend.IdleExit = 0
		c.Services = []config.Service{
			{Name: "plain", Units: []string{benchUnit("plain")}},
			// tokenbench runs in a transient unit: its unit file is systemd's.
			{Name: "unit-pinned", Units: []string{benchUnit("unit-pinned")}, UnitFiles: []string{"/run/systemd/transient/" + benchUnit("unit-pinned")}},
		}
	})
	sum, _, _ := strings.Cut(d.run("sha256sum", tokenbench), " ")
	d.cfg.Services = append(d.cfg.Services, config.Service{Name: "exe-pinned", Units: []string{benchUnit("exe-pinned")}, ExeSHA256: []string{sum}})
	d.writeConfig()
	d.start()
	d.run("systemctl", "start", "edgeseal-tokend.service")
	plain, unitPinned, exePinned := newSeries("plain-median", "ms"), newSeries("unit-files-median", "ms"), newSeries("exe-median", "ms")
	unitRatio, exeRatio := newSeries("unit-files/plain", "x"), newSeries("exe/plain", "x")
	run := func(props []string, service string) float64 {
		f, err := d.tryTokenbenchIn(props, service, "socket", 100, 1)
		if err != nil {
			b.Fatal(err)
		}
		d.waitRevocationsDrained(b, time.Now(), 2*time.Minute)
		return f.MedianMS
	}
	for range b.N {
		p := run(nil, "plain")
		u := run(nil, "unit-pinned")
		e := run([]string{"RestrictNamespaces=yes"}, "exe-pinned")
		plain.Add(p)
		unitPinned.Add(u)
		exePinned.Add(e)
		unitRatio.Add(u / p)
		exeRatio.Add(e / p)
	}
	for _, s := range []*series{plain, unitPinned, exePinned, unitRatio, exeRatio} {
		s.Report(b)
	}
	table(b, fmt.Sprintf("What a service's pins add to a delivery, %s (median of each run's 100 requests; over %d runs)", defaultServer, b.N),
		[]string{"no pin", "unit_files", "ratio", "exe_sha256", "ratio"},
		[][]string{{plain.String(), unitPinned.String(), unitRatio.String(), exePinned.String(), exeRatio.String()}})
}
