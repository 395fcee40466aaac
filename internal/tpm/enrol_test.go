package tpm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/canonical/go-tpm2/mu"
)

// An enrolment from the network never panics the controller, and every
// refusal is one of the sentinels it acts on.
func FuzzVerifyEnrolment(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	srk, _ := mu.MarshalToBytes(srkTemplate())
	f.Add(srk, []byte{0xff, 0x54, 0x43, 0x47}, []byte{0, 0x18})
	f.Add([]byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, srk, attest, sig []byte) {
		_, err := VerifyEnrolment(&Enrolment{Version: 1, SRKPublic: srk, Attest: attest, Signature: sig}, key.Public(), []byte("nonce-0123"))
		if err == nil {
			t.Fatal("a random enrolment verified")
		}
		if !errors.Is(err, ErrBadQuote) && !errors.Is(err, ErrEnrolment) && !errors.Is(err, ErrSignature) && !errors.Is(err, ErrNonce) {
			t.Fatalf("an error that is no sentinel: %v", err)
		}
	})
}
