//go:build integration

package integration

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsvault"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// demoController is the demo's controller chapter: the reference controller
// runs on this machine; the device enrols with it, its vault images switches
// to tpm+controller with attestation, and from then on it unlocks only after
// a valid quote: booted "elsewhere" (its location claim differs) it stays
// locked and the app does not start; back home it unlocks. powerCycle boots
// the device again with the firmware measuring shim.
func demoController(t *testing.T, d *device, powerCycle func(shim string), say func(string, ...any), show func(string, string)) {
	t.Helper()
	say("\n-- a controller: the reference edgeseal-controller runs on this machine; the device reaches it over HTTPS on 127.0.0.1 --")
	ctl := filepath.Join(installRoot, "usr/bin/edgeseal-controller")
	dir := filepath.Join(t.TempDir(), "controller")
	host := func(quiet bool, args ...string) string {
		t.Helper()
		out, err := exec.Command(ctl, args...).CombinedOutput()
		if !quiet {
			show("edgeseal-controller "+strings.Join(args, " "), string(out))
		}
		if err != nil {
			t.Fatalf("edgeseal-controller %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	host(false, "init", "--dir", dir, "--host", "127.0.0.1")
	token := strings.TrimSpace(host(true, "device", "add", "demo-device", "--dir", dir, "--pcrs", "7", "--claim", "location=plant-7"))
	show("edgeseal-controller device add demo-device --dir "+dir+" --pcrs 7 --claim location=plant-7", "(a one-time enrolment token, handed to the device)")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testbed.FreeLoopbackPort(t)))
	serve := testbed.StartProcess(t, "edgeseal-controller", exec.Command(ctl, "serve", "--dir", dir, "--listen", addr))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if serve.Exited() || time.Now().After(deadline) {
			t.Fatalf("the controller did not listen on %s:\n%s", addr, serve.LogTail(20))
		}
	}
	show("edgeseal-controller serve --dir "+dir+" --listen "+addr+" &", serve.LogTail(5))

	say("\n-- the device enrols: its attestation key certifies its storage root key; it gets a TLS client certificate --")
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	show("edgeseal controller enrol --url https://"+addr+" --ca /etc/edgeseal/controller-ca.crt --token-file /etc/edgeseal/enrol-token",
		enrol(t, d, "https://"+addr, ca, token))
	show("edgeseal controller status", d.run("edgeseal", "controller", "status"))

	say("\n-- the vault images switches to tpm+controller, released after attestation: its key is rewrapped, no file re-encrypted --")
	switchToController(t, d, "images")
	show("grep -B2 -A6 'name: images' /etc/edgeseal/edgeseal.yaml", d.run("grep", "-B2", "-A6", "name: images", "/etc/edgeseal/edgeseal.yaml"))
	d.run("systemctl", "reload", "edgeseal-fsvault.service")
	reload := d.run("journalctl", "--no-pager", "-o", "cat", "-n", "8", "-u", "edgeseal-fsvault.service")
	show("systemctl reload edgeseal-fsvault.service; journalctl -u edgeseal-fsvault.service -n 8 -o cat", reload)
	if !strings.Contains(reload, "key source tpm to tpm+controller") || !strings.Contains(reload, "escrowed") {
		t.Fatalf("the reload did not rewrap the vault images and escrow its key:\n%s", reload)
	}
	show("edgeseal vault list", d.run("edgeseal", "vault", "list"))
	if s := vaults(d)["images"]; s.KeySource != config.KeySourceTPMController || s.State != fsvault.StateUnlocked {
		t.Fatalf("vault images after the switch: %+v", s)
	}
	shown := host(true, "device", "show", "demo-device", "--dir", dir)
	show("edgeseal-controller device show demo-device", shown)
	if !strings.Contains(shown, "attestation:   yes") {
		t.Fatalf("the controller does not release the vault images only after attestation:\n%s", shown)
	}

	say("\n-- the device boots somewhere else (its location claim says so): the controller refuses the quote, and withholds the key --")
	writeFile(t, filepath.Join(d.etc, "location"), []byte("somewhere-else\n"), 0o644)
	powerCycle("shim v1")
	waitActive(d, imagesUnit, 60*time.Second)
	show("edgeseal vault list", d.run("sh", "-c", "edgeseal vault list; true"))
	s := vaults(d)["images"]
	if s.State != fsvault.StateAwaiting || !strings.Contains(s.Reason, "location") {
		t.Fatalf("vault images booted elsewhere: %+v, want awaiting attestation naming the location", s)
	}
	app, _, _ := d.m.Run(t.Context(), "systemctl", "is-active", appUnit)
	show("systemctl is-active app-with-vault", app)
	if strings.TrimSpace(app) == "active" {
		t.Fatal("app-with-vault started on a vault the controller withheld")
	}
	show("(the controller's log)", serve.LogTail(3))

	say("\n-- back home: a valid quote, the key released; the vault unlocks and the app starts --")
	writeFile(t, filepath.Join(d.etc, "location"), []byte("plant-7\n"), 0o644)
	d.run("systemctl", "start", appUnit)
	if msg := waitActive(d, appUnit, 30*time.Second); msg != "" {
		t.Fatalf("%s\n%s", msg, d.m.Journal(t, imagesUnit))
	}
	show("systemctl start app-with-vault; journalctl -b -u edgeseal-fsvault@images -o cat",
		d.run("journalctl", "--no-pager", "-o", "cat", "-b", "-u", imagesUnit))
	show("edgeseal vault list", d.run("edgeseal", "vault", "list"))
	if s := vaults(d)["images"]; s.State != fsvault.StateUnlocked || s.UnlockedBy != fsvault.UnlockController {
		t.Fatalf("vault images back home: %+v, want unlocked by controller-key", s)
	}
	show("(the controller's log)", serve.LogTail(3))
}

// enrol enrols the device with the controller at url (its CA certificate ca,
// the one-time token), as an operator would: the CA and the token in
// /etc/edgeseal, `edgeseal controller enrol`, the spent token removed. The
// device's location claim is plant-7 (/etc/edgeseal/location).
func enrol(t *testing.T, d *device, url string, ca []byte, token string) string {
	t.Helper()
	writeFile(t, filepath.Join(d.etc, "controller-ca.crt"), ca, 0o644)
	writeFile(t, filepath.Join(d.etc, "enrol-token"), []byte(token+"\n"), 0o600)
	writeFile(t, filepath.Join(d.etc, "location"), []byte("plant-7\n"), 0o644)
	out := d.run("edgeseal", "controller", "enrol", "--url", url, "--ca", "/etc/edgeseal/controller-ca.crt", "--token-file", "/etc/edgeseal/enrol-token")
	if err := os.Remove(filepath.Join(d.etc, "enrol-token")); err != nil { // spent: the controller takes it once
		t.Fatal(err)
	}
	return out
}

// switchToController sets the key source of the vault name to
// tpm+controller, released after attestation, with the location claim from
// /etc/edgeseal/location, in the device's config (the next apply rewraps).
func switchToController(t *testing.T, d *device, name string) {
	t.Helper()
	uuid := vaults(d)[name].UUID
	d.cfg.FileVaults.Vaults = append(d.cfg.FileVaults.Vaults, config.FileVault{Schema: 1, UUID: uuid, Name: name,
		KeySource: config.KeySourceTPMController, Attestation: true})
	d.cfg.Controller.LocationFile = "/etc/edgeseal/location"
	d.writeConfig()
}
