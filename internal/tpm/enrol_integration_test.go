//go:build integration

package tpm_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/canonical/go-tpm2/mu"

	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// Enrolment ties the storage root key to the attestation key: a controller
// that trusts the AK learns the SRK to seal keys to, and what it seals opens
// in that TPM. A swapped SRK, another nonce or another AK is refused.
func TestEnrolmentProvesTheSRKIsInTheAttestationKeysTPM(t *testing.T) {
	device := openSWTPM(t, testbed.StartSWTPM(t))
	other := openSWTPM(t, testbed.StartSWTPM(t))
	nonce := []byte("controller-nonce-0001")
	e, err := tpm.MakeEnrolment(device, nonce)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tpm.ParseAKPublic([]byte(e.AKPublic))
	if err != nil {
		t.Fatal(err)
	}
	srk, err := tpm.VerifyEnrolment(e, ak, nonce)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := tpm.SealToTPM(srk, []byte("vault key"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tpm.OpenImported(device, wrapped); err != nil || !bytes.Equal(got, []byte("vault key")) {
		t.Fatalf("a key sealed to the enrolled SRK: %q, %v", got, err)
	}
	if n := transients(t, device); n != 0 {
		t.Errorf("%d transient objects left loaded", n)
	}

	// Another device's SRK passed off under this device's certification.
	theirs, err := tpm.SRKPublic(other)
	if err != nil {
		t.Fatal(err)
	}
	swapped := *e
	if swapped.SRKPublic, err = mu.MarshalToBytes(theirs); err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.VerifyEnrolment(&swapped, ak, nonce); !errors.Is(err, tpm.ErrEnrolment) {
		t.Errorf("a swapped SRK: %v; want ErrEnrolment", err)
	}
	if _, err := tpm.VerifyEnrolment(e, ak, []byte("another-nonce-002")); !errors.Is(err, tpm.ErrNonce) {
		t.Errorf("another nonce: %v; want ErrNonce", err)
	}
	theirEnrolment, err := tpm.MakeEnrolment(other, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.VerifyEnrolment(theirEnrolment, ak, nonce); !errors.Is(err, tpm.ErrSignature) {
		t.Errorf("another TPM's enrolment under this AK: %v; want ErrSignature", err)
	}
	for _, bad := range []*tpm.Enrolment{{Version: 2}, {Version: 1, SRKPublic: []byte{1}}} {
		if _, err := tpm.VerifyEnrolment(bad, ak, nonce); !errors.Is(err, tpm.ErrBadQuote) {
			t.Errorf("a malformed enrolment %+v: %v; want ErrBadQuote", bad, err)
		}
	}
}
