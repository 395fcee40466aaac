//go:build integration

package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// swtpmForPKI lets edgeseal-pki reach the test's software TPM: swtpm listens on
// loopback TCP, and the unit (made for a device's /dev/tpmrm0) has no network.
// The spread suite's vm backend runs the unit as shipped, on a kernel TPM.
const swtpmForPKI = `[Service]
PrivateNetwork=no
RestrictAddressFamilies=AF_UNIX AF_INET
IPAddressDeny=any
IPAddressAllow=localhost
`

// tpmObjects counts the transient and persistent objects in the TPM.
func tpmObjects(t *testing.T, sw *testbed.SWTPM) (transient, persistent int) {
	t.Helper()
	ctx, err := tpm.Open(fmt.Sprintf("swtpm:127.0.0.1:%d", sw.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	var n [2]int
	for i, ht := range []tpm2.HandleType{tpm2.HandleTypeTransient, tpm2.HandleTypePersistent} {
		h, err := ctx.GetCapabilityHandles(ht.BaseHandle(), 100)
		if err != nil {
			t.Fatal(err)
		}
		n[i] = len(h)
	}
	return n[0], n[1]
}

func TestTheBootsCAKeyIsMadeInTheTPMAndFlushed(t *testing.T) {
	testbed.Require(t, "tpm2_pcrextend", "tpm2_startup", "tpm2_shutdown")
	sw := testbed.StartSWTPM(t)
	fw := firmware{t, sw}
	t.Log("Given a device with pki.ca_key tpm (and the vendor hook as its sealer: the CA's TPM is the one seal.tpm2.device names whatever the seal method)")
	d := newDevice(t, false, func(c *config.Config) {
		c.PKI.CAKey = config.CAKeyTPM
		c.PKI.Intermediate = true
		c.Seal.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", sw.Port)
	})
	d.dropIn("edgeseal-pki.service", "swtpm", swtpmForPKI)
	d.run("systemctl", "enable", "edgeseal.target")

	t.Log("When it boots, Then edgeseal-pki says the CA key was made in the TPM, and Vault serves with a chain signed there")
	d.start()
	if j := d.m.Journal(t, "edgeseal-pki.service"); !strings.Contains(j, "the CA key was made in the TPM and flushed from it") {
		t.Fatalf("edgeseal-pki's journal does not say the CA key was the TPM's:\n%s", j)
	}
	ca := bootCA(t, d)
	if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() || ca.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Fatalf("the CA is a %T signed with %v, want the TPM's P-256 key and ECDSA-SHA256", ca.PublicKey, ca.SignatureAlgorithm)
	}
	if st := d.status(); st["ready"] != true {
		t.Fatalf("status: %v", st)
	}
	if _, err := d.vaultClient().Sys().Health(); err != nil {
		t.Fatalf("a client verifying Vault against this boot's CA: %v", err)
	}

	t.Log("And no file holds a CA key, and the TPM holds nothing of it: no object loaded, none persisted")
	assertCAKeyNowhere(t, d)
	if tr, pe := tpmObjects(t, sw); tr != 0 || pe != 0 {
		t.Errorf("the TPM holds %d transient and %d persistent objects after the boot", tr, pe)
	}

	t.Log("When it reboots, Then this boot's CA is another key, made in the TPM again")
	fw.reboot(d, "shim v1")
	if msg := waitActive(d, "edgeseal.target", 60*time.Second); msg != "" {
		t.Fatalf("%s\n%s", msg, d.journal())
	}
	if again := bootCA(t, d); again.PublicKey.(*ecdsa.PublicKey).Equal(ca.PublicKey) {
		t.Error("the second boot's CA has the first boot's key")
	}

	t.Log("When the TPM is gone at the next boot, Then edgeseal-pki fails naming pki.ca_key and the TPM, and Vault does not start")
	d.m.Stop(t)
	sw.Stop(t)
	d.m.Reboot(t)
	if msg := waitActive(d, "edgeseal-pki.service", 60*time.Second); !strings.Contains(msg, "failed") {
		t.Fatalf("edgeseal-pki without its TPM: %q", msg)
	}
	if j := d.m.Journal(t, "edgeseal-pki.service"); !strings.Contains(j, "cannot make this boot's CA in the TPM (pki.ca_key tpm)") || !strings.Contains(j, "no TPM found") {
		t.Errorf("edgeseal-pki's journal does not say why:\n%s", j)
	}
	if s := d.isActive("edgeseal-vault.service"); s == "active" {
		t.Error("Vault started without this boot's PKI")
	}
	if _, _, err := d.m.Run(context.Background(), "test", "-e", "/run/edgeseal/pki/ca.crt"); err == nil {
		t.Error("a CA certificate was written without the TPM")
	}
}
