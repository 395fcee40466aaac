//go:build integration

package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

const (
	// camDaemonUnit is the unit snapd writes for the daemon app cam.daemon,
	// reduced to what the test needs: it runs `edgeseal token fetch` once, as a
	// plain uid. It is the control of the forgery test: the genuine unit's
	// process gets the token, so the refusal below is about where the forger
	// runs, not about the config, the socket or the uid.
	camDaemonUnit = `[Unit]
Description=snap.cam.daemon.service as snapd would name it

[Service]
Type=oneshot
User=nobody
ExecStart=/usr/bin/edgeseal token fetch --out /tmp/cam/token.json
`
	// forgerScript runs in a unit with Delegate=yes, which may make cgroups
	// below its own: it makes one named like the snap daemon's unit, moves
	// itself there (python3, which then execs the client, writes "0" to
	// cgroup.procs: moving another process by its pid is refused with EINVAL
	// in the test bed's container), prints the cgroup it ended in, and asks
	// for a token.
	forgerScript = `set -e
cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
mkdir "$cg/snap.cam.daemon.service"
exec python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.write(fd, b"0")  # "0": the writing process itself
os.close(fd)
print("cgroup", open("/proc/self/cgroup").read().split("0::")[-1].strip(), file=sys.stderr)
os.execv("/usr/bin/edgeseal", ["edgeseal", "token", "fetch", "--out", "/tmp/forged/token.json"])
' "$cg/snap.cam.daemon.service/cgroup.procs"
`
)

// TestASnapIdentityCannotBeForgedFromADelegatedCgroup is finding 4 of issue 15:
// a process that may make cgroups (a unit with Delegate=yes, as a container
// manager has) names one like a snap daemon's unit. The token provider must
// take the snap app from the unit systemd reports, not from a path component.
func TestASnapIdentityCannotBeForgedFromADelegatedCgroup(t *testing.T) {
	testbed.Require(t, "python3")
	ctx := context.Background()
	t.Log("Given a device booted with edgeseal whose config has a service for the snap app cam.daemon")
	d := newDevice(t, false, func(c *config.Config) {
		c.Services = []config.Service{{Name: "cam", SnapApps: []string{"cam.daemon"}}}
	})
	writeFile(t, filepath.Join(d.units, "snap.cam.daemon.service"), []byte(camDaemonUnit), 0o644)
	d.run("systemctl", "daemon-reload")
	d.start()

	t.Log("When the unit snap.cam.daemon.service, as snapd names it, asks for a token as user nobody")
	if _, stderr, err := d.m.Run(ctx, "systemctl", "start", "snap.cam.daemon.service"); err != nil {
		t.Fatalf("the genuine snap.cam.daemon.service got no token: %v %s\n%s%s", err, stderr,
			d.m.Journal(t, "snap.cam.daemon.service"), d.m.Journal(t, "edgeseal-tokend.service"))
	}
	t.Log("Then it gets the token of service cam, as snap app cam.daemon")
	if j := d.m.Journal(t, "edgeseal-tokend.service"); !strings.Contains(j, "issued a token") || !strings.Contains(j, "snap app cam.daemon") {
		t.Fatalf("the journal does not show a token issued to snap app cam.daemon:\n%s", j)
	}

	t.Log("When a process of a unit with Delegate=yes, as the same user, moves itself into a cgroup it made,")
	t.Log("  /system.slice/delegated.service/snap.cam.daemon.service, and asks for a token")
	_, stderr, err := d.m.Run(ctx, "systemd-run", "--quiet", "--wait", "--pipe", "--unit=delegated",
		"-p", "Delegate=yes", "-p", "User=nobody", "/bin/sh", "-c", forgerScript)
	t.Logf("It said:\n%s", strings.TrimSpace(stderr))
	if !strings.Contains(stderr, "cgroup /system.slice/delegated.service/snap.cam.daemon.service") {
		t.Fatalf("the forger did not get into its snap-named cgroup (the test proves nothing): %v", err)
	}
	t.Log("Then it is refused, and told it was seen as a process of unit delegated.service (which systemd reports for it)")
	if err == nil || !strings.Contains(stderr, "refused") || !strings.Contains(stderr, "unit delegated.service") {
		t.Errorf("the forger: err %v; want a refusal naming unit delegated.service", err)
	}
	if strings.Contains(stderr, "snap app cam.daemon") {
		t.Errorf("the forger was seen as snap app cam.daemon")
	}
	if _, _, err := d.m.Run(ctx, "test", "-e", "/tmp/forged/token.json"); err == nil {
		t.Errorf("the forger got a token file")
	}
	t.Log("And the journal of edgeseal-tokend shows the refusal")
	j := d.m.Journal(t, "edgeseal-tokend.service")
	refusal := ""
	for line := range strings.Lines(j) {
		if strings.Contains(line, "refused a token request") && strings.Contains(line, "unit delegated.service") {
			refusal = line
		}
	}
	if refusal == "" {
		t.Errorf("no refusal of unit delegated.service in the journal:\n%s", j)
	} else {
		t.Logf("%s", strings.TrimSpace(refusal))
	}
}
