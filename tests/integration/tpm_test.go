//go:build integration

package integration

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// firmware plays the platform across a reboot: the kernel's orderly TPM2_Shutdown,
// the TPM's reset (PCRs to zero), TPM2_Startup, and the boot chain measuring shim
// into PCR 7.
type firmware struct {
	t  *testing.T
	sw *testbed.SWTPM
}

func (f firmware) tool(args ...string) {
	f.t.Helper()
	f.output(args...)
}

// output runs a tpm2-tools command on the TPM and returns what it printed.
func (f firmware) output(args ...string) string {
	f.t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+f.sw.TCTI())
	out, err := cmd.CombinedOutput()
	if err != nil {
		f.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (f firmware) measure(shim string) {
	f.t.Helper()
	d := sha256.Sum256([]byte(shim))
	f.tool("tpm2_pcrextend", "7:sha256="+hex.EncodeToString(d[:]))
}

func (f firmware) powerOn(shim string) {
	f.t.Helper()
	f.tool("tpm2_shutdown", "-c")
	f.sw.Reset(f.t)
	f.tool("tpm2_startup", "-c")
	f.measure(shim)
}

// reboot reboots d across a power cycle in which the firmware measures shim.
func (f firmware) reboot(d *device, shim string) {
	f.t.Helper()
	d.m.Stop(f.t)
	f.powerOn(shim)
	d.m.Reboot(f.t)
}

// rebootsUnattended reboots d (firmware measuring shim) and checks that
// edgeseal.target comes up by itself; when names the step in a failure.
func (f firmware) rebootsUnattended(d *device, shim, when string) {
	f.t.Helper()
	f.reboot(d, shim)
	if msg := waitActive(d, "edgeseal.target", 60*time.Second); msg != "" {
		f.t.Fatalf("%s: %s\n%s", when, msg, d.journal())
	}
}

// pcr7After is PCR 7 after a power-on that measures shim.
func pcr7After(shim string) string {
	d := sha256.Sum256([]byte(shim))
	v := sha256.Sum256(append(make([]byte, 32), d[:]...))
	return hex.EncodeToString(v[:])
}

// tpmDevice is a device sealing with tpm2 to sw; with recoveryPub, a recovery
// key too (/etc/edgeseal/recovery.pem). more changes the config further.
func tpmDevice(t *testing.T, sw *testbed.SWTPM, recoveryPub []byte, more func(*config.Config)) *device {
	t.Helper()
	d := newDevice(t, false, func(c *config.Config) {
		c.Seal.Method = "tpm2"
		c.Seal.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", sw.Port)
		if recoveryPub != nil {
			c.Seal.RecoveryKey = "/etc/edgeseal/recovery.pem"
		}
		if more != nil {
			more(c)
		}
	})
	if recoveryPub != nil {
		writeFile(t, filepath.Join(d.etc, "recovery.pem"), recoveryPub, 0o644)
	}
	return d
}

// refusedAtBoot checks that edgeseal-unseal failed this boot with status, was
// not restarted, and that the journal says each of says.
func refusedAtBoot(t *testing.T, d *device, status int, says ...string) {
	t.Helper()
	if msg := waitActive(d, "edgeseal-unseal.service", 60*time.Second); !strings.Contains(msg, "failed") {
		t.Fatalf("edgeseal-unseal is not refused: %q\n%s", msg, d.journal())
	}
	show := d.run("systemctl", "show", "-p", "ExecMainStatus", "-p", "NRestarts", "edgeseal-unseal.service")
	if !strings.Contains(show, fmt.Sprintf("ExecMainStatus=%d\n", status)) || !strings.Contains(show, "NRestarts=0") {
		t.Errorf("unit: %s, want status %d and no restart", show, status)
	}
	j := d.journal()
	for _, s := range says {
		if !strings.Contains(j, s) {
			t.Errorf("the journal does not say %q:\n%s", s, j)
		}
	}
}

func TestBootChainWithTheTPM(t *testing.T) {
	testbed.Require(t, "tpm2_pcrextend", "tpm2_startup", "tpm2_shutdown")
	sw := testbed.StartSWTPM(t)
	fw := firmware{t, sw}
	t.Log("Given a device whose TPM measured shim v1 into PCR 7, with seal.method tpm2")
	fw.measure("shim v1")
	d := tpmDevice(t, sw, nil, nil)
	d.run("systemctl", "enable", "edgeseal.target")

	t.Log("When it boots for the first time, Then the unseal key is sealed to the TPM and Vault unsealed")
	d.start()
	if st := d.status(); st["ready"] != true || st["sealed_key"].(map[string]any)["method"] != "tpm2" {
		t.Fatalf("status: %v", st)
	}
	if blob := d.run("cat", "/var/lib/edgeseal/unseal-key.sealed"); !strings.Contains(blob, `"method":"tpm2"`) {
		t.Fatalf("sealed blob: %s", blob)
	}

	t.Log("When a controller challenges it, Then it answers with a quote the controller verifies")
	d.run("sh", "-c", "edgeseal attest quote --nonce 0011223344556677 --pcrs 7 --claim device_id=edge-7 > /root/quote.json")
	// The controller trusts this device's attestation key from enrolment: here, the
	// key in its first quote.
	var first struct {
		AKPublic string `json:"ak_public"`
	}
	if err := json.Unmarshal([]byte(d.run("cat", "/root/quote.json")), &first); err != nil || first.AKPublic == "" {
		t.Fatalf("quote JSON: %v", err)
	}
	writeFile(t, "/proc/"+fmt.Sprint(d.m.Leader())+"/root/root/ak.pem", []byte(first.AKPublic), 0o644)
	ok := d.run("edgeseal", "attest", "verify", "--quote", "/root/quote.json", "--ak", "/root/ak.pem",
		"--nonce", "0011223344556677", "--pcr", "7="+pcr7After("shim v1"))
	if !strings.Contains(ok, "quote verified") {
		t.Errorf("verify: %q", ok)
	}
	_, stderr, err := d.m.Run(context.Background(), "edgeseal", "attest", "verify", "--quote", "/root/quote.json", "--ak", "/root/ak.pem",
		"--nonce", "ffffffffffffffff")
	if err == nil || !strings.Contains(stderr, "stale or replayed") {
		t.Errorf("a stale nonce: %v %q", err, stderr)
	}

	t.Log("When it reboots with the same firmware, Then edgeseal.target comes up unattended")
	fw.rebootsUnattended(d, "shim v1", "after a reboot")

	t.Log("When an update to shim v2 is approved before it is installed, Then the next boot unseals")
	out := d.run("edgeseal", "tpm", "reseal", "--pcr", "7="+pcr7After("shim v2"))
	if !strings.Contains(out, "approved the given values of PCRs [7]") {
		t.Errorf("reseal said: %q", out)
	}
	fw.rebootsUnattended(d, "shim v2", "after an approved update")
	sealed := d.run("cat", "/var/lib/edgeseal/unseal-key.sealed")

	t.Log("When an unapproved shim boots, Then edgeseal-unseal refuses with status 15, naming PCR 7, and keeps the blob")
	fw.reboot(d, "shim from someone else")
	if msg := waitActive(d, "edgeseal-unseal.service", 60*time.Second); !strings.Contains(msg, "failed") {
		t.Fatalf("edgeseal-unseal with an unapproved PCR 7: %q", msg)
	}
	if s := d.isActive("edgeseal.target"); s == "active" {
		t.Error("edgeseal.target is active without an unsealed Vault")
	}
	show := d.run("systemctl", "show", "-p", "ExecMainStatus", "-p", "NRestarts", "edgeseal-unseal.service")
	if !strings.Contains(show, "ExecMainStatus=15\n") || !strings.Contains(show, "NRestarts=0") {
		t.Errorf("unit: %s", show)
	}
	if j := d.journal(); !strings.Contains(j, "PCR 7 (sha256)") {
		t.Errorf("the journal does not name PCR 7:\n%s", j)
	}
	if st := d.status(); st["ready"] != false || !strings.Contains(fmt.Sprint(st["daemon"].(map[string]any)["phase"]), "failed: cannot unseal the Vault unseal key") {
		t.Errorf("edgeseal status does not say why: %v", st["daemon"])
	}
	if d.run("cat", "/var/lib/edgeseal/unseal-key.sealed") != sealed {
		t.Error("the sealed key changed")
	}

	t.Log("When the approved shim boots again, Then the device is whole again")
	fw.rebootsUnattended(d, "shim v2", "after a reboot")

	t.Log("When its disk is moved to another device (another TPM), Then it refuses with status 11 and keeps the blob")
	thief := testbed.StartSWTPM(t)
	d.m.Stop(t)
	d.cfg.Seal.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", thief.Port)
	d.writeConfig()
	d.m.Reboot(t)
	refusedAtBoot(t, d, 11, "another device")
	if d.run("cat", "/var/lib/edgeseal/unseal-key.sealed") != sealed {
		t.Error("the sealed key changed")
	}
}

func TestRecoveryAfterAnUpdateThatWasNotApproved(t *testing.T) {
	testbed.Require(t, "tpm2_pcrextend", "tpm2_startup", "tpm2_shutdown")
	sw := testbed.StartSWTPM(t)
	fw := firmware{t, sw}
	fw.measure("shim v1")
	t.Log("Given a TPM-sealed device with a recovery key whose private half the operator keeps")
	pubPEM, privPEM := recoveryKeyPair(t)
	d := tpmDevice(t, sw, pubPEM, nil)
	d.run("systemctl", "enable", "edgeseal.target")
	d.start()
	if mode := d.run("stat", "-c", "%a", "/var/lib/edgeseal/unseal-key.recovery"); mode != "600\n" {
		t.Errorf("recovery copy mode %q", mode)
	}
	keepSecret(t, d)

	t.Log("When an update nobody approved boots, Then the TPM keeps the key (status 15)")
	fw.reboot(d, "shim v3, not approved")
	if msg := waitActive(d, "edgeseal-unseal.service", 60*time.Second); !strings.Contains(msg, "failed") {
		t.Fatalf("edgeseal-unseal: %q", msg)
	}

	t.Log("When the operator recovers with the recovery private key, Then Vault unseals and the new state is sealed to")
	recoverWith(t, d, privPEM)
	if _, _, err := d.m.Run(context.Background(), "test", "-f", "/var/lib/edgeseal/unseal-key.sealed.before-recovery"); err != nil {
		t.Error("the old sealed blob was not kept")
	}

	t.Log("And the next boot of the same software unseals unattended")
	fw.rebootsUnattended(d, "shim v3, not approved", "after a reboot")

	t.Log("And a wrong recovery key is refused")
	_, otherPriv := recoveryKeyPair(t)
	writeFile(t, "/proc/"+fmt.Sprint(d.m.Leader())+"/root/root/other.pem", otherPriv, 0o600)
	if _, stderr, err := d.m.Run(context.Background(), "edgeseal", "recover", "--recovery-key", "/root/other.pem"); err == nil || !strings.Contains(stderr, "another recovery key") {
		t.Errorf("a wrong recovery key: %v %q", err, stderr)
	}
}

// keepSecret writes a secret that recoverWith then expects to find.
func keepSecret(t *testing.T, d *device) {
	t.Helper()
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	if _, err := c.KVv2("secret").Put(context.Background(), "edgeseal/app-one/db", map[string]any{"v": "kept"}); err != nil {
		t.Fatal(err)
	}
}

// recoverWith runs `edgeseal recover` with the recovery private key privPEM,
// starts edgeseal.target again and checks the secret keepSecret wrote.
func recoverWith(t *testing.T, d *device, privPEM []byte) {
	t.Helper()
	writeFile(t, "/proc/"+fmt.Sprint(d.m.Leader())+"/root/root/recovery-private.pem", privPEM, 0o600)
	if out := d.run("edgeseal", "recover", "--recovery-key", "/root/recovery-private.pem"); !strings.Contains(out, "recovered") {
		t.Errorf("recover said %q", out)
	}
	d.run("systemctl", "reset-failed")
	d.start()
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	if s, err := c.KVv2("secret").Get(context.Background(), "edgeseal/app-one/db"); err != nil || s.Data["v"] != "kept" {
		t.Fatalf("the secret after recovery: %v %v", s, err)
	}
}

func recoveryKeyPair(t *testing.T) (pubPEM, privPEM []byte) {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pd, _ := x509.MarshalPKIXPublicKey(k.PublicKey())
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pd}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}
