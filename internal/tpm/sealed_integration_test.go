//go:build integration

package tpm_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

var unsealKey = bytes.Repeat([]byte{0xa5}, 32)

func extendPCR(t *testing.T, ctx *tpm2.TPMContext, pcr int, data string) {
	t.Helper()
	d := sha256.Sum256([]byte(data))
	if err := ctx.PCRExtend(ctx.PCRHandleContext(pcr), tpm2.TaggedHashList{tpm2.MakeTaggedHash(tpm2.HashAlgorithmSHA256, d[:])}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestSealedKeyUnsealsInTheApprovedStateAndAfterAReboot(t *testing.T) {
	s := testbed.StartSWTPM(t)
	ctx := openSWTPM(t, s)
	o, err := tpm.Seal(ctx, unsealKey, []int{7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpm.Unseal(ctx, o, nil)
	if err != nil || !bytes.Equal(got, unsealKey) {
		t.Fatalf("unseal: %x %v", got, err)
	}
	if n := transients(t, ctx); n != 0 {
		t.Errorf("%d transient objects left loaded", n)
	}
	ctx.Close()
	s.Reset(t)
	ctx = openSWTPM(t, s)
	if err := ctx.Startup(tpm2.StartupClear); err != nil {
		t.Fatal(err)
	}
	if got, err := tpm.Unseal(ctx, o, nil); err != nil || !bytes.Equal(got, unsealKey) {
		t.Fatalf("unseal after a reboot: %v", err)
	}
}

func TestAChangedPCRIsRefusedByNameUntilItsValueIsApproved(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	o, err := tpm.Seal(ctx, unsealKey, []int{0, 7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := o.Values[7]

	t.Log("an update will extend PCR 7: approve the value it will have, while the old state still unseals")
	measurement := sha256.Sum256([]byte("new shim"))
	expected := sha256.Sum256(append(append([]byte{}, before...), measurement[:]...))
	if err := o.Approve(ctx, nil, map[int][]byte{0: o.Values[0], 7: expected[:]}); err != nil {
		t.Fatal(err)
	}
	t.Log("the old state is no longer approved")
	if _, err := tpm.Unseal(ctx, o, nil); !errors.Is(err, tpm.ErrPCRMismatch) || !strings.Contains(err.Error(), "PCR 7 ") {
		t.Fatalf("err = %v, want a PCR mismatch naming PCR 7", err)
	}
	extendPCR(t, ctx, 7, "new shim")
	if got, err := tpm.Unseal(ctx, o, nil); err != nil || !bytes.Equal(got, unsealKey) {
		t.Fatalf("unseal in the newly approved state: %v", err)
	}
	t.Log("an unapproved change is refused, naming the PCR that changed")
	extendPCR(t, ctx, 7, "something else")
	_, err = tpm.Unseal(ctx, o, nil)
	if !errors.Is(err, tpm.ErrPCRMismatch) || !strings.Contains(err.Error(), "PCR 7 ") || strings.Contains(err.Error(), "PCR 0") {
		t.Fatalf("err = %v, want a PCR mismatch naming PCR 7 only", err)
	}
	if err := o.Approve(ctx, nil, map[int][]byte{0: o.Values[0], 7: before}); !errors.Is(err, tpm.ErrPCRMismatch) {
		t.Errorf("approving from an unapproved state: %v, want a PCR mismatch", err)
	}
	if n := transients(t, ctx); n != 0 {
		t.Errorf("%d transient objects left loaded", n)
	}
}

func TestAnotherDevicesTPMCannotUnseal(t *testing.T) {
	a := openSWTPM(t, testbed.StartSWTPM(t))
	b := openSWTPM(t, testbed.StartSWTPM(t))
	o, err := tpm.Seal(a, unsealKey, []int{7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tpm.EnsureSRK(b); err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.Unseal(b, o, nil); !errors.Is(err, tpm.ErrSRKChanged) {
		t.Fatalf("err = %v, want ErrSRKChanged", err)
	}
	// Even with the first TPM's SRK name forged, the object does not load there.
	fresh := openSWTPM(t, testbed.StartSWTPM(t))
	if _, err := tpm.Unseal(fresh, o, nil); !errors.Is(err, tpm.ErrSRKChanged) {
		t.Fatalf("on a TPM without an SRK: err = %v, want ErrSRKChanged", err)
	}
}

func TestAWrongPINCountsTowardLockoutWhichIsReported(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	pin := []byte("1234")
	o, err := tpm.Seal(ctx, unsealKey, []int{7}, pin)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tpm.Unseal(ctx, o, pin); err != nil || !bytes.Equal(got, unsealKey) {
		t.Fatalf("with the PIN: %v", err)
	}
	var last error
	for i := 0; i < 10; i++ {
		_, last = tpm.Unseal(ctx, o, []byte("0000"))
		if errors.Is(last, tpm.ErrLockout) {
			break
		}
		if !errors.Is(last, tpm.ErrWrongPIN) {
			t.Fatalf("attempt %d: err = %v, want ErrWrongPIN", i+1, last)
		}
	}
	t.Logf("what the operator reads: %v", last)
	if !errors.Is(last, tpm.ErrLockout) || !strings.Contains(last.Error(), "lifts in about") {
		t.Fatalf("after repeated wrong PINs: %v, want a lockout with its duration", last)
	}
	if _, err := tpm.Unseal(ctx, o, pin); !errors.Is(err, tpm.ErrLockout) {
		t.Errorf("the right PIN during lockout: %v, want ErrLockout", err)
	}
	if n := transients(t, ctx); n != 0 {
		t.Errorf("%d transient objects left loaded", n)
	}
}

func TestUncleanPowerOffsDoNotLockOutAKeyWithoutPIN(t *testing.T) {
	s := testbed.StartSWTPM(t)
	ctx := openSWTPM(t, s)
	o, err := tpm.Seal(ctx, unsealKey, []int{7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.Unseal(ctx, o, nil); err != nil {
		t.Fatal(err)
	}
	ctx.Close()
	for i := range 5 {
		s.Reset(t) // power cut: no TPM2_Shutdown
		ctx = openSWTPM(t, s)
		if err := ctx.Startup(tpm2.StartupClear); err != nil {
			t.Fatal(err)
		}
		if _, err := tpm.Unseal(ctx, o, nil); err != nil {
			t.Fatalf("after %d power cuts: %v", i+1, err)
		}
		ctx.Close()
	}
}
