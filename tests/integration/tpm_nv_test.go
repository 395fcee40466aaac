//go:build integration

package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// The boot story of seal.tpm2.storage nv: the sealed key in a TPM NV index and a
// rollback counter; an old sealed file put back after `edgeseal tpm reseal` is
// refused at boot, and recovery brings the device back.
func TestARolledBackSealedKeyInTPMNVIsRefusedAtBootAndRecovered(t *testing.T) {
	testbed.Require(t, "tpm2_pcrextend", "tpm2_startup", "tpm2_shutdown", "tpm2_getcap")
	sw := testbed.StartSWTPM(t)
	fw := firmware{t, sw}
	fw.measure("shim v1")
	t.Log("Given a device with seal.tpm2.storage nv and a recovery key")
	pubPEM, privPEM := recoveryKeyPair(t)
	d := tpmDevice(t, sw, pubPEM, func(c *config.Config) { c.Seal.TPM2.Storage = config.TPM2StorageNV })
	d.run("systemctl", "enable", "edgeseal.target")

	t.Log("When it boots for the first time, Then the key is sealed into the TPM's NV index and Vault unsealed")
	d.start()
	if st := d.status(); st["ready"] != true {
		t.Fatalf("status: %v", st)
	}
	if idx := nvIndices(t, fw); !strings.Contains(idx, "0x13E5E00") || !strings.Contains(idx, "0x13E5E10") {
		t.Fatalf("the TPM's NV indices: %s", idx)
	}
	keepSecret(t, d)
	backup := d.run("cat", "/var/lib/edgeseal/unseal-key.sealed") // the operator's copy
	putBack := func() {
		t.Helper()
		writeFile(t, "/proc/"+fmt.Sprint(d.m.Leader())+"/root/var/lib/edgeseal/unseal-key.sealed", []byte(backup), 0o600)
	}

	t.Log("When it reboots, Then it unseals unattended")
	fw.rebootsUnattended(d, "shim v1", "after a reboot")

	t.Log("When the operator runs `edgeseal tpm reseal`, Then the TPM's counter moves past the old sealed file")
	if out := d.run("edgeseal", "tpm", "reseal"); !strings.Contains(out, "advanced the TPM's rollback counter") {
		t.Errorf("reseal said: %q", out)
	}
	fw.rebootsUnattended(d, "shim v1", "after the reseal")

	t.Log("When the old sealed file is put back from the copy, Then the next boot refuses it (status 22), saying rolled back")
	putBack()
	fw.reboot(d, "shim v1")
	refusedAtBoot(t, d, 22, "rolled back", "restore the latest one, or bring the device back with `edgeseal recover`")

	t.Log("When the operator recovers, Then Vault unseals with its data, and the next boot is unattended")
	recoverWith(t, d, privPEM)
	if idx := nvIndices(t, fw); !strings.Contains(idx, "0x13E5E01") || strings.Contains(idx, "0x13E5E00") {
		t.Errorf("after recovery the key should be in the second slot alone: %s", idx)
	}
	fw.rebootsUnattended(d, "shim v1", "after recovery")
	t.Log("And the copy from before the reseal stays refused: its NV index is gone (status 11)")
	putBack()
	fw.reboot(d, "shim v1")
	refusedAtBoot(t, d, 11, "a recovery replaced this blob")
}

// nvIndices lists the TPM's NV index handles (tpm2_getcap handles-nv-index).
func nvIndices(t *testing.T, fw firmware) string {
	t.Helper()
	return fw.output("tpm2_getcap", "handles-nv-index")
}
