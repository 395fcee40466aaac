//go:build integration

package tpm_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// A controller seals a key to a device's TPM from the device's enrolment key
// alone (the SRK's public area), without a TPM; only that TPM opens it, and
// nothing is left loaded.
func TestASecretSealedFromOutsideOpensOnlyInItsTPM(t *testing.T) {
	device := openSWTPM(t, testbed.StartSWTPM(t))
	other := openSWTPM(t, testbed.StartSWTPM(t))
	srk, err := tpm.SRKPublic(device)
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{0x5c}, 64) // a file vault key

	// The controller's side: the enrolment key and the secret, nothing else.
	wrapped, err := tpm.SealToTPM(srk, key)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := wrapped.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(wire, key) {
		t.Fatal("the secret is in clear in what the controller sends")
	}

	// The device's side: what arrived over the network.
	got, err := tpm.UnmarshalImportable(wire)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := tpm.OpenImported(device, got)
	if err != nil || !bytes.Equal(secret, key) {
		t.Fatalf("OpenImported on the device = %x, %v", secret, err)
	}
	if n := transients(t, device); n != 0 {
		t.Errorf("%d transient objects left loaded", n)
	}

	// Another device (a thief's, a spoofed exchange replayed elsewhere) cannot.
	if _, err := tpm.OpenImported(other, got); !errors.Is(err, tpm.ErrNotForThisTPM) {
		t.Errorf("OpenImported on another TPM: %v; want ErrNotForThisTPM", err)
	}
	if n := transients(t, other); n != 0 {
		t.Errorf("%d transient objects left loaded on the other TPM", n)
	}

	// A duplicate changed on the way fails its integrity check.
	bad := *got
	bad.Duplicate = bytes.Clone(got.Duplicate)
	bad.Duplicate[len(bad.Duplicate)-1] ^= 1
	if _, err := tpm.OpenImported(device, &bad); !errors.Is(err, tpm.ErrNotForThisTPM) {
		t.Errorf("OpenImported of a changed duplicate: %v; want ErrNotForThisTPM", err)
	}
}

// Sealing for something that is not an edgeseal storage root key, or a secret
// a sealed object cannot hold, is refused before anything is made.
func TestSealingToATPMRefusesABadKeyOrSecret(t *testing.T) {
	device := openSWTPM(t, testbed.StartSWTPM(t))
	srk, err := tpm.SRKPublic(device)
	if err != nil {
		t.Fatal(err)
	}
	notSRK := *srk
	notSRK.Attrs &^= tpm2.AttrRestricted // a plain decryption key is no storage parent
	if _, err := tpm.SealToTPM(&notSRK, []byte("k")); !errors.Is(err, tpm.ErrSRKMismatch) {
		t.Errorf("SealToTPM to a key that is not an SRK: %v", err)
	}
	// A sealed data object holds 1 to 128 bytes.
	for _, n := range []int{0, 129} {
		if _, err := tpm.SealToTPM(srk, make([]byte, n)); err == nil {
			t.Errorf("SealToTPM of %d bytes succeeded", n)
		}
	}
}
