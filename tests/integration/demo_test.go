//go:build integration

package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestDemo is `make demo`: a device boots edgeseal with the embedded default
// config (the vendor key-material hook it expects is a file on the device), and
// a person sees what an operator would. Under `go test` it is an ordinary test.
func TestDemo(t *testing.T) {
	say := func(format string, args ...any) { t.Logf(format, args...) }
	if os.Getenv("EDGESEAL_DEMO") == "1" {
		say = func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	}
	show := func(title, out string) {
		say("\n$ %s\n%s", title, strings.TrimRight(out, "\n"))
	}

	say("== edgeseal demo: a device boots under systemd in a container (systemd-nspawn over this machine's /usr) ==")
	say("   config: the embedded default (edgeseal config default); seal method ikm-hook with a demo vendor hook")
	d := newDevice(t, true, nil)
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

	say("\n-- Vault crashes (SIGKILL): systemd restarts it, edgeseal unseals it again --")
	d.run("kill", "-9", d.mainPID("edgeseal-vault.service"))
	t0 := time.Now()
	time.Sleep(20 * time.Millisecond)
	d.waitUnsealed(30 * time.Second)
	say("Vault unsealed again %v after the kill", time.Since(t0).Round(time.Millisecond))
	show("journalctl -u edgeseal-unseal", d.m.Journal(t, "edgeseal-unseal.service"))

	say("\n-- reboot: edgeseal.target comes up unattended --")
	d.m.Reboot(t)
	if msg := waitActive(d, "edgeseal.target", 60*time.Second); msg != "" {
		t.Fatal(msg)
	}
	show("edgeseal status", d.run("sh", "-c", "edgeseal status; true"))
	if d.status()["ready"] != true {
		t.Fatal("not ready after reboot")
	}
	say("\n== demo done: the container is stopped and its state removed ==")
}
