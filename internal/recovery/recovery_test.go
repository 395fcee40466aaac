package recovery

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
)

// keyPair returns an operator's key pair as the PEM files they would hold.
func keyPair(t *testing.T, curve string) (pubPEM, privPEM []byte) {
	t.Helper()
	var priv, pub any
	switch curve {
	case "p256":
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		priv, pub = k, &k.PublicKey
	case "x25519":
		k, _ := ecdh.X25519().GenerateKey(rand.Reader)
		priv, pub = k, k.PublicKey()
	}
	pd, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pd}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

func TestRecoveryCopyOpensOnlyWithTheOperatorsKey(t *testing.T) {
	secret := bytes.Repeat([]byte{0x42}, 32)
	for _, curve := range []string{"p256", "x25519"} {
		t.Run(curve, func(t *testing.T) {
			pubPEM, privPEM := keyPair(t, curve)
			r, err := ParseRecipient(pubPEM)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := Seal(r, secret)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(blob, secret) {
				t.Fatal("the secret is in clear in the recovery copy")
			}
			if fp, err := RecipientOf(blob); err != nil || fp != r.Fingerprint() {
				t.Errorf("recipient %q %v", fp, err)
			}
			priv, err := ParsePrivate(privPEM)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Open(priv, blob)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("open: %v", err)
			}
			_, otherPriv := keyPair(t, curve)
			op, _ := ParsePrivate(otherPriv)
			if _, err := Open(op, blob); !errors.Is(err, ErrNotForThisKey) {
				t.Errorf("another key: %v", err)
			}
			for i := range blob {
				bad := bytes.Clone(blob)
				bad[i] ^= 0x01
				if got, err := Open(priv, bad); err == nil && !bytes.Equal(got, secret) {
					t.Fatalf("a flipped byte %d gave a wrong secret", i)
				}
			}
		})
	}
}

func TestOnlyP256AndX25519KeysAreAccepted(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if _, err := ParseRecipient(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err == nil {
		t.Error("a P-384 key was accepted")
	}
	if _, err := ParseRecipient([]byte("not pem")); err == nil {
		t.Error("garbage was accepted")
	}
}

func FuzzOpen(f *testing.F) {
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(k.PublicKey())
	r, _ := ParseRecipient(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	blob, _ := Seal(r, []byte("0123456789abcdef0123456789abcdef"))
	f.Add(blob)
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		Open(k, data)
		RecipientOf(data)
	})
}
