//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// tokenbenchFigures is what tests/integration/tokenbench prints.
type tokenbenchFigures struct {
	Mode        string  `json:"mode"`
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	MinMS       float64 `json:"min_ms"`
	MedianMS    float64 `json:"median_ms"`
	P99MS       float64 `json:"p99_ms"`
	MaxMS       float64 `json:"max_ms"`
	PerSecond   float64 `json:"per_s"`
	Errors      int     `json:"errors"`
	Superseded  int     `json:"superseded"`
	FirstError  string  `json:"first_error"`
}

// tokenbench runs tokenbench in the device: for the socket modes as the
// transient service unit tokenbench-<service>.service (DynamicUser=yes), as
// a configured service runs; for the direct one as root (it reads the
// token-issuing token). extra are more flags of tokenbench.
func (d *device) tokenbench(b testing.TB, service string, mode string, n, c int, extra ...string) tokenbenchFigures {
	f, err := d.tryTokenbench(service, mode, n, c, extra...)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// tryTokenbench is tokenbench for any goroutine: it returns what went wrong.
func (d *device) tryTokenbench(service string, mode string, n, c int, extra ...string) (tokenbenchFigures, error) {
	return d.tryTokenbenchIn(nil, service, mode, n, c, extra...)
}

// tryTokenbenchIn is tryTokenbench with more properties of the unit (socket
// modes), as systemd-run -p takes them.
func (d *device) tryTokenbenchIn(props []string, service string, mode string, n, c int, extra ...string) (tokenbenchFigures, error) {
	args := append([]string{"/usr/lib/edgeseal-tests/tokenbench", "-mode", mode, "-n", strconv.Itoa(n), "-c", strconv.Itoa(c)}, extra...)
	if mode == "direct" {
		args = append([]string{"env", "VAULT_ADDR=" + d.cfg.VaultAddr(), "EDGESEAL_SERVICE_PERIOD=" + d.cfg.Tokens.ServicePeriod.D().String()}, args...)
	} else {
		run := []string{"systemd-run", "--wait", "--pipe", "--quiet", "--collect", "--unit=" + benchUnit(service), "-p", "DynamicUser=yes"}
		for _, p := range props {
			run = append(run, "-p", p)
		}
		args = append(run, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, stderr, err := d.m.Run(ctx, args...)
	if err != nil {
		return tokenbenchFigures{}, fmt.Errorf("tokenbench %s: %v\n%s\n%s", strings.Join(args, " "), err, stderr, d.journal())
	}
	var f tokenbenchFigures
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		return f, fmt.Errorf("tokenbench: %v: %q", err, out)
	}
	if f.Errors != 0 {
		return f, fmt.Errorf("tokenbench %s: %d of %d requests failed, the first: %s\n%s", strings.Join(args, " "), f.Errors, n, f.FirstError, d.journal())
	}
	return f, nil
}

// benchUnit is the unit tokenbench runs as for service.
func benchUnit(service string) string { return "tokenbench-" + service + ".service" }

// burstServices are the services whose requests are sent at once: 1,000
// requests from 8 services, 125 each (the provider serves at most 256
// connections of one uid at once, and answers the rest "overloaded").
var burstServices = []string{"collector", "burst-2", "burst-3", "burst-4", "burst-5", "burst-6", "burst-7", "burst-8"}

// burst sends 125 requests from each of burstServices at once (each a
// tokenbench in its own unit, all started at the same moment) and returns the
// median of their medians and the slowest of all 1,000.
func (d *device) burst(b *testing.B) (median, slowest float64) {
	at := strconv.FormatInt(time.Now().Add(3*time.Second).UnixMilli(), 10)
	figs := make([]tokenbenchFigures, len(burstServices))
	errs := make([]error, len(burstServices))
	var wg sync.WaitGroup
	for i, svc := range burstServices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			figs[i], errs[i] = d.tryTokenbench(svc, "socket", 125, 125, "-at", at)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	var meds series
	for _, f := range figs {
		meds.Add(f.MedianMS)
		slowest = max(slowest, f.MaxMS)
	}
	return meds.Median(), slowest
}

// BenchmarkTokenDelivery: a token through the socket against the same
// token-create called straight, side by side in each run, at 1, 10 and 50
// concurrent clients.
//
// Per run and concurrency c, tokenbench sends n requests from c clients,
// first direct (root, the token-issuing token, the provider's role, policy,
// period and metadata: the floor), then through the socket (uid 1001, the
// service "collector": connect, SO_PEERCRED and pidfd, the unit from the
// caller's cgroup, the process checked again, token-create, the ledger, the
// answer). n is 200 at c=1 and 500 at c=10 and c=50, each request timed; a
// run's figure is the median of its requests, and the table gives, over the
// runs, the median of those medians with the least and most in brackets. The
// ratio is per run (socket median / direct median; direct throughput /
// socket throughput). Then, once a run: tokenclient.Fetch (the same, plus the
// client's own check of the token with the server), 100 times in a row; 1,000
// socket requests sent at once, none of which may fail; the provider's RSS;
// and how long the revocations of the tokens the run replaced (each delivery
// to "collector" replaces its previous token) took to drain.
func BenchmarkTokenDelivery(b *testing.B) {
	onEachServerBench(b, tokenDelivery)
}

type concurrencyFigures struct {
	socket, direct, ratio          *series
	socketRate, directRate, rateRo *series
}

func tokenDelivery(b *testing.B, srv testbed.Server) {
	d := newDevice(b, false, func(c *config.Config) {
		c.Tokend.IdleExit = 0
		c.Services = nil
		for _, svc := range burstServices {
			c.Services = append(c.Services, config.Service{Name: svc, Units: []string{benchUnit(svc)}})
		}
	}, withServer(srv))
	d.start()
	d.run("systemctl", "start", "edgeseal-tokend.service")
	levels := []struct{ c, n int }{{1, 200}, {10, 500}, {50, 500}}
	figs := make([]concurrencyFigures, len(levels))
	for i, l := range levels {
		figs[i] = concurrencyFigures{
			socket: newSeries(fmt.Sprintf("socket-median@%d", l.c), "ms"), direct: newSeries(fmt.Sprintf("direct-median@%d", l.c), "ms"),
			ratio:      newSeries(fmt.Sprintf("socket/direct@%d", l.c), "x"),
			socketRate: newSeries(fmt.Sprintf("socket-rate@%d", l.c), "tokens/s"), directRate: newSeries(fmt.Sprintf("direct-rate@%d", l.c), "tokens/s"),
			rateRo: newSeries(fmt.Sprintf("direct/socket-rate@%d", l.c), "x"),
		}
	}
	took, own := newSeries("provider-took@1", "ms"), newSeries("provider-own@1", "ms")
	checked := newSeries("fetch-checked-median", "ms")
	burst := newSeries("burst-1000-median", "ms")
	burstMax := newSeries("burst-1000-max", "ms")
	rss := newSeries("provider-rss", "MB")
	drain := newSeries("revocations-drained", "ms")
	for range b.N {
		for i, l := range levels {
			dir := d.tokenbench(b, "", "direct", l.n, l.c)
			since := d.run("date", "+@%s.%N")
			sock := d.tokenbench(b, "collector", "socket", l.n, l.c)
			if l.c == 1 {
				t, o := d.providerTimes(b, strings.TrimSpace(since))
				took.Add(t)
				own.Add(o)
			}
			// The tokens this run replaced are revoked before the next
			// measurement, which must not share the server with them.
			d.waitRevocationsDrained(b, time.Now(), 2*time.Minute)
			f := figs[i]
			f.direct.Add(dir.MedianMS)
			f.socket.Add(sock.MedianMS)
			f.ratio.Add(sock.MedianMS / dir.MedianMS)
			f.directRate.Add(dir.PerSecond)
			f.socketRate.Add(sock.PerSecond)
			f.rateRo.Add(dir.PerSecond / sock.PerSecond)
		}
		checked.Add(d.tokenbench(b, "collector", "checked", 100, 1).MedianMS)
		d.waitRevocationsDrained(b, time.Now(), 2*time.Minute)
		med, slowest := d.burst(b)
		last := time.Now()
		burst.Add(med)
		burstMax.Add(slowest)
		rss.Add(float64(d.procStatusKB("edgeseal-tokend.service", "VmRSS")) / 1024)
		drain.AddDur(d.waitRevocationsDrained(b, last, 2*time.Minute))
	}
	var rows [][]string
	for i, l := range levels {
		f := figs[i]
		rows = append(rows, []string{strconv.Itoa(l.c), f.socket.String(), f.direct.String(), f.ratio.String(),
			f.socketRate.String(), f.directRate.String(), f.rateRo.String()})
		for _, s := range []*series{f.socket, f.direct, f.ratio, f.socketRate, f.directRate, f.rateRo} {
			s.Report(b)
		}
	}
	table(b, fmt.Sprintf("Token delivery, %s (median of each run's requests; over %d runs)", srv, b.N),
		[]string{"clients", "socket, median", "direct token-create, median", "socket / direct", "socket, tokens/s", "direct, tokens/s", "direct / socket, tokens/s"}, rows)
	for _, s := range []*series{took, own, checked, burst, burstMax, rss, drain} {
		s.Report(b)
	}
	table(b, fmt.Sprintf("Token delivery, the rest, %s", srv), []string{"what", "figure"}, [][]string{
		{"one client: the provider's accept to its answer written (its journal's took_ms), median", took.String()},
		{"one client: of that, the provider's own work (took_ms less issue_ms: the request read, who the caller is, the answer), median", own.String()},
		{"tokenclient.Fetch, checked with the server, one client, median", checked.String()},
		{"1,000 requests at once, 125 from each of 8 services (0 errors in every run): the median of the services' medians", burst.String()},
		{"1,000 requests at once, the slowest", burstMax.String()},
		{"provider RSS after the runs", rss.String()},
		{"the run's replaced tokens all revoked, after the last delivery", drain.String()},
	})
}

// procStatusKB reads a "kB" field of /proc/PID/status of unit's main process.
func (d *device) procStatusKB(unit, field string) int {
	pid := d.mainPID(unit)
	out := d.run("sh", "-c", fmt.Sprintf("grep '^%s:' /proc/%s/status", field, pid))
	f := strings.Fields(out)
	if len(f) < 2 {
		panic(fmt.Sprintf("no %s in /proc/%s/status: %q", field, pid, out))
	}
	kb, err := strconv.Atoi(f[1])
	if err != nil {
		panic(err)
	}
	return kb
}

// waitRevocationsDrained waits until the provider's ledger holds no pending
// revocation, and returns how long that took from t0 (polled every 50 ms).
func (d *device) waitRevocationsDrained(b testing.TB, t0 time.Time, limit time.Duration) time.Duration {
	for {
		f, err := ledger.Parse([]byte(d.run("cat", "/run/edgeseal/tokend/issued.json")))
		if err != nil {
			b.Fatal(err)
		}
		if len(f.Pending) == 0 {
			return time.Since(t0)
		}
		if time.Since(t0) > limit {
			b.Fatalf("%d revocations still pending after %v\n%s", len(f.Pending), limit, d.journal())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var tookRE = regexp.MustCompile(`took_ms=([0-9.]+) issue_ms=([0-9.]+)`)

// providerTimes reads the provider's journal lines of deliveries since (a
// `date +@%s.%N` of the device) and returns the medians of took_ms and of
// took_ms less issue_ms.
func (d *device) providerTimes(b *testing.B, since string) (took, own float64) {
	t, o := d.providerSeries(b, since)
	return t.Median(), o.Median()
}

// providerSeries is providerTimes' figures, each delivery's.
func (d *device) providerSeries(b *testing.B, since string) (took, own *series) {
	out := d.run("journalctl", "-q", "-o", "cat", "-u", "edgeseal-tokend.service", "--since", since, "--grep", "took_ms=")
	took, own = newSeries("took", "ms"), newSeries("own", "ms")
	for _, m := range tookRE.FindAllStringSubmatch(out, -1) {
		tk, _ := strconv.ParseFloat(m[1], 64)
		is, _ := strconv.ParseFloat(m[2], 64)
		took.Add(tk)
		own.Add(tk - is)
	}
	if len(took.Vals()) == 0 {
		b.Fatalf("no delivery with took_ms in the provider's journal since %s", since)
	}
	return took, own
}

// BenchmarkTokenDeliveryAtScale: does a delivery grow with the config? For
// 10, 100 and 1,000 configured services (one of which, "collector", fetches;
// the others each a unit of their own), per run: 100 deliveries through the
// socket and 100 direct token-creates (one client each, side by side), and
// the provider's RSS while it serves.
func BenchmarkTokenDeliveryAtScale(b *testing.B) {
	onEachServerBench(b, func(b *testing.B, srv testbed.Server) {
		var rows [][]string
		for _, n := range []int{10, 100, 1000} {
			d := newDevice(b, false, func(c *config.Config) {
				c.Tokend.IdleExit = 0
				c.Services = []config.Service{{Name: "collector", Units: []string{benchUnit("collector")}}}
				for i := 1; i < n; i++ {
					name := fmt.Sprintf("filler-%d", i)
					c.Services = append(c.Services, config.Service{Name: name, Units: []string{benchUnit(name)}})
				}
			}, withServer(srv))
			d.start()
			d.run("systemctl", "start", "edgeseal-tokend.service")
			sock, dir, ratio := newSeries(fmt.Sprintf("socket-median@%d-services", n), "ms"),
				newSeries(fmt.Sprintf("direct-median@%d-services", n), "ms"), newSeries(fmt.Sprintf("socket/direct@%d-services", n), "x")
			rss := newSeries(fmt.Sprintf("provider-rss@%d-services", n), "MB")
			for range b.N {
				df := d.tokenbench(b, "", "direct", 100, 1)
				sf := d.tokenbench(b, "collector", "socket", 100, 1)
				d.waitRevocationsDrained(b, time.Now(), 2*time.Minute)
				dir.Add(df.MedianMS)
				sock.Add(sf.MedianMS)
				ratio.Add(sf.MedianMS / df.MedianMS)
				rss.Add(float64(d.procStatusKB("edgeseal-tokend.service", "VmRSS")) / 1024)
			}
			for _, s := range []*series{sock, dir, ratio, rss} {
				s.Report(b)
			}
			rows = append(rows, []string{strconv.Itoa(n), sock.String(), dir.String(), ratio.String(), rss.String()})
			d.m.Stop(b)
		}
		table(b, fmt.Sprintf("Token delivery by configured services, %s (100 deliveries a run, one client; over %d runs)", srv, b.N),
			[]string{"services", "socket, median", "direct token-create, median", "socket / direct", "provider RSS, serving"}, rows)
	})
}
