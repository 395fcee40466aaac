//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
)

// BenchmarkSnapPin: what a service that pins its snap's revision adds to a
// delivery, the provider's question to snapd. Per run, the consumer snap's
// app fetches its token 10 times as a service without the pin, then 10 times
// with it (snap_revisions: [x1]); the figure is the provider's own time of
// each delivery (took_ms less issue_ms in its journal: the token-create in
// Vault left out), and the medians' difference per run.
func BenchmarkSnapPin(b *testing.B) {
	const n = 10
	unpinned := config.Service{Name: "consumer", SnapApps: []string{"es-consumer.fetch"}}
	pinned := unpinned
	pinned.SnapRevisions = []string{"x1"}
	d := snapdDevice(b, func(c *config.Config) {
		c.Tokend.IdleExit = 0
		c.Services = []config.Service{unpinned}
	})
	if rev := d.installConsumer(); rev != "x1" {
		b.Fatalf("the consumer snap is revision %s, want x1", rev)
	}
	fetches := func(svc config.Service) *series {
		d.cfg.Services = []config.Service{svc}
		d.writeConfig()
		since := d.run("date", "+@%s.%N")
		for range n {
			if _, stderr, err := d.m.Run(context.Background(), "snap", "run", "es-consumer.fetch"); err != nil {
				b.Fatalf("snap run es-consumer.fetch: %v\n%s\n%s", err, stderr, d.journal())
			}
		}
		_, own := d.providerSeries(b, since)
		// Every delivery since was under this config (the provider reads it
		// again when it changes): with the pin, each names the revision.
		out := d.run("journalctl", "-q", "-o", "cat", "-u", "edgeseal-tokend.service", "--since", since, "--grep", "took_ms=")
		want := 0
		if len(svc.SnapRevisions) > 0 {
			want = n
		}
		if got := strings.Count(out, "revision x1"); len(own.Vals()) != n || got != want {
			b.Fatalf("%d deliveries, %d naming the revision; want %d, %d:\n%s", len(own.Vals()), got, n, want, out)
		}
		return own
	}
	without, with, added := newSeries("unpinned-own-median", "ms"), newSeries("pinned-own-median", "ms"), newSeries("snapd-question", "ms")
	var each *series
	for range b.N {
		w := fetches(unpinned).Median()
		p := fetches(pinned)
		without.Add(w)
		with.Add(p.Median())
		added.Add(p.Median() - w)
		each = p
	}
	for _, s := range []*series{without, with, added} {
		s.Report(b)
	}
	table(b, fmt.Sprintf("A snap app's delivery, with and without snap_revisions (the provider's own time, median of each run's %d; over %d runs)", n, b.N),
		[]string{"unpinned", "pinned", "pinned less unpinned", "pinned, each delivery of the last run"},
		[][]string{{without.String(), with.String(), added.String(), each.String()}})
}
