//go:build integration

package integration

import (
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/secretstore"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// BenchmarkScaleBoot: boot time as the config grows: 10, 100 and 1,000
// configured services (each its own policy), the first boot once per size
// and b.N warm reboots, split as the boot benchmarks split it. A warm reboot
// with an unchanged config should cost the same at every size.
func BenchmarkScaleBoot(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		var rows [][]string
		for _, n := range []int{10, 100, 1000} {
			d := newDevice(b, false, func(c *config.Config) { c.Services = manyServices(n) }, withServer(srv))
			cold, warm := newBreakdown(), newBreakdown()
			d.start()
			d.bootParts(cold, true)
			coldLine := d.timingLine("edgeseal-unseal.service", "boot timing", nil)
			var warmLine logLine
			for range b.N {
				d.m.Reboot(b)
				d.start()
				d.bootParts(warm, false)
				warmLine = d.timingLine("edgeseal-unseal.service", "boot timing", nil)
			}
			d.m.Stop(b)
			warm.print(b, fmt.Sprintf("warm reboot with %d services on %s", n, srv))
			rows = append(rows, []string{fmt.Sprint(n),
				cold.cell("chain"), cold.cell("  setup"), coldLine["policies_written"] + " of " + coldLine["policies"],
				warm.cell("chain"), warm.cell("edgeseal's part"), warm.cell("  setup"), warmLine["policies_written"] + " of " + warmLine["policies"]})
		}
		table(b, fmt.Sprintf("boot time by configured services on %s (ms, median (least to most); first boot N=1, warm reboot N=%d each)", srv, b.N),
			[]string{"services", "first boot, chain", "first boot, setup", "policies written", "warm reboot, chain", "warm, edgeseal's part", "warm, setup", "policies written"}, rows)
	})
}

// manyServices are n services, each with its own uid.
func manyServices(n int) []config.Service {
	out := make([]config.Service, n)
	for i := range out {
		out[i] = config.Service{Name: fmt.Sprintf("svc%04d", i), UIDs: []uint32{uint32(20000 + i)}, SharedRead: []string{"telemetry"}}
	}
	return out
}

// BenchmarkScaleRevoke: the boot's revocation of the previous boot's tokens
// with 100 and 10,000 of them alive (service tokens from edgeseal's role, as
// the provider makes them), the revoke phase of edgeseal-unseal's timing
// line. 100 tokens: b.N runs; 10,000: one run per server and `go test`
// (making them takes half a minute; testing calls a benchmark twice, with
// b.N 1 then b.N, and the second shows the first's row). Every run checks
// that the tokens were revoked.
func BenchmarkScaleRevoke(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		d := newDevice(b, false, func(c *config.Config) { c.Services = manyServices(1) }, withServer(srv))
		d.start()
		var rows [][]string
		for _, n := range []int{100, 10000} {
			runs := b.N
			if n > 1000 {
				if row, ok := onceRows[srv.Name]; ok {
					rows = append(rows, row)
					continue
				}
				runs = 1
			}
			revoke, chain := newSeries(fmt.Sprintf("revoke-%d", n), "ms"), newSeries(fmt.Sprintf("warm-reboot-%d-tokens", n), "ms")
			bdAll := newBreakdown()
			for range runs {
				accessors := d.makeServiceTokens(n)
				d.m.Reboot(b)
				d.start()
				d.bootParts(bdAll, false)
				l := d.timingLine("edgeseal-unseal.service", "boot timing", nil)
				revoke.add(l.ms("revoke_ms"))
				chain.add(bdAll.rows["chain"].vals[len(bdAll.rows["chain"].vals)-1])
				d.checkRevoked(accessors)
			}
			bdAll.print(b, fmt.Sprintf("warm reboot with %d tokens of the previous boot alive on %s", n, srv))
			lo, med, hi := revoke.stats()
			clo, cmed, chi := chain.stats()
			row := []string{fmt.Sprint(n), fmt.Sprint(len(revoke.vals)),
				fmt.Sprintf("%s (%s to %s)", num(med), num(lo), num(hi)), fmt.Sprintf("%s (%s to %s)", num(cmed), num(clo), num(chi))}
			if n > 1000 {
				onceRows[srv.Name] = row
			}
			rows = append(rows, row)
		}
		table(b, "revocation of the previous boot's tokens on "+srv.String()+" (ms, median (least to most) of N runs)",
			[]string{"tokens alive", "N", "revocations (edgeseal-unseal's revoke phase)", "warm reboot, chain"}, rows)
	})
}

// onceRows are the 10,000-token rows by server, made once per `go test`.
var onceRows = map[string][]string{}

// makeServiceTokens makes n tokens from edgeseal's service role, as the
// provider would, with a maintenance root token, and returns their accessors.
func (d *device) makeServiceTokens(n int) []string {
	d.t.Helper()
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	defer c.ClearToken()
	out := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	const workers = 8
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				s, err := c.Auth().Token().CreateWithRole(&api.TokenCreateRequest{
					Policies: []string{secretstore.ServicePolicyPrefix + "svc0000"},
					Metadata: map[string]string{"edgeseal_service": "svc0000"},
				}, secretstore.ServiceRole)
				if err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					return
				}
				out[i] = s.Auth.Accessor
			}
		}()
	}
	wg.Wait()
	if first != nil {
		d.t.Fatalf("cannot make service tokens: %v", first)
	}
	return out
}

// checkRevoked fails unless every one of a sample of accessors is gone.
func (d *device) checkRevoked(accessors []string) {
	d.t.Helper()
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	defer c.ClearToken()
	step := max(1, len(accessors)/50)
	for i := 0; i < len(accessors); i += step {
		if _, err := c.Auth().Token().LookupAccessor(accessors[i]); err == nil {
			d.t.Fatalf("token %s of the previous boot still valid after the boot", accessors[i])
		}
	}
}
