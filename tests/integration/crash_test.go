//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/secretstore"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// crashAt makes the next start of edgeseal-unseal.service kill itself with SIGKILL
// at step, through a runtime drop-in (gone at the next boot, as a power cut
// leaves nothing of the process either), and starts the target, which fails.
func crashAt(t *testing.T, d *device, step secretstore.Step) {
	t.Helper()
	d.run("mkdir", "-p", "/run/systemd/system/edgeseal-unseal.service.d")
	d.run("sh", "-c", "printf '[Service]\\nEnvironment=EDGESEAL_CRASH_AT="+string(step)+"\\nRestart=no\\n' > /run/systemd/system/edgeseal-unseal.service.d/crash.conf")
	d.run("systemctl", "daemon-reload")
	if _, _, err := d.m.Run(context.Background(), "systemctl", "start", "edgeseal.target"); err == nil {
		t.Fatalf("crash at %s: edgeseal.target started anyway", step)
	}
	out := d.run("systemctl", "show", "-p", "Result", "-p", "ExecMainStatus", "edgeseal-unseal.service")
	if !strings.Contains(out, "Result=signal") || !strings.Contains(out, "ExecMainStatus=9") {
		t.Fatalf("crash at %s: unseal service did not die of SIGKILL: %s\n%s", step, out, d.m.Journal(t, "edgeseal-unseal.service"))
	}
}

// recovers reboots the device after a crash and checks the next boot ends with
// Vault unsealed and set up, and the secret written before still readable.
func recovers(t *testing.T, d *device, step secretstore.Step, secret string) {
	t.Helper()
	d.m.Reboot(t)
	d.start()
	d.waitUnsealed(10 * time.Second)
	if st := d.status(); st["ready"] != true {
		t.Fatalf("after a crash at %s and a reboot: %v", step, st)
	}
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	if n := countRootTokens(t, c); n != 2 {
		t.Errorf("after a crash at %s: %d root tokens, want edgeseal's admin token and the maintenance one", step, n)
	}
	if secret == "" {
		return
	}
	s, err := c.KVv2("secret").Get(context.Background(), "edgeseal/app-one/db")
	if err != nil || s.Data["v"] != secret {
		t.Fatalf("after a crash at %s: secret %v, %v", step, s, err)
	}
}

// The steps come first and the servers under them (vault-initialized/openbao):
// docs/threat-model.md cites a step's subtest by its name.
func TestCrashAtEveryStepOfFirstBootRecoversOnNextBoot(t *testing.T) {
	for _, step := range secretstore.FirstBootSteps {
		t.Run(string(step), func(t *testing.T) {
			onEachServer(t, func(t *testing.T, srv testbed.Server) { crashAtFirstBoot(t, srv, step) })
		})
	}
}

func crashAtFirstBoot(t *testing.T, srv testbed.Server, step secretstore.Step) {
	t.Logf("Given a new device running %s whose first boot crashes (SIGKILL) at %s", srv, step)
	d := newDevice(t, false, nil, withServer(srv))
	crashAt(t, d, step)
	t.Log("When it boots again, Then Vault is unsealed and set up")
	recovers(t, d, step, "")
	if step == secretstore.StepInitialized {
		t.Log("And the Vault whose key was lost was set aside, not deleted, and a new one initialised")
		if j := d.journal(); !strings.Contains(j, "setting its storage aside") {
			t.Errorf("the journal does not tell of the recovery:\n%s", j)
		}
		if aside := d.run("sh", "-c", "ls -d /var/lib/edgeseal-vault/data.abandoned-*"); strings.Count(aside, "\n") != 1 {
			t.Errorf("set-aside storage: %q", aside)
		}
	}
	d.m.Stop(t)
}

func TestCrashAtEveryStepOfABootRecoversWithDataIntact(t *testing.T) {
	onEachServer(t, crashAtEveryStepOfABoot)
}

func crashAtEveryStepOfABoot(t *testing.T, srv testbed.Server) {
	t.Logf("Given a device running %s that has booted once and holds a secret", srv)
	d := newDevice(t, false, nil, withServer(srv))
	d.start()
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	if _, err := c.KVv2("secret").Put(context.Background(), "edgeseal/app-one/db", map[string]any{"v": "intact"}); err != nil {
		t.Fatal(err)
	}
	for _, step := range secretstore.BootSteps {
		t.Run(string(step), func(t *testing.T) {
			defer func(parent testing.TB) { d.t = parent }(d.t)
			d.t = t
			t.Logf("When a later boot crashes (SIGKILL) at %s", step)
			d.m.Reboot(t)
			crashAt(t, d, step)
			t.Log("Then the boot after it unseals Vault, and the secret is intact")
			recovers(t, d, step, "intact")
		})
	}
}
