//go:build integration

package integration

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// withSoftHSM gives the device h's tokens at SoftHSM2's default places, as a
// device builder's image would have them: /etc/softhsm/softhsm2.conf and
// /var/lib/softhsm/tokens (the host's directory, so they survive reboots).
func withSoftHSM(h *testbed.SoftHSM) deviceOption {
	return func(d *device, opts *testbed.MachineOptions) {
		conf := d.t.TempDir()
		h.WriteConf(d.t, filepath.Join(conf, "softhsm2.conf"), "/var/lib/softhsm/tokens")
		opts.Binds = append(opts.Binds,
			testbed.Bind{Host: conf, Container: "/etc/softhsm", ReadOnly: true},
			testbed.Bind{Host: h.Tokens, Container: "/var/lib/softhsm/tokens"})
	}
}

// tokenPIN is the user PIN of the devices' SoftHSM2 tokens.
const tokenPIN = "4711"

// pkcs11Device is a device with seal.method pkcs11 on a SoftHSM2 token its
// builder made (label edgeseal, key edgeseal-unseal, the PIN in
// /etc/edgeseal/pkcs11-pin), not yet started. It returns the token store, the
// host's path of the PIN file and the token's serial.
func pkcs11Device(t *testing.T) (d *device, h *testbed.SoftHSM, pinFile, serial string) {
	t.Helper()
	h = testbed.NewSoftHSM(t)
	serial = h.InitToken(t, "edgeseal", tokenPIN, "edgeseal-unseal")
	d = newDevice(t, false, func(c *config.Config) {
		c.Seal.Method = "pkcs11"
		c.Seal.PKCS11.Module = testbed.SoftHSMModule
		c.Seal.PKCS11.TokenLabel = "edgeseal"
	}, withSoftHSM(h))
	pinFile = filepath.Join(d.etc, "pkcs11-pin")
	writeFile(t, pinFile, []byte(tokenPIN+"\n"), 0o600)
	d.run("systemctl", "enable", "edgeseal.target")
	return d, h, pinFile, serial
}

func TestBootChainWithAPKCS11Token(t *testing.T) {
	t.Log("Given a device whose builder made a SoftHSM2 token with a non-extractable AES key, with seal.method pkcs11")
	d, h, pinFile, serial := pkcs11Device(t)

	t.Log("When it boots for the first time, Then the unseal key is sealed with the token's key and Vault unsealed")
	d.start()
	if st := d.status(); st["ready"] != true || st["sealed_key"].(map[string]any)["method"] != "pkcs11" {
		t.Fatalf("status: %v", st)
	}
	sealed := d.run("cat", "/var/lib/edgeseal/unseal-key.sealed")
	if !strings.Contains(sealed, `"method":"pkcs11"`) || !strings.Contains(sealed, `"token":"`+base64.StdEncoding.EncodeToString([]byte(serial))+`"`) {
		t.Fatalf("sealed blob: %s", sealed)
	}
	if j := d.journal(); !strings.Contains(j, "sealer=pkcs11") {
		t.Errorf("the journal does not name the sealer:\n%s", j)
	}

	t.Log("When it reboots, Then edgeseal.target comes up unattended: the token unseals the key again")
	d.m.Stop(t)
	d.m.Reboot(t)
	if msg := waitActive(d, "edgeseal.target", 60*time.Second); msg != "" {
		t.Fatalf("%s\n%s", msg, d.journal())
	}
	d.waitUnsealed(10 * time.Second)

	t.Log("When the PIN file holds a wrong PIN, Then edgeseal-unseal stops with status 16 before Vault unseals, says what to fix, and keeps the blob")
	d.m.Stop(t)
	writeFile(t, pinFile, []byte("1234\n"), 0o600)
	d.m.Reboot(t)
	if msg := waitActive(d, "edgeseal-unseal.service", 60*time.Second); !strings.Contains(msg, "failed") {
		t.Fatalf("edgeseal-unseal with a wrong PIN: %q\n%s", msg, d.journal())
	}
	if s := d.isActive("edgeseal.target"); s == "active" {
		t.Error("edgeseal.target is active without an unsealed Vault")
	}
	if st, err := d.vaultClient().Sys().SealStatus(); err != nil || !st.Sealed {
		t.Errorf("the server after a wrong PIN: %+v, %v; want it running and sealed", st, err)
	}
	show := d.run("systemctl", "show", "-p", "ExecMainStatus", "-p", "NRestarts", "edgeseal-unseal.service")
	if !strings.Contains(show, "ExecMainStatus=16\n") || !strings.Contains(show, "NRestarts=0") {
		t.Errorf("unit: %s\n%s", show, d.journal())
	}
	if j := d.journal(); !strings.Contains(j, "CKR_PIN_INCORRECT") || !strings.Contains(j, "seal.pkcs11.pin_file") {
		t.Errorf("the journal does not say what to fix:\n%s", j)
	}
	if d.run("cat", "/var/lib/edgeseal/unseal-key.sealed") != sealed {
		t.Error("the sealed key changed")
	}

	t.Log("When the token is gone, Then edgeseal-unseal stops with status 18, naming the token")
	d.m.Stop(t)
	writeFile(t, pinFile, []byte(tokenPIN+"\n"), 0o600)
	entries, err := os.ReadDir(h.Tokens)
	if err != nil || len(entries) != 1 {
		t.Fatalf("tokens: %v %v", entries, err)
	}
	away := filepath.Join(t.TempDir(), "token")
	if err := os.Rename(filepath.Join(h.Tokens, entries[0].Name()), away); err != nil {
		t.Fatal(err)
	}
	d.m.Reboot(t)
	if msg := waitActive(d, "edgeseal-unseal.service", 60*time.Second); !strings.Contains(msg, "failed") {
		t.Fatalf("edgeseal-unseal without its token: %q\n%s", msg, d.journal())
	}
	if show := d.run("systemctl", "show", "-p", "ExecMainStatus", "edgeseal-unseal.service"); show != "ExecMainStatus=18\n" {
		t.Errorf("unit: %q\n%s", show, d.journal())
	}
	if j := d.journal(); !strings.Contains(j, `no token labelled \"edgeseal\"`) && !strings.Contains(j, `no token labelled "edgeseal"`) {
		t.Errorf("the journal does not name the token:\n%s", j)
	}

	t.Log("When the token is back, Then the device is whole again")
	d.m.Stop(t)
	if err := os.Rename(away, filepath.Join(h.Tokens, entries[0].Name())); err != nil {
		t.Fatal(err)
	}
	d.m.Reboot(t)
	if msg := waitActive(d, "edgeseal.target", 60*time.Second); msg != "" {
		t.Fatalf("%s\n%s", msg, d.journal())
	}

	t.Log("When seal.pkcs11.key_label names a key the token lacks, Then edgeseal-unseal stops with status 20, naming the label")
	d.m.Stop(t)
	d.cfg.Seal.PKCS11.KeyLabel = "another-key"
	d.writeConfig()
	d.m.Reboot(t)
	if msg := waitActive(d, "edgeseal-unseal.service", 60*time.Second); !strings.Contains(msg, "failed") {
		t.Fatalf("edgeseal-unseal without its key: %q\n%s", msg, d.journal())
	}
	if show := d.run("systemctl", "show", "-p", "ExecMainStatus", "-p", "NRestarts", "edgeseal-unseal.service"); !strings.Contains(show, "ExecMainStatus=20\n") || !strings.Contains(show, "NRestarts=0\n") {
		t.Errorf("unit: %q\n%s", show, d.journal())
	}
	if j := d.journal(); !strings.Contains(j, "another-key") || !strings.Contains(j, "no such key in the PKCS#11 token") {
		t.Errorf("the journal does not name the key:\n%s", j)
	}
	if d.run("cat", "/var/lib/edgeseal/unseal-key.sealed") != sealed {
		t.Error("the sealed key changed")
	}
}

// The helper runs in edgeseal-unseal's profile (ix): everything it and
// SoftHSM2's module open, map or run must be in that profile. As in
// TestEveryStepStaysWithinItsAppArmorProfileOnABoot, the step is traced
// (AppArmor cannot be enforced in this container) and the trace checked.
func TestThePKCS11HelperStaysWithinEdgesealUnsealsProfile(t *testing.T) {
	testbed.Require(t, "strace")
	d, _, _, _ := pkcs11Device(t)
	root := installRoots[d.srv.Name]
	d.run("install", "-d", "-m", "1777", "/run/edgeseal-trace")
	d.dropIn("edgeseal-unseal.service", "trace", traceDropIn(t, root, "edgeseal-unseal.service", "edgeseal-unseal"))

	t.Log("Given a device sealing with a SoftHSM2 token, its edgeseal-unseal traced, When it boots for the first time")
	d.start()
	// Stopping ends the strace, which then writes out what it saw.
	d.run("systemctl", "stop", "edgeseal.target", "edgeseal-tokend.socket", "edgeseal-tokend.service", "edgeseal-unseal.service")
	traces := d.run("sh", "-c", "cat /run/edgeseal-trace/edgeseal-unseal.*")
	if !strings.Contains(traces, `execve("/usr/libexec/edgeseal/edgeseal-pkcs11"`) || !strings.Contains(traces, "libsofthsm2.so") {
		t.Fatalf("the helper was not traced loading SoftHSM2's module:\n%s", traces)
	}
	t.Log("Then what the helper and the module did is all in edgeseal-unseal's profile")
	checkTrace(t, d, root, installedProfiles(t, root), "edgeseal-unseal.service", "edgeseal-unseal")
}
