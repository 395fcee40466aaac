//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

const (
	// nobodyID is the uid and gid of the unprivileged attacker.
	nobodyID = 65534
	// forgeryWait is how long a forged signal is given to do harm: twice the
	// second within which a real failure revokes a token
	// (TestEachServiceGetsItsOwnToken and the end of the test below).
	forgeryWait = 2 * time.Second
	// revokedLine is what edgeseal-unseal logs for each token it revokes
	// because its unit failed.
	revokedLine = "revoked the token of a unit that failed or stopped"
	// lostWatchLine is what edgeseal-unseal logs when its watch on failed
	// units ends and is made again.
	lostWatchLine = "lost the watch on units that fail or stop"
)

// forgedFailure is `gdbus emit` of the PropertiesChanged systemd sends when
// flaky.service fails; dest, if not "", sends it to that connection alone.
func forgedFailure(dest string) []string {
	args := []string{"gdbus", "emit", "--system"}
	if dest != "" {
		args = append(args, "--dest", dest)
	}
	return append(args, "-o", "/org/freedesktop/systemd1/unit/flaky_2eservice",
		"-s", "org.freedesktop.DBus.Properties.PropertiesChanged",
		"org.freedesktop.systemd1.Unit", "{'ActiveState': <'failed'>, 'SubState': <'failed'>}", "@as []")
}

func TestAForgedUnitFailureSignalRevokesNoToken(t *testing.T) {
	testbed.Require(t, "gdbus", "busctl")
	ctx := context.Background()
	t.Log("Given a device booted with edgeseal whose config gives flaky.service (Restart=no) a token")
	d := newDevice(t, false, func(c *config.Config) {
		c.Services = []config.Service{{Name: "flaky", Units: []string{"flaky.service"}}}
	})
	writeFile(t, d.units+"/flaky.service", []byte(flakyUnit), 0o644)
	d.run("systemctl", "daemon-reload")
	d.run("systemctl", "enable", "edgeseal.target")
	d.start()
	t.Log("And flaky.service running, holding its token as a credential")
	d.run("systemctl", "start", "flaky.service")
	token := d.waitTokenFile("/run/credentials/flaky.service/vault-token")
	client := d.vaultClient()
	client.SetToken(token)
	tokenStillWorks := func() {
		t.Helper()
		if _, err := client.Auth().Token().LookupSelf(); err != nil {
			t.Fatalf("flaky.service's token no longer works (lookup-self: %v)\nedgeseal-unseal revoked: %s\n%s", err,
				testbed.GrepLines(d.m.Journal(t, "edgeseal-unseal.service"), revokedLine), d.journal())
		}
		if s := d.isActive("flaky.service"); s != "active" {
			t.Fatalf("flaky.service is %s, want active: the forgery must not be a real failure", s)
		}
		if j := testbed.GrepLines(d.m.Journal(t, "edgeseal-unseal.service"), revokedLine); strings.Contains(j, "unit=flaky.service") {
			t.Fatalf("edgeseal-unseal revoked a token of flaky.service:\n%s", j)
		}
	}

	t.Log("When nobody broadcasts, with gdbus emit, a PropertiesChanged signal saying flaky.service failed")
	if out, stderr, err := d.m.RunAs(ctx, nobodyID, nobodyID, forgedFailure("")...); err != nil {
		t.Fatalf("gdbus emit as nobody: %v\n%s%s", err, out, stderr)
	}
	time.Sleep(forgeryWait)
	t.Logf("Then, %v later, the token still works and edgeseal-unseal revoked nothing", forgeryWait)
	tokenStillWorks()

	t.Log("When nobody sends the same signal to each of edgeseal-unseal's bus connections alone, which no match rule filters")
	dests := busNamesOf(t, d, d.mainPID("edgeseal-unseal.service"))
	for _, dest := range dests {
		if out, stderr, err := d.m.RunAs(ctx, nobodyID, nobodyID, forgedFailure(dest)...); err != nil {
			t.Fatalf("gdbus emit --dest %s as nobody: %v\n%s%s", dest, err, out, stderr)
		}
	}
	time.Sleep(forgeryWait)
	t.Logf("Then, %v later, the token still works and edgeseal-unseal (%s on the bus) revoked nothing", forgeryWait, strings.Join(dests, ", "))
	tokenStillWorks()

	t.Log("When systemd re-executes, and is back on the bus under a new unique name")
	before := systemdBusName(d)
	d.run("systemctl", "daemon-reexec")
	after := systemdBusName(d)
	for deadline := time.Now().Add(10 * time.Second); after == "" || after == before; after = systemdBusName(d) {
		if time.Now().After(deadline) {
			t.Fatalf("systemd's bus name is %q 10s after daemon-reexec (%q before): this step needs it back under a new one", after, before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("(%s before, %s after)", before, after)
	t.Log("And flaky.service really crashes into the failed state")
	d.run("systemctl", "kill", "--signal=SIGKILL", "flaky.service")
	took := waitRevoked(t, d, token, 5*time.Second)
	t.Logf("Then its token is revoked %v after the kill", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("revoking a failed unit's token took %v, want within 1s", took)
	}
	if s := d.isActive("flaky.service"); s != "failed" {
		t.Errorf("flaky.service is %s, want failed", s)
	}
	// A watch that ends is watched again a second later, listing the failed
	// units then: the token is revoked, late. The watch must follow systemd
	// across its re-execution without ending.
	if j := testbed.GrepLines(d.m.Journal(t, "edgeseal-unseal.service"), lostWatchLine); j != "" {
		t.Errorf("edgeseal-unseal lost its watch on failed units when systemd re-executed:\n%s", j)
	}
	if j := testbed.GrepLines(d.m.Journal(t, "edgeseal-unseal.service"), revokedLine); !strings.Contains(j, "unit=flaky.service") {
		t.Errorf("the journal of edgeseal-unseal does not say flaky.service's token was revoked:\n%s", j)
	}
}

// systemdBusName is the unique name that owns org.freedesktop.systemd1, "" if
// none does.
func systemdBusName(d *device) string {
	out, _, err := d.m.Run(context.Background(), "busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
		"org.freedesktop.DBus", "GetNameOwner", "s", "org.freedesktop.systemd1")
	if err != nil {
		return ""
	}
	return strings.Trim(strings.TrimPrefix(strings.TrimSpace(out), "s "), `"`)
}

// busNamesOf lists, as nobody may, the unique bus names of the connections of
// process pid.
func busNamesOf(t *testing.T, d *device, pid string) []string {
	t.Helper()
	out, stderr, err := d.m.RunAs(context.Background(), nobodyID, nobodyID, "busctl", "list", "--unique", "--no-legend", "--no-pager")
	if err != nil {
		t.Fatalf("busctl list as nobody: %v\n%s", err, stderr)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == pid {
			names = append(names, f[0])
		}
	}
	if len(names) == 0 {
		t.Fatalf("edgeseal-unseal (pid %s) has no connection on the system bus:\n%s", pid, out)
	}
	return names
}
