//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
)

// hammerUnit runs tests/integration/hammer as nobody from early boot, before
// Vault starts, against the device's Vault TCP listener.
func hammerUnit(port int) string {
	return fmt.Sprintf(`[Unit]
Description=a local user hammering Vault's unauthenticated endpoints
DefaultDependencies=no
Before=edgeseal-vault.service
[Service]
User=nobody
ExecStart=/usr/lib/edgeseal-tests/hammer -addr 127.0.0.1:%d -c 4 -duration 10m
[Install]
WantedBy=multi-user.target
`, port)
}

var hammerCount = regexp.MustCompile(`(init|generate-root-start|generate-root-cancel)=(\d+)`)

// hammered checks, from the hammer's own report, that Vault answered it: the
// attack ran while the boot went on, it did not just wait for a listener.
func hammered(t *testing.T, d *device) {
	t.Helper()
	d.run("systemctl", "stop", "hammer.service")
	last := ""
	for _, l := range strings.Split(d.m.Journal(t, "hammer.service"), "\n") {
		if strings.Contains(l, "stopped:") {
			last = l
		}
	}
	got := map[string]int{}
	for _, m := range hammerCount.FindAllStringSubmatch(last, -1) {
		got[m[1]], _ = strconv.Atoi(m[2])
	}
	for _, k := range []string{"init", "generate-root-start", "generate-root-cancel"} {
		if got[k] == 0 {
			t.Errorf("the hammer's %s requests were never answered: %q", k, last)
		}
	}
	t.Logf("the hammer's requests answered by Vault: %s", last)
}

// TestALocalUserHammeringVaultCannotStopTheBoot: issue 15's first finding. An
// unprivileged process loops on Vault's unauthenticated endpoints (sys/init,
// generate-root start and cancel, rekey, unseal with a wrong key) from before
// Vault starts. Before the fix it called sys/init first and owned Vault (exit
// 14), or cancelled the generate-root of a later boot's setup.
func TestALocalUserHammeringVaultCannotStopTheBoot(t *testing.T) {
	ctx := context.Background()
	t.Log("Given a new device whose Vault is hammered by `nobody` from early boot, at every boot")
	d := newDevice(t, false, func(c *config.Config) {
		c.Services = []config.Service{{Name: "collector", UIDs: []uint32{1001}}}
	})
	writeFile(t, filepath.Join(d.units, "hammer.service"), []byte(hammerUnit(d.apiPort)), 0o644)
	d.run("systemctl", "daemon-reload")
	d.run("systemctl", "enable", "hammer.service", "edgeseal.target")
	d.run("systemctl", "start", "hammer.service")

	t.Log("When it boots for the first time")
	d.start()
	t.Log("Then edgeseal initialised Vault itself and edgeseal.target is active")
	if s := d.isActive("edgeseal.target"); s != "active" {
		t.Fatalf("edgeseal.target is %s\n%s", s, d.journal())
	}
	j := d.m.Journal(t, "edgeseal-unseal.service")
	if !strings.Contains(j, "restarting Vault with its TCP listener") {
		t.Errorf("the first boot did not hold Vault's TCP listener back until the key was sealed:\n%s", j)
	}
	hammered(t, d)
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	if n := countRootTokens(t, c); n != 2 {
		t.Errorf("root tokens: %d, want edgeseal's admin token and the maintenance token", n)
	}

	var previous string
	for boot := 2; boot <= 4; boot++ {
		t.Logf("When a service takes its token, and the device reboots with the hammer running again (boot %d)", boot)
		if _, stderr, err := d.m.RunAs(ctx, 1001, 1001, "edgeseal", "token", "fetch", "--out", "/tmp/collector/token.json"); err != nil {
			t.Fatalf("token fetch: %v %s\n%s", err, stderr, d.journal())
		}
		previous = d.tokenIn("/tmp/collector/token.json")
		d.m.Reboot(t)
		t.Log("Then edgeseal.target comes up, and the previous boot's token is revoked")
		if err := waitActive(d, "edgeseal.target", 90*time.Second); err != "" {
			t.Fatalf("boot %d: %s\n%s", boot, err, d.journal())
		}
		if _, _, err := d.m.Run(ctx, append(d.vaultEnv(previous), "token", "lookup")...); err == nil {
			t.Errorf("boot %d: the previous boot's token still works", boot)
		}
		if j := d.m.Journal(t, "edgeseal-unseal.service"); strings.Contains(j, "restarting Vault with its TCP listener") {
			t.Errorf("boot %d: Vault started without its TCP listener though the key was sealed (edgeseal-pki could not see it):\n%s", boot, j)
		}
		if s := d.isActive("hammer.service"); s != "active" {
			t.Errorf("boot %d: the hammer is %s: the attack did not run", boot, s)
		}
		hammered(t, d)
	}
	if j := d.m.Journal(t, "edgeseal-unseal.service"); strings.Contains(j, "generate-root") || strings.Contains(j, "trying again") {
		t.Errorf("a later boot needed generate-root or a retry:\n%s", j)
	}
}

// TestAFailedFirstAttemptStillBringsUpTheTargetAndItsConsumer: a transient
// failure of edgeseal-unseal at boot (injected once per boot at a step, as an
// unreachable Vault would make it) must leave edgeseal.target and a consumer
// that Requires= it active once a retry cures it. Before the fix the unit
// exited, Restart= cured it, but the start jobs of the target and of the
// consumer had already failed ("Dependency failed") for the whole boot.
func TestAFailedFirstAttemptStillBringsUpTheTargetAndItsConsumer(t *testing.T) {
	t.Log("Given a device whose edgeseal-unseal fails once per boot, after unsealing, and a consumer of edgeseal.target")
	firstAttemptFailsOnceAndTheTargetComesUp(t, "EDGESEAL_FAIL_AT", "injected failure")
}

// A crash, not an error, of edgeseal-unseal before it is ready: the process
// ends (SIGKILL), its start job fails, and Restart= starts it again. On
// systemd before 254 (no RestartMode=direct) that failed job failed
// edgeseal.target's and its consumers' start jobs too, for the whole boot,
// when the target required edgeseal-unseal itself (seen on systemd 252: the
// consumer stayed "inactive (dead)", "Dependency failed for edgeseal.target").
// The target now requires edgeseal-ready.service, which waits for
// edgeseal-unseal to be active and fails only when it is failed for good.
func TestACrashedFirstAttemptStillBringsUpTheTargetAndItsConsumer(t *testing.T) {
	t.Log("Given a device whose edgeseal-unseal crashes (SIGKILL) once per boot, after unsealing, and a consumer of edgeseal.target")
	firstAttemptFailsOnceAndTheTargetComesUp(t, "EDGESEAL_CRASH_ONCE_AT", "crash test: SIGKILL now, once this boot")
}

// firstAttemptFailsOnceAndTheTargetComesUp has edgeseal-unseal fail once per
// boot at admin-token-ready by the test hook hookEnv, which logs logged, and
// checks that edgeseal.target and a consumer that requires it come up, at the
// first boot and after a reboot.
func firstAttemptFailsOnceAndTheTargetComesUp(t *testing.T, hookEnv, logged string) {
	d := newDevice(t, false, nil)
	dropIn := filepath.Join(d.units, "edgeseal-unseal.service.d")
	if err := os.MkdirAll(dropIn, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dropIn, "fail-once.conf"), []byte("[Service]\nEnvironment="+hookEnv+"=admin-token-ready\n"), 0o644)
	writeFile(t, filepath.Join(d.units, "consumer.service"), []byte(`[Unit]
Requires=edgeseal.target
After=edgeseal.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
[Install]
WantedBy=multi-user.target
`), 0o644)
	d.run("systemctl", "daemon-reload")
	d.run("systemctl", "enable", "consumer.service", "edgeseal.target")

	for boot := 1; boot <= 2; boot++ {
		if boot == 1 {
			t.Log("When it boots for the first time and the consumer is started")
			d.m.Run(context.Background(), "systemctl", "start", "consumer.service")
		} else {
			t.Log("When it reboots")
			d.m.Reboot(t)
		}
		t.Log("Then the consumer and edgeseal.target are active, after one failed attempt")
		if err := waitActive(d, "consumer.service", 90*time.Second); err != "" {
			t.Fatalf("boot %d: %s; edgeseal.target is %s\n%s", boot, err, d.isActive("edgeseal.target"), d.journal())
		}
		if s := d.isActive("edgeseal.target"); s != "active" {
			t.Errorf("boot %d: edgeseal.target is %s", boot, s)
		}
		j := d.m.Journal(t, "edgeseal-unseal.service")
		if !strings.Contains(j, logged) {
			t.Errorf("boot %d: the failure was not injected:\n%s", boot, j)
		}
	}
}

// TestTheIssuingTokenRotatesUnderTheShippedUnit: issue 15's third finding.
// The rotation runs in edgeseal-unseal.service as shipped (its capabilities,
// no CAP_FOWNER) on the token provider's directory, which the first setup
// gave to the provider's user. Before the fix every rotation failed with
// EPERM (a chmod of that directory).
func TestTheIssuingTokenRotatesUnderTheShippedUnit(t *testing.T) {
	ctx := context.Background()
	t.Log("Given a device whose token-issuing token rotates every minute")
	d := newDevice(t, false, func(c *config.Config) {
		c.Tokens.IssuingPeriod = config.Duration(10 * time.Minute)
		c.Tokens.IssuingRotation = config.Duration(time.Minute)
		c.Services = []config.Service{{Name: "collector", UIDs: []uint32{1001}}}
	})
	d.start()
	if out := d.run("stat", "-c", "%a %U", "/run/edgeseal/tokend"); out != "700 edgeseal-tokend\n" {
		t.Fatalf("the provider's directory: %q", out)
	}
	first := d.tokenIn("/run/edgeseal/tokend/issuing-token.json")

	t.Log("When a minute and a bit has passed")
	deadline := time.Now().Add(100 * time.Second)
	for {
		if d.tokenIn("/run/edgeseal/tokend/issuing-token.json") != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the token-issuing token was not rotated in 100s:\n%s", d.m.Journal(t, "edgeseal-unseal.service"))
		}
		time.Sleep(time.Second)
	}
	t.Log("Then it was replaced, the old one is dead, and a service still gets its token")
	if j := d.m.Journal(t, "edgeseal-unseal.service"); strings.Contains(j, "cannot rotate") {
		t.Errorf("a rotation failed:\n%s", j)
	}
	if _, _, err := d.m.Run(ctx, append(d.vaultEnv(first), "token", "lookup")...); err == nil {
		t.Error("the previous token-issuing token still works after the rotation")
	}
	if _, stderr, err := d.m.RunAs(ctx, 1001, 1001, "edgeseal", "token", "fetch", "--out", "/tmp/collector/token.json"); err != nil {
		t.Fatalf("token fetch after the rotation: %v %s\n%s", err, stderr, d.journal())
	}
	if out := d.run("stat", "-c", "%a %U", "/run/edgeseal/tokend", "/run/edgeseal/tokend/issuing-token.json"); out != "700 edgeseal-tokend\n600 edgeseal-tokend\n" {
		t.Errorf("after the rotation: %q", out)
	}
}
