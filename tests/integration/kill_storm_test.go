//go:build integration

package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
)

// tokenStream is a configured service asking for its token again and again: one
// line per fetch in /tmp/stream/log, "<start ns> <end ns> <exit status>", until
// /tmp/stream/stop exists. A failed fetch is retried after a short pause, as a
// unit's Restart= would.
const tokenStream = `while [ ! -e /tmp/stream/stop ]; do
  t0=$(date +%s%N)
  edgeseal token fetch --out /tmp/stream/token.json --quiet 2>>/tmp/stream/errors
  rc=$?
  echo "$t0 $(date +%s%N) $rc" >> /tmp/stream/log
  [ $rc -eq 0 ] || sleep 0.05
done
`

// Figures of the kill storm.
const (
	stormSeed      = 15               // the random order of the kills, logged
	killsPerDaemon = 8                // SIGKILLs of each daemon in the storm
	unsealKills    = 12               // SIGKILLs of edgeseal-unseal in a row after it
	roundLimit     = 30 * time.Second // from a kill to the next token served
	// providerBack bounds the median time from a kill of the provider to the
	// next token: the next connection starts it, with nothing to wait for.
	providerBack = time.Second
)

// stormDaemons are killed in turn: the secret store, what unseals it, and the
// token provider.
var stormDaemons = []string{"edgeseal-vault.service", "edgeseal-unseal.service", "edgeseal-tokend.service"}

func TestRepeatedKillsOfEachDaemonCostOnlyTheRequestInFlight(t *testing.T) {
	ctx := context.Background()
	t.Log("Given a booted device whose config names collector (uid 1001), and a secret in its Vault")
	d := newDevice(t, false, func(c *config.Config) {
		c.Services = []config.Service{{Name: "collector", UIDs: []uint32{1001}}}
	})
	d.start()
	root := d.vaultClient()
	root.SetToken(d.rootToken())
	kept := make([]byte, 16)
	rand.Read(kept)
	if _, err := root.KVv2("secret").Put(ctx, "edgeseal/collector/kept", map[string]any{"v": hex.EncodeToString(kept)}); err != nil {
		t.Fatal(err)
	}

	t.Log("And collector fetching its token again and again")
	d.run("install", "-d", "-o", "1001", "-g", "1001", "/tmp/stream")
	streamLog := fmt.Sprintf("/proc/%d/root/tmp/stream/log", d.m.Leader())
	sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	streamDone := make(chan error, 1)
	go func() {
		_, stderr, err := d.m.RunAs(sctx, 1001, 1001, "sh", "-c", tokenStream)
		if err != nil {
			err = fmt.Errorf("%v: %s", err, stderr)
		}
		streamDone <- err
	}()
	stopStream := func() {
		d.run("touch", "/tmp/stream/stop")
		select {
		case err := <-streamDone:
			if err != nil {
				t.Errorf("the token stream: %v", err)
			}
		case <-time.After(time.Minute):
			t.Errorf("the token stream did not stop")
		}
	}
	defer func() {
		if sctx.Err() == nil {
			d.m.Run(ctx, "touch", "/tmp/stream/stop")
		}
	}()
	if _, err := servedAfter(t, streamLog, time.Now().Add(-time.Hour), roundLimit); err != nil {
		t.Fatalf("the token stream got no token: %v\n%s", err, d.journal())
	}

	var order []string
	for _, u := range stormDaemons {
		for range killsPerDaemon {
			order = append(order, u)
		}
	}
	mrand.New(mrand.NewPCG(stormSeed, stormSeed)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	t.Logf("When each daemon is killed with SIGKILL %d times, in a random order (seed %d): %s",
		killsPerDaemon, stormSeed, strings.Join(order, " "))
	// kill kills unit's main process and returns the time to the next token
	// served; the round ends when unit runs again, or (stopped, when it may
	// be) when systemd gave up restarting it.
	kill := func(round string, unit string, mayStop bool) time.Duration {
		t.Helper()
		pid := waitMainPID(t, d, unit, roundLimit)
		out := d.run("sh", "-c", "date +%s%N; kill -KILL "+pid)
		killed, err := parseNanos(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("kill time %q: %v", out, err)
		}
		took, err := servedAfter(t, streamLog, killed, roundLimit)
		if err != nil {
			st, _, _ := d.m.Run(ctx, "systemctl", "show", "-p", "Id", "-p", "ActiveState", "-p", "Result", "edgeseal-tokend.socket",
				"edgeseal-tokend.service", "edgeseal-unseal.service", "edgeseal-vault.service")
			t.Fatalf("%s (%s killed, pid %s): %v\n%s\n%s", round, unit, pid, err, st, d.journal())
		}
		t.Logf("%s: %s (pid %s) killed; a token served again %v later", round, unit, pid, took.Round(time.Millisecond))
		for deadline := time.Now().Add(roundLimit); ; time.Sleep(20 * time.Millisecond) {
			if now := d.mainPID(unit); now != "0" && now != pid && d.isActive(unit) == "active" {
				break
			}
			if mayStop && startLimitHit(d, unit) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s does not run again %v after the kill\n%s", round, unit, roundLimit, d.journal())
			}
		}
		if s := d.isActive("edgeseal-tokend.socket"); s != "active" {
			t.Fatalf("%s: edgeseal-tokend.socket is %s\n%s", round, s, d.journal())
		}
		return took
	}
	recovery := map[string][]time.Duration{}
	for i, unit := range order {
		recovery[unit] = append(recovery[unit], kill(fmt.Sprintf("round %d", i+1), unit, false))
	}
	t.Log("Then every round ended with a token served, the killed daemon running again, and the socket listening; from a kill to the next token:")
	for _, u := range stormDaemons {
		ds := slices.Sorted(slices.Values(recovery[u]))
		t.Logf("  %s: min %v, median %v, max %v (%d kills)", u, ds[0].Round(time.Millisecond),
			ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), len(ds))
	}
	if ds := slices.Sorted(slices.Values(recovery["edgeseal-tokend.service"])); ds[len(ds)/2] > providerBack {
		t.Errorf("a token was served again a median %v after a kill of the provider, want within %v", ds[len(ds)/2], providerBack)
	}

	t.Logf("When edgeseal-unseal.service is killed %d times more in a row (as many as systemd may give up restarting it after)", unsealKills)
	for i := range unsealKills {
		kill(fmt.Sprintf("unseal kill %d", i+1), "edgeseal-unseal.service", true)
		if startLimitHit(d, "edgeseal-unseal.service") {
			t.Logf("edgeseal-unseal.service hit its start limit: systemd does not restart it any more")
			break
		}
	}
	t.Log("Then the socket still listens and collector still gets its token: Vault stays unsealed, and the provider needs no edgeseal-unseal to serve")
	if _, err := servedAfter(t, streamLog, time.Now(), roundLimit); err != nil {
		t.Errorf("after the kills of edgeseal-unseal.service: %v\n%s", err, d.journal())
	}
	if s := d.isActive("edgeseal-tokend.socket"); s != "active" {
		t.Errorf("edgeseal-tokend.socket is %s", s)
	}
	stopStream()

	t.Log("And the secret written before the storm is intact")
	s, err := root.KVv2("secret").Get(ctx, "edgeseal/collector/kept")
	if err != nil || s.Data["v"] != hex.EncodeToString(kept) {
		t.Errorf("the secret after the storm: %v, %v; want %x", s, err, kept)
	}
}

// startLimitHit: systemd gave up restarting unit (a unit with Restart= that is
// failed rather than waiting to restart; systemd 252 keeps Result=signal).
func startLimitHit(d *device, unit string) bool {
	return d.isActive(unit) == "failed"
}

// waitMainPID waits until unit runs and returns its main pid.
func waitMainPID(t *testing.T, d *device, unit string, limit time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		if pid := d.mainPID(unit); pid != "0" && d.isActive(unit) == "active" {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not run %v later\n%s", unit, limit, d.journal())
		}
	}
}

// servedAfter waits until a fetch that started after since ended with a token,
// and returns the time from since to its end.
func servedAfter(t *testing.T, log string, since time.Time, limit time.Duration) (time.Duration, error) {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		data, _ := os.ReadFile(log)
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) != 3 || f[2] != "0" {
				continue
			}
			start, err1 := parseNanos(f[0])
			end, err2 := parseNanos(f[1])
			if err1 == nil && err2 == nil && start.After(since) {
				return end.Sub(since), nil
			}
		}
		if time.Now().After(deadline) {
			var tail []string
			if lines := strings.Split(strings.TrimSpace(string(data)), "\n"); len(lines) > 5 {
				tail = lines[len(lines)-5:]
			}
			return 0, fmt.Errorf("no token served within %v (last fetches, start end status: %v)", limit, tail)
		}
	}
}

func parseNanos(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, n), nil
}
