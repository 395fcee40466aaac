//go:build integration

package pkistep

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/keyscan"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

func TestWithTheCAKeyInTheTPMTheBootsChainIsSignedThereAndNothingIsLeftLoaded(t *testing.T) {
	s := testbed.StartSWTPM(t)
	dev := fmt.Sprintf("swtpm:127.0.0.1:%d", s.Port)
	p := device(t, "pki:\n  ca_key: tpm\n  intermediate: true\nseal:\n  method: ikm-hook\n  tpm2:\n    device: "+dev+"\n")
	log, err := runStep(t, Options{Root: p.Root})
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if !strings.Contains(log, "the CA key was made in the TPM and flushed from it") || !strings.Contains(log, "ca_key=tpm") {
		t.Errorf("the journal does not say where the CA key was:\n%s", log)
	}
	ca := caCert(t, p)
	pub, ok := ca.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("the CA key is %T, want the TPM's ECDSA P-256", ca.PublicKey)
	}
	if ca.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("the CA signed with %v, want the TPM's ECDSA with SHA-256", ca.SignatureAlgorithm)
	}

	t.Log("Vault's chain verifies against this boot's CA, through the issuing CA (also the TPM's)")
	chain, err := os.ReadFile(p.VaultCert)
	if err != nil {
		t.Fatal(err)
	}
	certs := parsePEMCerts(t, chain)
	if len(certs) != 2 {
		t.Fatalf("vault.crt holds %d certificates, want the leaf and the issuing CA", len(certs))
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(ca)
	inter.AddCert(certs[1])
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "localhost"}); err != nil {
		t.Errorf("Vault's certificate does not verify: %v", err)
	}
	if ip, ok := certs[1].PublicKey.(*ecdsa.PublicKey); !ok || ip.Curve != elliptic.P256() {
		t.Errorf("the issuing CA key is %T, want the TPM's P-256", certs[1].PublicKey)
	}

	t.Log("no file holds a private key of either CA, and the TPM holds no object of them")
	for _, c := range []*x509.Certificate{ca, certs[1]} {
		found, err := keyscan.FindPrivateKeysMatching(p.Root, c.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) != 0 {
			t.Errorf("a private key of %s is in %v", c.Subject.CommonName, found)
		}
	}
	ctx, err := tpm.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	for _, ht := range []tpm2.HandleType{tpm2.HandleTypeTransient, tpm2.HandleTypePersistent} {
		h, err := ctx.GetCapabilityHandles(ht.BaseHandle(), 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 0 {
			t.Errorf("the TPM holds %d objects of type %v after the step: %v", len(h), ht, h)
		}
	}
}

func TestWithTheCAKeyInTheTPMAndNoTPMTheStepFailsNamingItAndWritesNothing(t *testing.T) {
	port := testbed.FreeLoopbackPort(t)
	p := device(t, fmt.Sprintf("pki:\n  ca_key: tpm\nseal:\n  method: ikm-hook\n  tpm2:\n    device: swtpm:127.0.0.1:%d\n", port))
	log, err := runStep(t, Options{Root: p.Root})
	if !errors.Is(err, tpm.ErrAbsent) || !strings.Contains(err.Error(), "pki.ca_key tpm") {
		t.Fatalf("err = %v, want ErrAbsent naming pki.ca_key tpm\n%s", err, log)
	}
	for _, f := range []string{p.CACert, p.VaultCert, p.VaultKey} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was written (%v)", f, err)
		}
	}
}

func parsePEMCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}
