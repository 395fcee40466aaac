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

// unseals checks that o unseals to unsealKey; what names the case.
func unseals(t *testing.T, ctx *tpm2.TPMContext, o *tpm.SealedObject, pin []byte, what string) {
	t.Helper()
	if got, err := tpm.Unseal(ctx, o, pin); err != nil || !bytes.Equal(got, unsealKey) {
		t.Fatalf("%s: %v", what, err)
	}
}

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
	ctx = powerCycle(t, s)
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

// A power cut (no TPM2_Shutdown) after a dictionary-attack-protected object
// was used counts as a failed authorisation. A key without a PIN is
// authorised by policy alone (no authValue) and sealed with noDA: power cuts
// after its use do not count, so they cannot spend the TPM's failure budget,
// and it unseals even in lockout. The control, on the same swtpm through the same kind of
// power cuts: a key with a PIN (an authValue, DA-protected) makes each cut
// count until its right PIN is refused with ErrLockout, which shows that
// swtpm does count them.
func TestUncleanPowerOffsLockOutAKeyWithAPINButNotOneWithout(t *testing.T) {
	const cuts = 5 // swtpm locks out after 3 failures (maxTries)
	s := testbed.StartSWTPM(t)
	ctx := openSWTPM(t, s)
	pin := []byte("1234")
	noDA, err := tpm.Seal(ctx, unsealKey, []int{7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	withPIN, err := tpm.Seal(ctx, unsealKey, []int{7}, pin)
	if err != nil {
		t.Fatal(err)
	}
	ctx.Close()
	// powerCut cuts the power and boots, and returns the TPM's failure count.
	powerCut := func() (*tpm2.TPMContext, uint32) {
		t.Helper()
		ctx := powerCycle(t, s) // no TPM2_Shutdown
		n, err := ctx.GetCapabilityTPMProperty(tpm2.PropertyLockoutCounter)
		if err != nil {
			t.Fatal(err)
		}
		return ctx, n
	}

	t.Log("Given a key without a PIN (noDA), unsealed at every boot")
	for cut := 1; cut <= cuts; cut++ {
		ctx, failures := powerCut()
		if failures != 0 {
			t.Fatalf("after %d power cuts with the key without a PIN in use, the TPM counts %d failures; want 0 (noDA)", cut, failures)
		}
		if _, err := tpm.Unseal(ctx, noDA, nil); err != nil {
			t.Fatalf("the key without a PIN after %d power cuts: %v", cut, err)
		}
		ctx.Close()
	}
	t.Logf("When the power is cut %d times, Then the TPM counts no failure and the key unseals", cuts)

	t.Log("Given, on the same TPM, a key with a PIN (DA-protected), unsealed with the right PIN at every boot")
	lockedAfter := 0
	for cut := 1; cut <= cuts && lockedAfter == 0; cut++ {
		ctx, failures := powerCut()
		switch _, err := tpm.Unseal(ctx, withPIN, pin); {
		case errors.Is(err, tpm.ErrLockout):
			lockedAfter = cut
			t.Logf("When the power is cut %d times (%d failures counted), Then the right PIN is refused: %v", cut, failures, err)
		case err != nil:
			t.Fatalf("the key with a PIN, its right PIN, after %d power cuts: %v; want it to unseal or ErrLockout", cut, err)
		}
		if _, err := tpm.Unseal(ctx, noDA, nil); err != nil {
			t.Fatalf("the key without a PIN after %d power cuts with the key with a PIN in use: %v", cut, err)
		}
		ctx.Close()
	}
	if lockedAfter == 0 {
		t.Fatalf("the key with a PIN still unseals after %d power cuts: swtpm did not count them, "+
			"so that the key without a PIN survives them shows nothing", cuts)
	}
	t.Log("And the key without a PIN still unseals while the TPM is in lockout")
	ctx = openSWTPM(t, s)
	if got, err := tpm.Unseal(ctx, noDA, nil); err != nil || !bytes.Equal(got, unsealKey) {
		t.Fatalf("the key without a PIN in lockout: %v", err)
	}
	if _, err := tpm.Unseal(ctx, withPIN, pin); !errors.Is(err, tpm.ErrLockout) {
		t.Fatalf("the key with a PIN: %v, want ErrLockout still", err)
	}
}
