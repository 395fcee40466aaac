//go:build integration

package tpm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// persistents counts the TPM's persistent objects.
func persistents(t *testing.T, ctx *tpm2.TPMContext) int {
	t.Helper()
	h, err := ctx.GetCapabilityHandles(tpm2.HandleTypePersistent.BaseHandle(), 100)
	if err != nil {
		t.Fatal(err)
	}
	return len(h)
}

func selfSign(t *testing.T, k crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatalf("cannot sign with the TPM's CA key: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestACAKeyInTheTPMSignsCertificatesAndIsGoneOnceClosed(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	before := persistents(t, ctx)

	k, err := tpm.NewCAKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := k.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("the CA key is %T, want an ECDSA P-256 key", k.Public())
	}
	ca := selfSign(t, k)
	if ca.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("signature algorithm %v, want ECDSA with SHA-256", ca.SignatureAlgorithm)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("the self-signed certificate does not verify: %v", err)
	}

	t.Log("a leaf signed by it verifies against the CA certificate")
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err != nil {
		t.Errorf("the leaf does not verify: %v", err)
	}

	t.Log("it signs SHA-256 digests only")
	d := sha256.Sum256([]byte("x"))
	if _, err := k.Sign(rand.Reader, d[:20], crypto.SHA1); err == nil {
		t.Error("a SHA-1 digest was signed")
	}

	t.Log("closed, it is flushed: nothing loaded, nothing persisted, no more signatures")
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if n := transients(t, ctx); n != 0 {
		t.Errorf("%d transient objects left loaded", n)
	}
	if n := persistents(t, ctx); n != before {
		t.Errorf("%d persistent objects, %d before: the CA key was persisted", n, before)
	}
	if _, err := k.Sign(rand.Reader, d[:], crypto.SHA256); err == nil {
		t.Error("a flushed key signed")
	}

	t.Log("the next key is another: a CA key is never made twice")
	k2, err := tpm.NewCAKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Close()
	if k2.Public().(*ecdsa.PublicKey).Equal(pub) {
		t.Error("two CA keys made in a row are the same key")
	}
}

func TestTheCAKeyCannotLeaveTheTPM(t *testing.T) {
	s := testbed.StartSWTPM(t)
	ctx := openSWTPM(t, s)
	k, err := tpm.NewCAKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The object as the TPM holds it, read back by its handle.
	handles, err := ctx.GetCapabilityHandles(tpm2.HandleTypeTransient.BaseHandle(), 10)
	if err != nil || len(handles) != 1 {
		t.Fatalf("transient handles %v, %v; want one, the CA key", handles, err)
	}
	rc, err := ctx.NewResourceContext(handles[0])
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, err := ctx.ReadPublic(rc)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []tpm2.ObjectAttributes{tpm2.AttrFixedTPM, tpm2.AttrFixedParent, tpm2.AttrSensitiveDataOrigin, tpm2.AttrSign} {
		if pub.Attrs&a == 0 {
			t.Errorf("the CA key lacks %v: attributes %v", a, pub.Attrs)
		}
	}
	if pub.Attrs&tpm2.AttrRestricted != 0 {
		t.Errorf("the CA key is restricted (it could not sign a certificate's digest): %v", pub.Attrs)
	}

	t.Log("the TPM refuses to duplicate it (fixedParent), so its private part cannot be exported")
	if _, _, _, err := ctx.Duplicate(rc, ctx.NullHandleContext(), nil, nil, nil); err == nil {
		t.Error("the TPM duplicated the CA key")
	}

	t.Log("a context saved of it (what root could keep to sign later) cannot be loaded after a TPM reset: the key does not outlive the boot")
	saved, err := ctx.ContextSave(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ctx.ContextLoad(saved); err != nil {
		t.Fatalf("the saved context does not load before the reset either (the test proves nothing): %v", err)
	}
	ctx.Close()
	ctx = powerCycle(t, s)
	if rc, err := ctx.ContextLoad(saved); err == nil {
		ctx.FlushContext(rc)
		t.Fatal("the CA key's saved context loaded after a TPM reset")
	}
}
