//go:build integration

package integration

import (
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
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
// the provider makes them), and with 100 alive after 10,000 more were issued
// and revoked in that boot (history: what a long-running device leaves), the
// revoke phase of edgeseal-unseal's timing line. 100 tokens: b.N runs; the
// 10,000 cases: one run per server and `go test` (making them takes half a
// minute; testing calls a benchmark twice, with b.N 1 then b.N, and the
// second shows the first's row). Every run checks that the tokens alive were
// revoked.
func BenchmarkScaleRevoke(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		d := newDevice(b, false, func(c *config.Config) { c.Services = manyServices(1) }, withServer(srv))
		d.start()
		var rows [][]string
		for _, tc := range []struct{ alive, history int }{{100, 0}, {10000, 0}, {100, 10000}} {
			key := fmt.Sprintf("%s %d %d", srv.Name, tc.alive, tc.history)
			runs := b.N
			if tc.alive+tc.history > 1000 {
				if row, ok := onceRows[key]; ok {
					rows = append(rows, row)
					continue
				}
				runs = 1
			}
			revoke, chain := newSeries(fmt.Sprintf("revoke-%d-%d", tc.alive, tc.history), "ms"), newSeries("chain", "ms")
			bdAll := newBreakdown()
			for range runs {
				if tc.history > 0 {
					d.revokeTokens(d.makeServiceTokens(tc.history))
				}
				accessors := d.makeServiceTokens(tc.alive)
				d.m.Reboot(b)
				d.start()
				d.bootParts(bdAll, false)
				l := d.timingLine("edgeseal-unseal.service", "boot timing", nil)
				revoke.Add(l.ms("revoke_ms"))
				chain.Add(bdAll.rows["chain"].Vals()[len(bdAll.rows["chain"].Vals())-1])
				d.checkRevoked(accessors)
			}
			bdAll.print(b, fmt.Sprintf("warm reboot with %d tokens of the previous boot alive (%d more issued and revoked in it) on %s", tc.alive, tc.history, srv))
			lo, med, hi := revoke.Stats()
			clo, cmed, chi := chain.Stats()
			row := []string{fmt.Sprint(tc.alive), fmt.Sprint(tc.history), fmt.Sprint(len(revoke.Vals())),
				fmt.Sprintf("%s (%s to %s)", num(med), num(lo), num(hi)), fmt.Sprintf("%s (%s to %s)", num(cmed), num(clo), num(chi))}
			if runs == 1 && tc.alive+tc.history > 1000 {
				onceRows[key] = row
			}
			rows = append(rows, row)
		}
		table(b, "revocation of the previous boot's tokens on "+srv.String()+" (ms, median (least to most) of N runs)",
			[]string{"tokens alive", "issued and revoked before", "N", "revocations (edgeseal-unseal's revoke phase)", "warm reboot, chain"}, rows)
	})
}

// onceRows are the rows of the 10,000-token cases by server and case, made
// once per `go test`.
var onceRows = map[string][]string{}

// revokeTokens revokes accessors as the provider revokes a replaced token
// (revoke-accessor), with a maintenance root token.
func (d *device) revokeTokens(accessors []string) {
	d.t.Helper()
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	defer c.ClearToken()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	const workers = 8
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(accessors); i += workers {
				if err := c.Auth().Token().RevokeAccessor(accessors[i]); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		d.t.Fatalf("cannot revoke service tokens: %v", first)
	}
}

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
					Policies: []string{vaultlayout.ServicePolicyPrefix + "svc0000"},
					Metadata: map[string]string{"edgeseal_service": "svc0000"},
				}, vaultlayout.ServiceRole)
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
