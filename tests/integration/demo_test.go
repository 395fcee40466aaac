//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// The demo's sample service: its unit and its program.
const (
	sampleAppUnit = `[Unit]
Description=sample-app: a service that keeps its secrets in Vault
Requires=edgeseal.target
After=edgeseal.target

[Service]
DynamicUser=yes
RuntimeDirectory=sample-app
LoadCredential=vault-token:/run/edgeseal/tokend.sock
ExecStart=/etc/edgeseal/sample-app.sh
`
	sampleApp = `#!/bin/sh
# sample-app: uses the Vault token edgeseal gave it, never sees anyone else's.
export VAULT_ADDR=https://127.0.0.1:8200 VAULT_CACERT=/run/edgeseal/pki/ca.crt
token() { sed -n 's/.*"client_token": *"\([^"]*\)".*/\1/p' "$1"; }

echo "I am $(id -un) (uid $(id -u)); my credential: $CREDENTIALS_DIRECTORY/vault-token"
VAULT_TOKEN=$(token "$CREDENTIALS_DIRECTORY/vault-token") \
  vault kv put -mount=secret edgeseal/sample-app/greeting text="hello from sample-app" >/dev/null &&
  echo "wrote secret/edgeseal/sample-app/greeting with the credential's token"

edgeseal token fetch --out "$RUNTIME_DIRECTORY/token.json"
export VAULT_TOKEN=$(token "$RUNTIME_DIRECTORY/token.json")
echo "read back with the fetched token: $(vault kv get -mount=secret -field=text edgeseal/sample-app/greeting)"
echo "billing's secret, with my token:"
vault kv get -mount=secret edgeseal/billing/card 2>&1 | grep -i 'permission denied' | head -n 1
exec sleep infinity
`
)

// TestDemo is `make demo`: a device boots edgeseal with the default config, whose
// TPM is a software TPM (swtpm) here, and a person sees what an operator would.
// Under `go test` it is an ordinary test.
func TestDemo(t *testing.T) {
	say := func(format string, args ...any) { t.Logf(format, args...) }
	if os.Getenv("EDGESEAL_DEMO") == "1" {
		say = func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	}
	show := func(title, out string) {
		say("\n$ %s\n%s", title, strings.TrimRight(out, "\n"))
	}

	say("== edgeseal demo: a device boots under systemd in a container (systemd-nspawn over this machine's /usr) ==")
	say("   config: the default (edgeseal config default): the unseal key is sealed to the TPM, PCR 7;")
	say("   the TPM is a software TPM (swtpm) on 127.0.0.1, so seal.tpm2.device is the one change")
	testbed.Require(t, "tpm2_pcrextend", "tpm2_startup", "tpm2_shutdown")
	sw := testbed.StartSWTPM(t)
	fw := firmware{t, sw}
	fw.measure("shim v1")
	d := newDevice(t, true, func(c *config.Config) {
		c.Seal.Method = config.Default().Seal.Method
		c.Seal.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", sw.Port)
		c.Services = []config.Service{
			{Name: "sample-app", Units: []string{"sample-app.service"}},
			{Name: "billing", Units: []string{"billing.service"}},
		}
	})
	writeFile(t, filepath.Join(d.etc, "sample-app.sh"), []byte(sampleApp), 0o755)
	writeFile(t, filepath.Join(d.units, "sample-app.service"), []byte(sampleAppUnit), 0o644)
	d.run("systemctl", "daemon-reload")
	show("edgeseal config check", d.run("edgeseal", "config", "check"))
	d.run("systemctl", "enable", "edgeseal.target")

	say("\n-- first boot: per-boot PKI, Vault init, unseal key sealed, Vault unsealed and set up --")
	took := d.start()
	show("systemctl start edgeseal.target", fmt.Sprintf("(active after %v)", took.Round(time.Millisecond)))
	show("systemctl list-units 'edgeseal*'", d.run("systemctl", "list-units", "--no-pager", "--all", "edgeseal*"))
	show("edgeseal status", d.run("sh", "-c", "edgeseal status; true"))
	if d.status()["ready"] != true {
		t.Fatal("not ready after first boot")
	}
	show("ls -l /var/lib/edgeseal /run/edgeseal /run/edgeseal/pki", d.run("ls", "-l", "/var/lib/edgeseal", "/run/edgeseal", "/run/edgeseal/pki"))

	say("\n-- each service its own token: sample-app.service (DynamicUser) gets one through LoadCredential=, --")
	say("   then one through the socket with `edgeseal token fetch`; it reads its own secret and is refused billing's --")
	show("systemctl cat sample-app.service", d.run("systemctl", "cat", "sample-app.service"))
	d.run("systemctl", "start", "sample-app.service")
	var app string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if app = d.run("journalctl", "--no-pager", "-o", "cat", "-u", "sample-app.service"); strings.Contains(app, "permission denied") {
			break
		}
	}
	show("journalctl -u sample-app.service", app)
	if !strings.Contains(app, "wrote secret/edgeseal/sample-app/greeting with the credential's token") ||
		!strings.Contains(app, "read back with the fetched token: hello from sample-app") || !strings.Contains(app, "permission denied") {
		t.Fatalf("sample-app did not get its own token both ways, or was not refused billing's secret:\n%s\n%s", app, d.journal())
	}
	show("journalctl -u edgeseal-tokend.service", d.m.Journal(t, "edgeseal-tokend.service"))
	out, stderr, err := d.m.RunAs(context.Background(), 4242, 4242, "edgeseal", "token", "fetch", "--out", "/tmp/x/token.json")
	show("setpriv --reuid=4242 edgeseal token fetch   (a uid no rule names)", out+stderr)
	if err == nil || !strings.Contains(stderr, "refused uid 4242") {
		t.Fatalf("uid 4242 was not refused: %v %s", err, stderr)
	}

	say("\n-- Vault crashes (SIGKILL): systemd restarts it, edgeseal unseals it again --")
	d.run("kill", "-9", d.mainPID("edgeseal-vault.service"))
	t0 := time.Now()
	time.Sleep(20 * time.Millisecond)
	d.waitUnsealed(30 * time.Second)
	say("Vault unsealed again %v after the kill", time.Since(t0).Round(time.Millisecond))
	show("journalctl -u edgeseal-unseal", d.m.Journal(t, "edgeseal-unseal.service"))

	say("\n-- reboot: the TPM resets, the firmware measures the same shim; edgeseal.target comes up unattended --")
	fw.reboot(d, "shim v1")
	if msg := waitActive(d, "edgeseal.target", 60*time.Second); msg != "" {
		t.Fatal(msg)
	}
	show("edgeseal status", d.run("sh", "-c", "edgeseal status; true"))
	if d.status()["ready"] != true {
		t.Fatal("not ready after reboot")
	}

	say("\n-- a shim nobody approved boots: the TPM keeps the key; edgeseal says which PCR --")
	fw.reboot(d, "shim from someone else")
	waitActive(d, "edgeseal-unseal.service", 60*time.Second)
	show("systemctl status edgeseal-unseal", d.run("sh", "-c", "systemctl status --no-pager -n 3 edgeseal-unseal; true"))
	show("edgeseal status", d.run("sh", "-c", "edgeseal status; true"))

	say("\n-- the approved shim boots again: the device is whole --")
	fw.reboot(d, "shim v1")
	if msg := waitActive(d, "edgeseal.target", 60*time.Second); msg != "" {
		t.Fatal(msg)
	}
	show("edgeseal status", d.run("sh", "-c", "edgeseal status; true"))
	say("\n== demo done: the container and the software TPM are stopped, their state removed ==")
}
