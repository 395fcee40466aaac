//go:build integration

package integration

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// BenchmarkAgentSideBySide (issue 18): edgeseal against what a user would
// otherwise pick, Vault Agent: one agent per identity, AppRole auto-auth and a
// file sink, the agent of the very server build the device runs (`bao agent`,
// `vault agent`). One device per server; for N = 1, 10 and 50 services:
//
//   - agent arm: AppRole enabled with the admin's root token, one role per
//     service (ag-0 ...) whose tokens carry that service's edgeseal policy
//     edgeseal-svc-ag-<i> and nothing else but "default", periodic with the
//     same period as edgeseal's service tokens and the same explicit max TTL;
//     a role_id and secret_id per service in root-only files the unit takes
//     with LoadCredential=; N units ag-<i>.service (DynamicUser=yes) running
//     `<server> agent` with approle auto-auth and a file sink in its
//     RuntimeDirectory.
//   - edgeseal arm: N services es-<i> of the config, each known by its unit
//     es-<i>.service (DynamicUser=yes) running `edgeseal token fetch --renew`,
//     as README's app-one does: the provider hands out the token, the client
//     checks it with lookup-self, then keeps it renewed (tokens are periodic).
//
// Each run (b.N of them per N, each arm alone) starts the N units with one
// `systemctl start --no-block` inside the device and measures, inside the
// device, from before that call to every sink or token file written (polled
// every 10 ms): "time to all tokens". At that moment it reads VmRSS and VmHWM
// (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of each unit's main
// process and of edgeseal-tokend: the agents' figure is the sum over the N
// agents; edgeseal's is the provider's alone, with the N renewing clients
// (`token fetch --renew`) summed apart, as a service that renews its own token
// (EdgeX's client, tokenclient.KeepRenewed in-process) has none. The provider
// is socket-activated and exits after tokend.idle_exit (3 s here): idle, it is
// checked to be gone (no main pid), so its idle figure is 0. The agents never
// exit: their idle figure is read after the steady-state window below. The
// sums count each process's resident shared pages (the server binary's text)
// again; the Pss sum, logged beside, shares them out.
//
// Server-side cost: a file audit device (the server's own record of every
// request; on OpenBao, whose API refuses to enable one unless its config says
// unsafe_allow_api_audit_creation, that line is added to the server's config
// directory and the server restarted and unsealed again before anything is
// measured). Each audited response is attributed to a service by the
// edgeseal-svc-<name> policy of its caller's token or of the token it made
// (a login, a token-create), and to an arm by the name (ag-, es-); the
// provider's own requests (its token-issuing token) go to edgeseal's arm, the
// rest (the admin's setup, edgeseal-unseal's revocations of stopped units'
// tokens) are logged as "other" and charged to neither. Per start: the
// requests of the arm from its `systemctl start` to a second after all tokens
// are held, per service. At steady state: both arms run together for
// agentWindow after all tokens are held, with the token period set to
// agentPeriod (the shortest edgeseal accepts) on both. Both clients renew with
// the API's LifetimeWatcher, which sleeps 2/3 of the remaining lease plus a
// jitter that is itself a fraction of it, so the renewal interval scales with
// the period. For each service, its requests in the window are grouped into
// renewal cycles (requests less than a second apart), and each cycle's
// interval is measured from the service's request before it (both clients
// renew once as soon as they hold the token, so the first interval runs from
// that renewal). Requests per service per hour at a period P are then
// (requests per cycle) × 3600 s / (mean interval × P / agentPeriod), plus a
// start's requests once per max TTL (720h on both arms: the token ends and
// the service logs in, or asks the provider, again); printed for P = 1h,
// edgeseal's default tokens.service_period. A new token issued inside the
// window fails the benchmark.
//
// With -benchtime Nx for N > 1 the testing package calls a benchmark once
// with b.N = 1 before the real run: that probe returns at once (see
// agentProbe), so each server's table is measured and printed once.
func BenchmarkAgentSideBySide(b *testing.B) {
	onEachServerBench(b, agentSideBySide)
}

const (
	// agentPeriod is the period of both arms' tokens while measuring: the
	// shortest tokens.service_period edgeseal accepts, so renewals come often.
	agentPeriod = time.Minute
	// agentReportPeriod is the period the steady-state rate is printed for:
	// edgeseal's default tokens.service_period.
	agentReportPeriod = time.Hour
	// agentWindow is how long both arms run together after their tokens are
	// held: two renewal cycles of agentPeriod (each about 2/3 of it, plus jitter).
	agentWindow = 100 * time.Second
	// agentIdleExit is the provider's tokend.idle_exit in this device.
	agentIdleExit = 3 * time.Second
	// agentMaxN is the most services of an arm.
	agentMaxN = 50
	// agentAudit is the audit log, in the server's state directory (the only
	// one its unit may write).
	agentAudit = "/var/lib/edgeseal-vault/bench-audit.log"
	// agentDir is where the agents' configs and AppRole credentials are, in
	// the device (under the read-only /etc/edgeseal bound from the host).
	agentDir = "/etc/edgeseal/bench-agent"
)

var agentCounts = []int{1, 10, 50}

// agentUnit is an agent's unit: DynamicUser, its AppRole credentials from
// root-only files through LoadCredential=, its sink in its RuntimeDirectory.
const agentUnit = `[Unit]
Description=Vault Agent of %[1]s: AppRole auto-auth, file sink
After=edgeseal.target

[Service]
DynamicUser=yes
RuntimeDirectory=%[1]s
# The agent is the server's CLI, which looks for its token helper's config in
# $HOME; a dynamic user has none.
Environment=HOME=/run/%[1]s
LoadCredential=role_id:` + agentDir + `/%[1]s/role_id
LoadCredential=secret_id:` + agentDir + `/%[1]s/secret_id
ExecStart=%[2]s agent -config=` + agentDir + `/%[1]s/agent.hcl
`

// agentConfig is an agent's config: approle auto-auth, one file sink.
const agentConfig = `vault {
  address = "%[2]s"
  ca_cert = "/run/edgeseal/pki/ca.crt"
}
auto_auth {
  method "approle" {
    config = {
      role_id_file_path = "/run/credentials/%[1]s.service/role_id"
      secret_id_file_path = "/run/credentials/%[1]s.service/secret_id"
      remove_secret_id_file_after_reading = false
    }
  }
  sink "file" {
    config = {
      path = "/run/%[1]s/token"
    }
  }
}
`

// tokenUnit is an edgeseal service's unit: app-one's, under another name.
const tokenUnit = `[Unit]
Description=%[1]s: fetches its Vault token through the socket and renews it
Requires=edgeseal.target
After=edgeseal.target

[Service]
DynamicUser=yes
RuntimeDirectory=%[1]s
ExecStart=/usr/bin/edgeseal token fetch --out /run/%[1]s/token.json --renew --quiet
`

// agentProbe says whether this call is the testing package's b.N = 1 probe
// that precedes the real run under -benchtime Nx with N > 1.
func agentProbe(b *testing.B) bool {
	f := flag.Lookup("test.benchtime")
	if f == nil || b.N != 1 {
		return false
	}
	v := f.Value.String()
	n, err := strconv.Atoi(strings.TrimSuffix(v, "x"))
	return strings.HasSuffix(v, "x") && err == nil && n > 1
}

func agentName(arm string, i int) string { return fmt.Sprintf("%s-%d", arm, i) }

// agentArm is the units and token files of one arm's first n services.
func agentArm(arm string, n int) (units, files []string) {
	for i := range n {
		name := agentName(arm, i)
		units = append(units, name+".service")
		if arm == "ag" {
			files = append(files, "/run/"+name+"/token")
		} else {
			files = append(files, "/run/"+name+"/token.json")
		}
	}
	return units, files
}

func agentSideBySide(b *testing.B, srv testbed.Server) {
	if agentProbe(b) {
		return
	}
	d := newDevice(b, false, func(c *config.Config) {
		c.Tokend.IdleExit = config.Duration(agentIdleExit)
		c.Tokens.ServicePeriod = config.Duration(agentPeriod)
		c.Services = nil
		for i := range agentMaxN {
			// The agents' services are named in the config for their policies
			// only: a uid no process has.
			c.Services = append(c.Services,
				config.Service{Name: agentName("ag", i), UIDs: []uint32{uint32(61000 + i)}},
				config.Service{Name: agentName("es", i), Units: []string{agentName("es", i) + ".service"}})
		}
	}, withServer(srv))
	for i := range agentMaxN {
		ag, es := agentName("ag", i), agentName("es", i)
		writeFile(b, filepath.Join(d.units, ag+".service"), []byte(fmt.Sprintf(agentUnit, ag, srv.InstallPath)), 0o644)
		writeFile(b, filepath.Join(d.units, es+".service"), []byte(fmt.Sprintf(tokenUnit, es)), 0o644)
	}
	d.run("systemctl", "daemon-reload")
	d.start()
	agentAuditOn(b, d)
	agentAppRoles(b, d)

	var rows [][]string
	var details []string
	for _, n := range agentCounts {
		r, line := agentMeasure(b, d, n)
		rows = append(rows, r)
		details = append(details, line)
	}
	// The testing package keeps a benchmark's first 10 lines of output: the
	// table (6 lines), then a line of details per N.
	table(b, fmt.Sprintf("Vault Agent (one per service, AppRole, file sink) against edgeseal, %s: time and memory N=%d runs each (median, min to max); "+
		"requests measured over %v at a %v token period, scaled to a %v period", srv, b.N, agentWindow, agentPeriod, agentReportPeriod),
		[]string{"services", "time to all tokens: agents", "edgeseal",
			"RSS serving: agents (sum)", "edgeseal provider", "edgeseal renewing clients (sum)",
			"RSS idle: agents (sum)", "edgeseal provider",
			"requests per service to get its token: agents", "edgeseal",
			"requests/service/hour at steady state: agents", "edgeseal"}, rows)
	b.Log(strings.Join(details, "\n"))
}

// agentAuditOn enables a file audit device, the server's record of each
// request. OpenBao's API enables one only if its config allows it: that line
// goes into the server's config directory and the server is restarted (and
// unsealed again by edgeseal-unseal) first.
func agentAuditOn(b *testing.B, d *device) {
	if d.srv.Name == "openbao" {
		d.run("sh", "-c", `cd /run/edgeseal/vault && echo '{"unsafe_allow_api_audit_creation": true}' > zz-bench-audit.json && `+
			`chown --reference=vault.json zz-bench-audit.json && chmod --reference=vault.json zz-bench-audit.json`)
		d.run("systemctl", "restart", "edgeseal-vault.service")
		d.waitUnsealed(30 * time.Second)
	}
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	if _, err := c.Logical().Write("sys/audit/bench", map[string]any{"type": "file", "options": map[string]any{"file_path": agentAudit}}); err != nil {
		b.Fatalf("cannot enable the file audit device: %v", err)
	}
}

// agentAppRoles enables AppRole and makes each agent's role, credentials and
// config: tokens of the service's policy, with the period and explicit max
// TTL of edgeseal's service tokens.
func agentAppRoles(b *testing.B, d *device) {
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	if _, err := c.Logical().Write("sys/auth/approle", map[string]any{"type": "approle"}); err != nil {
		b.Fatalf("cannot enable AppRole: %v", err)
	}
	for i := range agentMaxN {
		name := agentName("ag", i)
		policy := "edgeseal-svc-" + name
		if p, err := c.Sys().GetPolicy(policy); err != nil || p == "" {
			b.Fatalf("edgeseal made no policy %s for the configured service %s: %v", policy, name, err)
		}
		if _, err := c.Logical().Write("auth/approle/role/"+name, map[string]any{
			"token_policies":         []string{policy},
			"token_period":           int(agentPeriod.Seconds()),
			"token_explicit_max_ttl": int(d.cfg.Tokens.ServiceMaxTTL.D().Seconds()),
			"token_type":             "service",
		}); err != nil {
			b.Fatalf("cannot write the AppRole role %s: %v", name, err)
		}
		rid, err := c.Logical().Read("auth/approle/role/" + name + "/role-id")
		if err != nil || rid == nil {
			b.Fatalf("cannot read the role id of %s: %v", name, err)
		}
		sid, err := c.Logical().Write("auth/approle/role/"+name+"/secret-id", nil)
		if err != nil || sid == nil {
			b.Fatalf("cannot make a secret id for %s: %v", name, err)
		}
		dir := filepath.Join(d.etc, "bench-agent", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		writeFile(b, filepath.Join(dir, "role_id"), []byte(fmt.Sprint(rid.Data["role_id"])), 0o600)
		writeFile(b, filepath.Join(dir, "secret_id"), []byte(fmt.Sprint(sid.Data["secret_id"])), 0o600)
		writeFile(b, filepath.Join(dir, "agent.hcl"), []byte(fmt.Sprintf(agentConfig, name, d.cfg.VaultAddr())), 0o644)
	}
}

// agentMeasure measures both arms with n services and returns the table row
// and a line of details.
func agentMeasure(b *testing.B, d *device, n int) (row []string, details string) {
	agUnits, agFiles := agentArm("ag", n)
	esUnits, esFiles := agentArm("es", n)
	provider := []string{"edgeseal-tokend.service"}
	mk := func(name, unit string) *series { return newSeries(fmt.Sprintf("%s-%d", name, n), unit) }
	var (
		agTime, esTime      = mk("agents-time", "ms"), mk("edgeseal-time", "ms")
		agRSS, esRSS, clRSS = mk("agents-rss", "MB"), mk("provider-rss", "MB"), mk("clients-rss", "MB")
		agPss, esPss, clPss = mk("agents-pss", "MB"), mk("provider-pss", "MB"), mk("clients-pss", "MB")
		agHWM, esHWM        = mk("agents-hwm", "MB"), mk("provider-hwm", "MB")
		agStart, esStart    = mk("agents-start-requests", ""), mk("edgeseal-start-requests", "")
		esIdle              = mk("provider-idle-exit", "s")
		agPaths, esPaths    = map[string]int{}, map[string]int{}
		retried             int
	)
	for range b.N {
		// The agents alone.
		off, took, mem := agentStart(b, d, &retried, agUnits, agFiles, agUnits)
		time.Sleep(time.Second)
		counts := agentCount(b, d, off, "ag")
		agTime.AddDur(took)
		agRSS.Add(mem.sum(agUnits, "rss"))
		agHWM.Add(mem.sum(agUnits, "hwm"))
		agPss.Add(mem.sum(agUnits, "pss"))
		agStart.Add(float64(counts.arm["ag"]) / float64(n))
		counts.add(agPaths, "ag")
		d.run(append([]string{"systemctl", "stop"}, agUnits...)...)

		// edgeseal alone, the provider stopped (it starts on the first connection).
		agentWaitGone(b, d, 2*agentIdleExit+10*time.Second)
		off, took, mem = agentStart(b, d, &retried, esUnits, esFiles, append(slices.Clone(provider), esUnits...))
		held := time.Now()
		time.Sleep(time.Second)
		counts = agentCount(b, d, off, "es")
		esTime.AddDur(took)
		esRSS.Add(mem.sum(provider, "rss"))
		esHWM.Add(mem.sum(provider, "hwm"))
		esPss.Add(mem.sum(provider, "pss"))
		clRSS.Add(mem.sum(esUnits, "rss"))
		clPss.Add(mem.sum(esUnits, "pss"))
		esStart.Add(float64(counts.arm["es"]) / float64(n))
		counts.add(esPaths, "es")
		agentWaitGone(b, d, 2*agentIdleExit+10*time.Second)
		esIdle.Add(time.Since(held).Seconds())
		d.run(append([]string{"systemctl", "stop"}, esUnits...)...)
	}

	// Steady state: both arms together, the provider idle; then the memory
	// of what still runs.
	agentWaitGone(b, d, 2*agentIdleExit+10*time.Second)
	agentStart(b, d, &retried, append(slices.Clone(agUnits), esUnits...), append(slices.Clone(agFiles), esFiles...), nil)
	// Both clients renew once as soon as they hold the token, which may be
	// just after its file is written: that is the start's.
	time.Sleep(2 * time.Second)
	off := agentAuditSize(b, d)
	time.Sleep(agentWindow)
	agentWaitGone(b, d, 2*agentIdleExit+10*time.Second)
	_, mem, _ := agentStartAll(b, d, nil, nil, append(slices.Clone(agUnits), esUnits...))
	entries := agentEntries(b, d, 0)
	ag := agentSteady(b, d, entries, "ag", n, off, agStart.Median())
	es := agentSteady(b, d, entries, "es", n, off, esStart.Median())
	d.run(append(append([]string{"systemctl", "stop"}, agUnits...), esUnits...)...)

	for _, s := range []*series{agTime, esTime, agRSS, esRSS, clRSS} {
		b.ReportMetric(s.Median(), s.Name()+"-"+s.Unit())
	}
	b.ReportMetric(ag.hourly(), fmt.Sprintf("agents-%d-requests/service/h", n))
	b.ReportMetric(es.hourly(), fmt.Sprintf("edgeseal-%d-requests/service/h", n))
	row = []string{
		strconv.Itoa(n),
		agentBrief(agTime), agentBrief(esTime),
		agentBrief(agRSS), agentBrief(esRSS), agentBrief(clRSS),
		num(mem.sum(agUnits, "rss")) + " MB", fmt.Sprintf("0 (exited %s after all tokens were held; idle_exit %v)", agentBrief(esIdle), agentIdleExit),
		agentBrief(agStart), agentBrief(esStart),
		ag.perHour(), es.perHour(),
	}
	details = fmt.Sprintf("%d services: a start's requests, per service: agents %s; edgeseal %s. Steady state: agents %v; edgeseal %v. "+
		"Pss sums while serving: agents %s, provider %s, clients %s; peak RSS (VmHWM): agents %s, provider %s; renewing clients' RSS idle %s MB; starts the test bed failed at step CGROUP, run again: %d",
		n, agentPerService(agPaths, b.N*n), agentPerService(esPaths, b.N*n), ag, es,
		agentBrief(agPss), agentBrief(esPss), agentBrief(clPss), agentBrief(agHWM), agentBrief(esHWM), num(mem.sum(esUnits, "rss")), retried)
	return row, details
}

// agentPerService is "auth/approle/login 1, auth/token/renew-self 1": the
// requests by path over runs services' starts.
func agentPerService(paths map[string]int, runs int) string {
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		parts = append(parts, fmt.Sprintf("%s %s", p, num(float64(paths[p])/float64(runs))))
	}
	return strings.Join(parts, ", ")
}

// agentBrief is "12.3 ms (11.0 to 14.2)", the README's form.
func agentBrief(s *series) string {
	lo, med, hi := s.Stats()
	unit := ""
	if s.Unit() != "" {
		unit = " " + s.Unit()
	}
	if len(s.Vals()) == 1 {
		return num(med) + unit
	}
	return fmt.Sprintf("%s%s (%s to %s)", num(med), unit, num(lo), num(hi))
}

// agentMem is what agentStartAll read of each unit's main process, in kB.
type agentMem map[string]map[string]float64

// sum is the sum over units of one figure, in MB (2^20 bytes).
func (m agentMem) sum(units []string, what string) float64 {
	var s float64
	for _, u := range units {
		s += m[u][what]
	}
	return s / 1024
}

// agentAttempts bounds the starts of a set of units: the test bed's systemd
// fails a unit at times before it runs anything (status 219/CGROUP, "Failed
// at step CGROUP": the race testbed.Boot knows), mostly when it starts many
// at once, which a real device does not.
const agentAttempts = 3

// agentStart runs agentStartAll, again after a unit failed at step CGROUP
// (the units stopped, the provider gone), and returns the audit log's size
// before the attempt that counted too. retried counts the attempts thrown away.
func agentStart(b *testing.B, d *device, retried *int, units, files, memUnits []string) (int64, time.Duration, agentMem) {
	for attempt := 1; ; attempt++ {
		off := agentAuditSize(b, d)
		took, mem, ok := agentStartAll(b, d, units, files, memUnits)
		if ok {
			return off, took, mem
		}
		if attempt == agentAttempts {
			b.Fatalf("the test bed failed a unit at step CGROUP in each of %d starts of %d units", agentAttempts, len(units))
		}
		*retried++
		d.run(append([]string{"systemctl", "stop"}, units...)...)
		d.run(append([]string{"systemctl", "reset-failed"}, units...)...)
		agentWaitGone(b, d, 2*agentIdleExit+10*time.Second)
	}
}

// agentStartAll starts units with one `systemctl start --no-block` inside the
// device, waits there until every file is written (polled every 10 ms), and
// returns how long that took, from before the call, and the memory of each
// unit of memUnits read right then; or ok false if a unit failed at step
// CGROUP. A unit of memUnits without a main process, or any other failure,
// fails the benchmark.
func agentStartAll(b *testing.B, d *device, units, files, memUnits []string) (took time.Duration, mem agentMem, ok bool) {
	var pairs []string
	for i, f := range files {
		pairs = append(pairs, units[i]+":"+f)
	}
	var sb strings.Builder
	sb.WriteString("set -e\nt0=$(date +%s%N)\n")
	if len(units) > 0 {
		fmt.Fprintf(&sb, "systemctl start --no-block %s\n", strings.Join(units, " "))
	}
	fmt.Fprintf(&sb, `deadline=$((t0 + 120000000000))
for uf in %s; do
  u=${uf%%%%:*} f=${uf#*:} i=0
  while [ ! -s "$f" ]; do
    if [ "$(date +%%s%%N)" -gt "$deadline" ]; then echo "no token file $f after 120 s" >&2; exit 1; fi
    i=$((i + 1))
    if [ $((i %% 50)) = 0 ] && [ "$(systemctl is-active "$u")" != active ]; then
      echo "$u is $(systemctl is-active "$u") and wrote no $f" >&2
      if [ "$(systemctl show -p ExecMainStatus --value "$u")" = 219 ]; then exit 3; fi
      exit 1
    fi
    sleep 0.01
  done
done
t1=$(date +%%s%%N)
echo took $((t1 - t0))
for u in %s; do
  pid=$(systemctl show -p MainPID --value "$u")
  if [ "$pid" = 0 ]; then echo "$u has no main process" >&2; exit 1; fi
  echo mem "$u" "$pid" $(sed -n 's/^VmRSS:[^0-9]*\([0-9]*\).*/\1/p' /proc/$pid/status) \
    $(sed -n 's/^VmHWM:[^0-9]*\([0-9]*\).*/\1/p' /proc/$pid/status) $(sed -n 's/^Pss:[^0-9]*\([0-9]*\).*/\1/p' /proc/$pid/smaps_rollup)
done
`, strings.Join(pairs, " "), strings.Join(memUnits, " "))
	out, stderr, err := d.m.Run(b.Context(), "sh", "-c", sb.String())
	if ee, isExit := err.(*exec.ExitError); isExit && ee.ExitCode() == 3 {
		return 0, nil, false
	}
	if err != nil {
		j, _, _ := d.m.Run(b.Context(), "journalctl", "--no-pager", "-o", "short-monotonic", "-n", "200", "-u", "ag-*", "-u", "es-*", "-u", "edgeseal-tokend.service")
		b.Fatalf("starting %d units and reading %d processes' memory: %v\n%s%s\n%s", len(units), len(memUnits), err, out, stderr, j)
	}
	took = -1
	mem = agentMem{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "took":
			ns, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				b.Fatalf("bad line %q", line)
			}
			took = time.Duration(ns)
		case len(f) == 6 && f[0] == "mem":
			m := map[string]float64{}
			for i, k := range []string{"rss", "hwm", "pss"} {
				v, err := strconv.ParseFloat(f[3+i], 64)
				if err != nil || v <= 0 {
					b.Fatalf("bad memory line %q", line)
				}
				m[k] = v
			}
			mem[f[1]] = m
		default:
			b.Fatalf("bad line %q in:\n%s", line, out)
		}
	}
	if took < 0 || len(mem) != len(memUnits) {
		b.Fatalf("no time or not every unit's memory (%d of %d) in:\n%s", len(mem), len(memUnits), out)
	}
	return took, mem, true
}

// agentWaitGone waits until the provider has exited (idle) and has no main
// process.
func agentWaitGone(b *testing.B, d *device, limit time.Duration) {
	t0 := time.Now()
	for {
		if d.isActive("edgeseal-tokend.service") == "inactive" && d.mainPID("edgeseal-tokend.service") == "0" {
			return
		}
		if time.Since(t0) > limit {
			b.Fatalf("edgeseal-tokend is still %s %v after its last request (idle_exit %v)\n%s",
				d.isActive("edgeseal-tokend.service"), limit, agentIdleExit, d.journal())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func agentAuditSize(b *testing.B, d *device) int64 {
	out := strings.TrimSpace(d.run("stat", "-c", "%s", agentAudit))
	n, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		b.Fatalf("audit log size %q: %v", out, err)
	}
	return n
}

// agentEntry is one audited response: when, the path, which service and arm
// it is charged to.
type agentEntry struct {
	at      time.Time
	offset  int64
	path    string
	service string // "ag-3", "es-7", or "" (the provider's own, or other)
	arm     string // "ag", "es", or "other"
	issue   bool   // a login or token-create: the token's issue
}

var agentServicePolicy = regexp.MustCompile(`^edgeseal-svc-((ag|es)-[0-9]+)$`)

// agentEntries reads the audit log's responses from offset on.
func agentEntries(b *testing.B, d *device, from int64) []agentEntry {
	out := d.run("tail", "-c", "+"+strconv.FormatInt(from+1, 10), agentAudit)
	var entries []agentEntry
	offset := from
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Bytes()
		at := offset
		offset += int64(len(line)) + 1
		var e struct {
			Time string `json:"time"`
			Type string `json:"type"`
			Auth struct {
				Policies []string `json:"policies"`
			} `json:"auth"`
			Request struct {
				Path string `json:"path"`
			} `json:"request"`
			Response struct {
				Auth struct {
					Policies []string `json:"policies"`
				} `json:"auth"`
			} `json:"response"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			b.Fatalf("audit log line at %d: %v: %q", at, err, line)
		}
		if e.Type != "response" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, e.Time)
		if err != nil {
			b.Fatalf("audit log time %q: %v", e.Time, err)
		}
		ent := agentEntry{at: t, offset: at, path: e.Request.Path, arm: "other"}
		for _, p := range append(slices.Clone(e.Auth.Policies), e.Response.Auth.Policies...) {
			if m := agentServicePolicy.FindStringSubmatch(p); m != nil {
				ent.service, ent.arm = m[1], m[2]
			}
		}
		switch {
		case ent.service == "" && slices.Contains(e.Auth.Policies, "edgeseal-tokend"):
			ent.arm = "es" // the provider's own
		case strings.HasPrefix(e.Request.Path, "auth/approle/login"):
			ent.arm = "ag"
		}
		// A renewal's response names the token's policies too: an issue is a
		// login or a token-create that made the service's token.
		ent.issue = ent.service != "" && slices.Contains(e.Response.Auth.Policies, "edgeseal-svc-"+ent.service) &&
			(strings.HasPrefix(e.Request.Path, "auth/approle/login") || strings.HasPrefix(e.Request.Path, "auth/token/create"))
		entries = append(entries, ent)
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	return entries
}

// agentCounts is the requests of an audit log's stretch by arm, and by path
// for the log.
type agentCounted struct {
	arm   map[string]int
	paths map[string]int
}

func (c agentCounted) String() string {
	var keys []string
	for k := range c.paths {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, c.paths[k]))
	}
	return fmt.Sprintf("agents %d, edgeseal %d, other %d (%s)", c.arm["ag"], c.arm["es"], c.arm["other"], strings.Join(parts, ", "))
}

// add adds the counts of arm's paths to paths.
func (c agentCounted) add(paths map[string]int, arm string) {
	for k, v := range c.paths {
		if p, ok := strings.CutPrefix(k, arm+":"); ok {
			paths[p] += v
		}
	}
}

// agentCount counts the audited requests from offset from on; arm's must be
// there (a start with none means the audit log missed them).
func agentCount(b *testing.B, d *device, from int64, arm string) agentCounted {
	c := agentCounted{arm: map[string]int{}, paths: map[string]int{}}
	for _, e := range agentEntries(b, d, from) {
		c.arm[e.arm]++
		c.paths[e.arm+":"+e.path]++
	}
	if c.arm[arm] == 0 {
		b.Fatalf("no request of the %s arm in the audit log after its start: %v", arm, c)
	}
	return c
}

// agentRate is an arm's steady state: its requests in the window, grouped
// into renewal cycles, the intervals from each token's last request before the
// window to each cycle, and the requests of a start (the token's issue), per
// service.
type agentRate struct {
	requests, cycles int
	intervals        []float64 // seconds
	paths            map[string]int
	start            float64
	maxTTL           time.Duration
}

func (r agentRate) String() string {
	return fmt.Sprintf("%d requests in %d renewal cycles (%s), a cycle every %s s (mean of %d intervals) at a %v period",
		r.requests, r.cycles, agentPerService(r.paths, 1), num(r.meanInterval()), len(r.intervals), agentPeriod)
}

func (r agentRate) meanInterval() float64 {
	var s float64
	for _, v := range r.intervals {
		s += v
	}
	return s / float64(len(r.intervals))
}

func (r agentRate) perCycle() float64 { return float64(r.requests) / float64(r.cycles) }

// scaledInterval is the cycle's interval at agentReportPeriod, in seconds.
func (r agentRate) scaledInterval() float64 {
	return r.meanInterval() * float64(agentReportPeriod) / float64(agentPeriod)
}

// hourly is the requests per service per hour at agentReportPeriod: the
// renewal cycles', and a start's once per max TTL (a new login or
// token-create when the token ends).
func (r agentRate) hourly() float64 {
	return r.perCycle()*3600/r.scaledInterval() + r.start/r.maxTTL.Hours()
}

// perHour is hourly with what it comes from.
func (r agentRate) perHour() string {
	return fmt.Sprintf("%s (%s per renewal every %s min, and %s per %s for a new token)",
		num(r.hourly()), num(r.perCycle()), num(r.scaledInterval()/60), num(r.start), strings.TrimSuffix(r.maxTTL.String(), "0m0s"))
}

// agentSteady is arm's steady state over n services: the requests audited
// from offset from on, where its tokens were all held; start is the requests
// of a start, per service.
func agentSteady(b *testing.B, d *device, entries []agentEntry, arm string, n int, from int64, start float64) agentRate {
	r := agentRate{paths: map[string]int{}, start: start, maxTTL: d.cfg.Tokens.ServiceMaxTTL.D()}
	for i := range n {
		svc := agentName(arm, i)
		var prev, last time.Time
		for _, e := range entries {
			if e.service != svc {
				continue
			}
			if e.offset < from {
				// Both clients renew at once when they get the token: a
				// cycle runs from the service's last request before the window.
				prev = e.at
				continue
			}
			if prev.IsZero() {
				b.Fatalf("%s: requests at steady state but none before", svc)
			}
			if e.issue {
				b.Fatalf("%s: a new token was issued at steady state (%s at %v)", svc, e.path, e.at)
			}
			r.requests++
			r.paths[e.path]++
			if last.IsZero() || e.at.Sub(last) > time.Second {
				r.cycles++
				r.intervals = append(r.intervals, e.at.Sub(prev).Seconds())
				prev = e.at
			}
			last = e.at
		}
	}
	// The provider's own requests at steady state (its token-issuing
	// token's renewal) are edgeseal's cost too.
	for _, e := range entries {
		if e.offset >= from && e.arm == arm && e.service == "" {
			r.requests++
			r.paths["(provider) "+e.path]++
		}
	}
	if r.cycles == 0 {
		b.Fatalf("%s arm: no renewal in %v at steady state (period %v)", arm, agentWindow, agentPeriod)
	}
	return r
}
