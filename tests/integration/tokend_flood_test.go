//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// flooder is a local user's program that tries to take the token provider
// down: it opens argv[1] connections and holds them idle, without a request,
// until /tmp/flood/release exists; then it sends malformed requests one after
// another for argv[2] seconds, each a refusal (and, unbounded, a journal line).
// It prints what it saw as JSON.
const flooder = `import json, os, resource, select, socket, sys, time
n, hammer = int(sys.argv[1]), float(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/edgeseal/tokend.sock")  # blocking: waits while the queue is full
    held.append(s)
open("/tmp/flood/held", "w").close()
# How many the provider answered or closed at once, rather than holding them.
time.sleep(1)
p = select.poll()
for s in held:
    p.register(s, select.POLLIN | select.POLLHUP)
answered = len(p.poll(0))
deadline = time.time() + 120
while not os.path.exists("/tmp/flood/release") and time.time() < deadline:
    time.sleep(0.05)
for s in held:
    s.close()
sent, end = 0, time.time() + hammer
while time.time() < end:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect("/run/edgeseal/tokend.sock")
        s.settimeout(5)
        s.sendall(b"not a request\n")
        s.recv(4096)
        sent += 1
    except OSError:
        pass
    s.close()
print(json.dumps({"opened": n, "answered_at_once": answered, "malformed_sent": sent}))
`

// Figures of the flood story.
const (
	floodConns   = 4000             // idle connections the flooder opens and holds
	floodHammer  = 10               // seconds of malformed requests after that
	floodUID     = 4242             // the flooder: a local user no service is
	bystanderUID = 4243             // another unknown user, refused during the flood
	promptly     = 5 * time.Second  // a configured service's fetch during the flood
	floodLines   = 100              // refusal lines of the flooder the journal may hold
	floodTimeout = 3 * time.Minute  // the whole flood
	suppressWait = 30 * time.Second // for the provider's "suppressed" line
)

var floodRefusal = regexp.MustCompile(`(?i)refused.*uid[ =]` + fmt.Sprint(floodUID) + `\b`)

func TestAFloodOfIdleConnectionsFromOneUserLeavesTokensFlowing(t *testing.T) {
	testbed.Require(t, "python3")
	ctx := context.Background()
	t.Log("Given a booted device whose config names collector (uid 1001)")
	d := newDevice(t, false, func(c *config.Config) {
		c.Services = []config.Service{{Name: "collector", UIDs: []uint32{1001}}}
	})
	d.start()
	fetch := func(what string) time.Duration {
		t.Helper()
		t0 := time.Now()
		out, stderr, err := d.m.RunAs(ctx, 1001, 1001, "edgeseal", "token", "fetch", "--out", "/tmp/collector/token.json")
		took := time.Since(t0)
		if err != nil {
			t.Fatalf("collector's token fetch %s: %v\n%s%s\n%s", what, err, out, stderr, d.m.Journal(t, "edgeseal-tokend.service"))
		}
		return took
	}
	fetch("before the flood")
	provider := d.mainPID("edgeseal-tokend.service")

	t.Logf("When uid %d opens %d connections to the socket and holds them idle", floodUID, floodConns)
	writeFile(t, filepath.Join(d.etc, "flooder.py"), []byte(flooder), 0o644)
	d.run("install", "-d", "-o", fmt.Sprint(floodUID), "-g", fmt.Sprint(floodUID), "/tmp/flood")
	fctx, cancel := context.WithTimeout(ctx, floodTimeout)
	defer cancel()
	type result struct {
		out, stderr string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		out, stderr, err := d.m.RunAs(fctx, floodUID, floodUID, "python3", "/etc/edgeseal/flooder.py",
			fmt.Sprint(floodConns), fmt.Sprint(floodHammer))
		done <- result{out, stderr, err}
	}()
	for {
		if _, _, err := d.m.Run(ctx, "test", "-e", "/tmp/flood/held"); err == nil {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("the flooder ended before it held its connections: %v\n%s%s\n%s", r.err, r.out, r.stderr, d.m.Journal(t, "edgeseal-tokend.service"))
		case <-time.After(100 * time.Millisecond):
		}
	}

	t.Logf("Then collector still gets its token promptly (within %v)", promptly)
	if took := fetch("while the connections are held"); took > promptly {
		t.Errorf("collector's fetch took %v while the flood held its connections, want within %v", took, promptly)
	} else {
		t.Logf("it took %v", took.Round(time.Millisecond))
	}
	t.Logf("And another unknown user (uid %d) is refused, and that refusal is in the journal", bystanderUID)
	_, stderr, err := d.m.RunAs(ctx, bystanderUID, bystanderUID, "edgeseal", "token", "fetch", "--out", "/tmp/bystander/token.json")
	if err == nil || !strings.Contains(stderr, fmt.Sprintf("uid %d", bystanderUID)) {
		t.Errorf("token fetch as uid %d: err %v, stderr %q; want a refusal naming it", bystanderUID, err, stderr)
	}

	t.Logf("When it lets them go and sends malformed requests for %ds", floodHammer)
	d.run("touch", "/tmp/flood/release")
	time.Sleep(floodHammer * time.Second / 2)
	t.Log("Then collector still gets its token promptly")
	if took := fetch("during the malformed requests"); took > promptly {
		t.Errorf("collector's fetch took %v during the malformed requests, want within %v", took, promptly)
	}
	var r result
	select {
	case r = <-done:
	case <-fctx.Done():
		t.Fatalf("the flooder did not finish within %v", floodTimeout)
	}
	if r.err != nil {
		t.Fatalf("flooder: %v\n%s%s", r.err, r.out, r.stderr)
	}
	var seen struct {
		Opened         int `json:"opened"`
		AnsweredAtOnce int `json:"answered_at_once"`
		MalformedSent  int `json:"malformed_sent"`
	}
	if err := json.Unmarshal([]byte(r.out), &seen); err != nil {
		t.Fatalf("flooder's output %q: %v", r.out, err)
	}
	t.Logf("The flooder saw: %d opened, %d answered or closed at once, %d malformed requests sent", seen.Opened, seen.AnsweredAtOnce, seen.MalformedSent)

	t.Log("And the provider is the one that ran before the flood: it neither crashed nor restarted")
	if s := d.isActive("edgeseal-tokend.service"); s != "active" {
		t.Errorf("edgeseal-tokend.service is %s after the flood", s)
	}
	if now := d.mainPID("edgeseal-tokend.service"); now != provider {
		t.Errorf("edgeseal-tokend.service's main pid went from %s to %s during the flood", provider, now)
	}
	// What the unit's MemoryMax= and TasksMax= are measured against.
	t.Logf("Its peak memory and threads: %s", strings.Join(strings.Fields(d.run("grep", "-E", "^(VmHWM|Threads):", "/proc/"+provider+"/status")), " "))
	fetch("after the flood")

	t.Logf("And the journal holds at most %d refusal lines of uid %d, and a count of the ones it left out", floodLines, floodUID)
	var j string
	for deadline := time.Now().Add(suppressWait); ; time.Sleep(500 * time.Millisecond) {
		j = d.m.Journal(t, "edgeseal-tokend.service")
		if strings.Contains(j, "suppressed") || time.Now().After(deadline) {
			break
		}
	}
	var lines, suppressed []string
	for _, l := range strings.Split(j, "\n") {
		switch {
		case strings.Contains(l, "suppressed"):
			suppressed = append(suppressed, l)
		case floodRefusal.MatchString(l):
			lines = append(lines, l)
		}
	}
	t.Logf("%d refusal lines of uid %d; the suppressed counts:\n%s", len(lines), floodUID, strings.Join(suppressed, "\n"))
	if len(lines) > floodLines {
		t.Errorf("%d refusal lines of uid %d in the journal, want at most %d; the first ones:\n%s",
			len(lines), floodUID, floodLines, strings.Join(lines[:5], "\n"))
	}
	if !regexp.MustCompile(`uid[ =]` + fmt.Sprint(floodUID) + `\b.*suppressed|suppressed.*uid[ =]` + fmt.Sprint(floodUID) + `\b`).MatchString(strings.Join(suppressed, "\n")) {
		t.Errorf("no line counts the suppressed refusals of uid %d", floodUID)
	}
	if !regexp.MustCompile(`refused.*uid[ =]` + fmt.Sprint(bystanderUID) + `\b`).MatchString(j) {
		t.Errorf("the refusal of uid %d during the flood is not in the journal", bystanderUID)
	}
	t.Log("And journald dropped none of the provider's lines")
	if all := d.m.Journal(t, ""); regexp.MustCompile(`Suppressed \d+ messages from edgeseal-tokend`).MatchString(all) {
		t.Errorf("journald suppressed lines of the provider:\n%s", testbed.GrepLines(all, "Suppressed"))
	}
}
