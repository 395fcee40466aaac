//go:build integration

package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
)

// TestAServiceThatStopsOrWaitsToRestartLosesItsToken: issue 15's tenth
// finding. A unit that stops cleanly, or exits and waits for Restart=, never
// enters the failed state; before the fix its token stayed valid until a
// reboot (or until the next run asked for a new one).
func TestAServiceThatStopsOrWaitsToRestartLosesItsToken(t *testing.T) {
	ctx := context.Background()
	t.Log("Given two services that take their token when they start: one runs until stopped, one exits and is restarted 30s later")
	d := newDevice(t, false, func(c *config.Config) {
		c.Services = []config.Service{
			{Name: "stopper", Units: []string{"stopper.service"}},
			{Name: "restarter", Units: []string{"restarter.service"}},
		}
	})
	for name, unit := range map[string]string{
		"stopper.service": `[Unit]
Requires=edgeseal.target
After=edgeseal.target
[Service]
RuntimeDirectory=stopper
RuntimeDirectoryPreserve=yes
ExecStart=/bin/sh -c 'edgeseal token fetch --quiet --out /run/stopper/token.json && exec sleep infinity'
`,
		"restarter.service": `[Unit]
Requires=edgeseal.target
After=edgeseal.target
[Service]
RuntimeDirectory=restarter
RuntimeDirectoryPreserve=yes
Restart=on-failure
RestartSec=30
ExecStart=/bin/sh -c 'edgeseal token fetch --quiet --out /run/restarter/token.json && sleep 1 && exit 3'
`,
	} {
		writeFile(t, filepath.Join(d.units, name), []byte(unit), 0o644)
	}
	d.run("systemctl", "daemon-reload")
	d.start()

	t.Log("When stopper.service is stopped cleanly")
	d.run("systemctl", "start", "stopper.service")
	stopper := d.waitTokenFile("/run/stopper/token.json")
	d.vaultOK(stopper, "token", "lookup")
	d.run("systemctl", "stop", "stopper.service")
	t.Log("Then its token is revoked within seconds")
	if took, ok := tokenDies(d, stopper, 5*time.Second); !ok {
		t.Errorf("stopper's token still works 5s after a clean stop\n%s", d.m.Journal(t, "edgeseal-unseal.service"))
	} else {
		t.Logf("revoked %v after the stop returned", took)
	}

	t.Log("When restarter.service takes its token and exits, to be restarted in 30s")
	d.run("systemctl", "start", "--no-block", "restarter.service")
	restarter := d.waitTokenFile("/run/restarter/token.json")
	t.Log("Then its token is revoked while it waits to be restarted")
	if took, ok := tokenDies(d, restarter, 10*time.Second); !ok {
		t.Errorf("restarter's token still works 10s after it exited\n%s", d.m.Journal(t, "edgeseal-unseal.service"))
	} else {
		t.Logf("revoked %v after the token was written", took)
	}
	if s, _, _ := d.m.Run(ctx, "systemctl", "show", "-p", "SubState", "--value", "restarter.service"); s != "auto-restart\n" {
		t.Errorf("restarter.service is %q, want auto-restart: the test did not test what it says", s)
	}
}

// tokenDies waits until token no longer works inside the device.
func tokenDies(d *device, token string, limit time.Duration) (time.Duration, bool) {
	t0 := time.Now()
	for time.Since(t0) < limit {
		if _, _, err := d.m.Run(context.Background(), append(d.vaultEnv(token), "token", "lookup")...); err != nil {
			return time.Since(t0), true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return limit, false
}
