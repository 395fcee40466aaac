//go:build integration

package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsvault"
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
	// sampleApp's @SERVER@ is the server's CLI (bao, or vault), both of which
	// read the VAULT_ variables.
	sampleApp = `#!/bin/sh
# sample-app: uses the Vault token edgeseal gave it, never sees anyone else's.
export VAULT_ADDR=https://127.0.0.1:8200 VAULT_CACERT=/run/edgeseal/pki/ca.crt
token() { sed -n 's/.*"client_token": *"\([^"]*\)".*/\1/p' "$1"; }

echo "I am $(id -un) (uid $(id -u)); my credential: $CREDENTIALS_DIRECTORY/vault-token"
VAULT_TOKEN=$(token "$CREDENTIALS_DIRECTORY/vault-token") \
  @SERVER@ kv put -mount=secret edgeseal/sample-app/greeting text="hello from sample-app" >/dev/null &&
  echo "wrote secret/edgeseal/sample-app/greeting with the credential's token"

edgeseal token fetch --out "$RUNTIME_DIRECTORY/token.json"
export VAULT_TOKEN=$(token "$RUNTIME_DIRECTORY/token.json")
echo "read back with the fetched token: $(@SERVER@ kv get -mount=secret -field=text edgeseal/sample-app/greeting)"
echo "billing's secret, with my token:"
@SERVER@ kv get -mount=secret edgeseal/billing/card 2>&1 | grep -i 'permission denied' | head -n 1
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
	say("   the TPM is a software TPM (swtpm) on 127.0.0.1, so seal.tpm2.device is the one change;")
	say("   its file vaults are on a disk of their own (disk.img: ext4 with encryption) at /var/lib/edgeseal/vaults")
	say("   its secret store server: %s at %s (EDGESEAL_SERVER=openbao or vault picks it)", defaultServer, defaultServer.InstallPath)
	testbed.Require(t, "tpm2_pcrextend", "tpm2_startup", "tpm2_shutdown", "grep")
	sw := testbed.StartSWTPM(t)
	fw := firmware{t, sw}
	fw.measure("shim v1")
	disk := testbed.NewEncryptFS(t, "64M")
	writeFile(t, filepath.Join(disk.Mount, "outside.txt"), []byte(outsideVaults+"\n"), 0o644)
	d := newDevice(t, true, func(c *config.Config) {
		c.Seal.Method = config.Default().Seal.Method
		c.Seal.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", sw.Port)
		c.Services = []config.Service{
			{Name: "sample-app", Units: []string{"sample-app.service"}},
			{Name: "billing", Units: []string{"billing.service"}},
		}
	}, withFileVaults(disk), withJournalKept)
	writeFile(t, filepath.Join(d.etc, "sample-app.sh"), []byte(strings.ReplaceAll(sampleApp, "@SERVER@", filepath.Base(d.srv.InstallPath))), 0o755)
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

	demoFileVault(t, d, disk, say, show)
	// A power cycle: the firmware's, and the kernel's keys of the vaults' disk
	// are gone with its memory (here: the disk is unmounted and mounted again).
	powerCycle := func(shim string) {
		d.m.Stop(t)
		disk.Unmount(t)
		disk.MountImage(t, disk.Image)
		fw.powerOn(shim)
		d.m.Reboot(t)
	}

	say("\n-- power on: the TPM resets, the firmware measures the same shim; edgeseal.target comes up unattended --")
	fw.powerOn("shim v1") // the disk was mounted again, without keys, in demoFileVault
	d.m.Reboot(t)
	if msg := waitActive(d, "edgeseal.target", 60*time.Second); msg != "" {
		t.Fatal(msg)
	}
	show("edgeseal status", d.run("sh", "-c", "edgeseal status; true"))
	if d.status()["ready"] != true {
		t.Fatal("not ready after reboot")
	}
	say("\n   and the vault: locked at the last shutdown, unlocked at this boot; the app found its state")
	last := d.run("journalctl", "--no-pager", "-o", "cat", "-b", "-1", "-n", "7", "-u", appUnit, "-u", imagesUnit)
	show("journalctl -b -1 -n 7 -u app-with-vault -u edgeseal-fsvault@images   (the last boot's end)", last)
	if !strings.Contains(last, "vault images: locked") {
		t.Fatalf("the vault was not locked at shutdown:\n%s", last)
	}
	if n := appLines(d, 2); n != 2 {
		t.Fatalf("the app's state has %d lines after the reboot, want 2\n%s", n, d.m.Journal(t, appUnit))
	}
	show("cat "+appState+"   (a line per start: the first boot's is still there)", d.run("cat", appState))

	say("\n-- a shim nobody approved boots: the TPM keeps the keys; edgeseal says which PCR --")
	powerCycle("shim from someone else")
	waitActive(d, "edgeseal-unseal.service", 60*time.Second)
	show("systemctl status edgeseal-unseal", d.run("sh", "-c", "systemctl status --no-pager -n 3 edgeseal-unseal; true"))
	show("edgeseal status", d.run("sh", "-c", "edgeseal status; true"))
	say("\n   the vaults stay locked too, and app-with-vault does not start:")
	show("journalctl -b -u edgeseal-fsvault@images -o cat", d.run("journalctl", "--no-pager", "-o", "cat", "-b", "-u", imagesUnit))
	app, _, _ = d.m.Run(context.Background(), "systemctl", "is-active", appUnit)
	show("systemctl is-active app-with-vault", app)
	if strings.TrimSpace(app) == "active" {
		t.Fatal("app-with-vault started on a vault that could not be unlocked")
	}
	show("edgeseal vault list", d.run("edgeseal", "vault", "list"))
	for name, s := range vaults(d) {
		if s.State != fsvault.StateError || !strings.Contains(s.Reason, "PCR 7") {
			t.Fatalf("vault %s after an unapproved boot: %+v, want error naming PCR 7", name, s)
		}
	}

	say("\n-- the approved shim boots again: the device is whole --")
	powerCycle("shim v1")
	if msg := waitActive(d, "edgeseal.target", 60*time.Second); msg != "" {
		t.Fatal(msg)
	}
	show("edgeseal status", d.run("sh", "-c", "edgeseal status; true"))
	show("edgeseal vault list", d.run("edgeseal", "vault", "list"))

	demoController(t, d, powerCycle, say, show)
	say("\n== demo done: the container and the software TPM are stopped, their state removed ==")
}

// outsideVaults is a line in a file on the vaults' disk, outside any vault: the
// raw disk image holds it in clear, which shows the search for the app's line
// would find it if it were there.
const outsideVaults = "this line is outside any vault"

// demoFileVault is the demo's file vault chapter: app-with-vault.service keeps
// its state in the default vault "images"; at shutdown the vault is locked;
// the disk alone shows ciphertext. The device is off at the end.
func demoFileVault(t *testing.T, d *device, disk *testbed.EncryptFS, say func(string, ...any), show func(string, string)) {
	t.Helper()
	say("\n-- file vaults: at first boot edgeseal-fsvault.service made the default vaults, config and images --")
	show("journalctl -u edgeseal-fsvault.service -o cat", d.run("journalctl", "--no-pager", "-o", "cat", "-u", "edgeseal-fsvault.service"))

	say("\n-- app-with-vault.service (docs/examples) keeps its state in the vault images; it starts once the vault is unlocked --")
	show("grep -E '^(Requires|After|ReadWritePaths)=' /etc/systemd/system/app-with-vault.service",
		d.run("grep", "-E", "^(Requires|After|ReadWritePaths)=", "/etc/systemd/system/"+appUnit))
	if n := appLines(d, 1); n != 1 {
		t.Fatalf("the app's state has %d lines, want 1\n%s", n, d.m.Journal(t, appUnit))
	}
	show("systemctl list-units 'edgeseal-fsvault*' app-with-vault.service",
		d.run("systemctl", "list-units", "--no-pager", "edgeseal-fsvault*", appUnit))
	show("cat "+appState+"   (written by the app, in the vault)", d.run("cat", appState))
	show("edgeseal vault list", d.run("edgeseal", "vault", "list"))
	if s := vaults(d)["images"]; s.State != fsvault.StateUnlocked {
		t.Fatalf("vault images: %+v, want unlocked", s)
	}

	say("\n-- shutdown: systemd stops app-with-vault, then edgeseal-fsvault@images.service locks the vault --")
	d.m.Stop(t)
	say("(the device is off)")

	say("\n-- the disk alone, on this machine, without any key: names and contents are ciphertext --")
	disk.Unmount(t)
	disk.MountImage(t, disk.Image)
	host := func(args ...string) string {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = filepath.Dir(disk.Image)
		out, _ := cmd.CombinedOutput() // grep -c exits 1 when it counts 0
		title := make([]string, len(args))
		for i, a := range args {
			if title[i] = a; strings.Contains(a, " ") {
				title[i] = "'" + a + "'"
			}
		}
		show(strings.Join(title, " "), string(out))
		return strings.TrimSpace(string(out))
	}
	say("(disk.img: the device's disk; mnt: where this machine mounted it)")
	host("ls", "mnt/images")
	names := hostNames(t, filepath.Join(disk.Mount, "images"))
	if len(names) != 1 || names[0] == appFile {
		t.Fatalf("the vault, seen from the disk alone: %q", names)
	}
	if out := host("cat", "mnt/images/"+names[0]); !strings.Contains(out, "Required key not available") {
		t.Fatalf("the app's file read from the disk alone: %q", out)
	}
	if host("grep", "-a", "-c", appLine, "disk.img") != "0" {
		t.Fatal("the raw disk image holds the app's line in clear")
	}
	if host("grep", "-a", "-c", outsideVaults, "disk.img") == "0" {
		t.Fatal("the raw disk image does not hold the line written outside the vaults: the search proves nothing")
	}
}

// withJournalKept keeps the device's journal across reboots on a disk of its
// own (a fixed machine ID names its directory), so that `journalctl -b -1`
// shows the last boot, its shutdown included.
func withJournalKept(d *device, opts *testbed.MachineOptions) {
	dir := filepath.Join(d.t.TempDir(), "var-log-journal")
	if err := os.Mkdir(dir, 0o755); err != nil {
		d.t.Fatal(err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	opts.Binds = append(opts.Binds, testbed.Bind{Host: dir, Container: "/var/log/journal"})
	opts.Args = append(opts.Args, "systemd.machine_id="+hex.EncodeToString(id))
}
