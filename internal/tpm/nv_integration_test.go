//go:build integration

package tpm_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// testNV are the handles the NV tests seal into (the config's defaults).
var testNV = tpm.NVHandles{Index: 0x013e5e00, Counter: 0x013e5e10}

func sealNV(t *testing.T, ctx *tpm2.TPMContext, pin []byte) *tpm.SealedObject {
	t.Helper()
	o, err := tpm.SealNV(ctx, unsealKey, []int{7}, pin, testNV, nil)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func counterValue(t *testing.T, ctx *tpm2.TPMContext) uint64 {
	t.Helper()
	rc, err := ctx.NewResourceContext(testNV.Counter)
	if err != nil {
		t.Fatal(err)
	}
	v, err := ctx.NVReadCounter(rc, rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// roundTrip re-reads o from its binary form, as the blob on disk is.
func roundTrip(t *testing.T, o *tpm.SealedObject) *tpm.SealedObject {
	t.Helper()
	b, err := o.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := tpm.UnmarshalSealedObject(b)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

func TestAKeySealedInNVUnsealsInTheApprovedStateAndAfterAReboot(t *testing.T) {
	s := testbed.StartSWTPM(t)
	ctx := openSWTPM(t, s)
	o := roundTrip(t, sealNV(t, ctx, nil))
	if o.NV == nil || o.Public != nil || o.NV.Index != testNV.Index {
		t.Fatalf("sealed object is not in NV slot %v: %+v", testNV.Index, o.NV)
	}
	if got, err := tpm.Unseal(ctx, o, nil); err != nil || !bytes.Equal(got, unsealKey) {
		t.Fatalf("unseal: %x %v", got, err)
	}
	if n := transients(t, ctx); n != 0 {
		t.Errorf("%d transient objects left loaded", n)
	}
	ctx.Close()
	ctx = powerCycle(t, s)
	unseals(t, ctx, o, nil, "unseal after a reboot")
	t.Log("an unapproved PCR change is refused by name, as with a sealed object")
	extendPCR(t, ctx, 7, "unapproved")
	if _, err := tpm.Unseal(ctx, o, nil); !errors.Is(err, tpm.ErrPCRMismatch) || !strings.Contains(err.Error(), "PCR 7 ") {
		t.Fatalf("err = %v, want a PCR mismatch naming PCR 7", err)
	}
}

func TestAResealAdvancesTheCounterAndTheOldApprovalIsRefusedAsRolledBack(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	o := sealNV(t, ctx, nil)
	old := roundTrip(t, o)
	// The value the seal approved, which its first unseal advances the
	// counter to.
	before := o.NV.Value

	t.Log("Given a reseal (the same PCR values approved again), its blob written, then committed")
	if err := o.Approve(ctx, nil, o.Values); err != nil {
		t.Fatal(err)
	}
	if o.NV.Value != before+1 {
		t.Fatalf("the new approval is for counter value %d, want %d", o.NV.Value, before+1)
	}
	t.Log("before the commit both blobs unseal: a crash here loses nothing")
	for name, x := range map[string]*tpm.SealedObject{"old": roundTrip(t, old), "new": roundTrip(t, o)} {
		// Unseal of the new one would commit: check the old one with the
		// counter untouched first.
		if name == "new" {
			continue
		}
		if _, err := tpm.Unseal(ctx, x, nil); err != nil {
			t.Fatalf("the %s blob before the commit: %v", name, err)
		}
	}
	if err := o.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v := counterValue(t, ctx); v != before+1 {
		t.Fatalf("the counter is %d after the commit, want %d", v, before+1)
	}

	t.Log("When the old blob is put back (restored from a backup)")
	_, err := tpm.Unseal(ctx, old, nil)
	t.Log("Then it is refused as rolled back, saying what to do")
	if !errors.Is(err, tpm.ErrRolledBack) || !strings.Contains(err.Error(), "restore the latest") {
		t.Fatalf("err = %v, want ErrRolledBack", err)
	}
	unseals(t, ctx, o, nil, "the new blob")
}

func TestAResealInterruptedBeforeItsCommitIsFinishedByTheNextUnseal(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	o := sealNV(t, ctx, nil)
	old := roundTrip(t, o)
	if err := o.Approve(ctx, nil, o.Values); err != nil {
		t.Fatal(err)
	}
	t.Log("the new blob is written, the power goes before the commit; the next boot unseals it")
	if _, err := tpm.Unseal(ctx, roundTrip(t, o), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.Unseal(ctx, old, nil); !errors.Is(err, tpm.ErrRolledBack) {
		t.Fatalf("the old blob after the new one unsealed: %v, want ErrRolledBack", err)
	}
}

func TestAClearedTPMRefusesTheNVBlobSayingSo(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	o := sealNV(t, ctx, nil)
	if err := ctx.Clear(ctx.LockoutHandleContext(), nil); err != nil {
		t.Fatal(err)
	}
	_, err := tpm.Unseal(ctx, o, nil)
	if !errors.Is(err, tpm.ErrNVChanged) || !strings.Contains(err.Error(), "cleared") || !strings.Contains(err.Error(), "edgeseal recover") {
		t.Fatalf("err = %v, want ErrNVChanged saying the TPM was cleared", err)
	}
	t.Log("sealing again on the cleared TPM works and the counter does not go back")
	o2 := sealNV(t, ctx, nil)
	if o2.NV.Value < o.NV.Value {
		t.Errorf("the counter went back from %d to %d across a clear", o.NV.Value, o2.NV.Value)
	}
}

func TestAnotherIndexAtTheSameHandleIsRefused(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	o := sealNV(t, ctx, nil)
	sealNV(t, ctx, nil) // slot Index+1
	if err := o.Release(ctx); err != nil {
		t.Fatal(err)
	}
	o3 := sealNV(t, ctx, nil) // slot Index again, another index
	if o3.NV.Index != o.NV.Index {
		t.Fatalf("third seal in %v, want %v", o3.NV.Index, o.NV.Index)
	}
	if _, err := tpm.Unseal(ctx, o, nil); !errors.Is(err, tpm.ErrNVChanged) {
		t.Fatalf("err = %v, want ErrNVChanged", err)
	}
}

func TestTheSealedIndexCannotBeReadWithoutItsPolicyNorRewritten(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	o := sealNV(t, ctx, nil)
	idx, err := ctx.NewResourceContext(o.NV.Index)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := ctx.NVReadPublic(idx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctx.NVRead(ctx.OwnerHandleContext(), idx, pub.Size, 0, nil); !tpm2.IsTPMError(err, tpm2.ErrorNVAuthorization, tpm2.CommandNVRead) {
		t.Errorf("NV_Read with the owner's authorisation: %v, want TPM_RC_NV_AUTHORIZATION", err)
	}
	if _, err := ctx.NVRead(idx, idx, pub.Size, 0, nil); !tpm2.IsTPMError(err, tpm2.ErrorAuthUnavailable, tpm2.CommandNVRead) {
		t.Errorf("NV_Read with the index's (empty) auth value: %v, want TPM_RC_AUTH_UNAVAILABLE", err)
	}
	if err := ctx.NVWrite(idx, idx, make([]byte, pub.Size), 0, nil); !tpm2.IsTPMError(err, tpm2.ErrorNVLocked, tpm2.CommandNVWrite) {
		t.Errorf("NV_Write with the index's auth value: %v, want TPM_RC_NV_LOCKED", err)
	}
	if err := ctx.NVWrite(ctx.OwnerHandleContext(), idx, make([]byte, pub.Size), 0, nil); err == nil {
		t.Error("NV_Write with the owner's authorisation succeeded")
	}
	unseals(t, ctx, o, nil, "the key after the attempts")
}

func TestAFullNVStorageIsReportedNamingTheIndex(t *testing.T) {
	for _, tc := range []struct {
		name        string
		counterMade bool        // a seal before made the counter (a recovery on a full TPM)
		names       tpm2.Handle // the index the error must name (0: the counter or the key's)
	}{
		{"on a first seal", false, 0},
		{"with the counter in place", true, testNV.Index},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := openSWTPM(t, testbed.StartSWTPM(t))
			if tc.counterMade {
				if err := sealNV(t, ctx, nil).Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
			t.Log("Given a TPM whose NV storage is filled with other indices")
			defined := fillNV(t, ctx)
			t.Logf("%d indices (2048 bytes, then smaller) filled it", defined)
			t.Log("When the key is sealed into NV")
			_, err := tpm.SealNV(ctx, unsealKey, []int{7}, nil, testNV, nil)
			t.Log("Then the error says the NV storage is full, which index, and what to do")
			if !errors.Is(err, tpm.ErrNVFull) || !strings.Contains(err.Error(), "seal.tpm2.storage: file") {
				t.Fatalf("err = %v, want ErrNVFull", err)
			}
			named := []tpm2.Handle{tc.names}
			if tc.names == 0 {
				named = []tpm2.Handle{testNV.Counter, testNV.Index}
			}
			if !slices.ContainsFunc(named, func(h tpm2.Handle) bool { return strings.Contains(err.Error(), "NV index "+h.String()) }) {
				t.Errorf("the error names none of %v: %v", named, err)
			}
		})
	}
}

// fillNV defines indices until TPM_RC_NV_SPACE, 2048 bytes each then smaller
// down to one byte, and undefines them when the test ends. It returns how many.
func fillNV(t *testing.T, ctx *tpm2.TPMContext) int {
	t.Helper()
	var defined []tpm2.ResourceContext
	t.Cleanup(func() {
		for _, rc := range defined {
			if err := ctx.NVUndefineSpace(ctx.OwnerHandleContext(), rc, nil); err != nil {
				t.Errorf("cannot undefine %v: %v", rc.Handle(), err)
			}
		}
	})
	h := tpm2.Handle(0x01000000)
	for size := uint16(2048); size > 0; size /= 2 {
		for {
			pub := &tpm2.NVPublic{Index: h, NameAlg: tpm2.HashAlgorithmSHA256, Size: size,
				Attrs: tpm2.NVTypeOrdinary.WithAttrs(tpm2.AttrNVAuthWrite | tpm2.AttrNVAuthRead | tpm2.AttrNVNoDA)}
			rc, err := ctx.NVDefineSpace(ctx.OwnerHandleContext(), nil, pub, nil)
			if tpm2.IsTPMError(err, tpm2.ErrorNVSpace, tpm2.CommandNVDefineSpace) {
				break // then smaller ones
			}
			if err != nil {
				t.Fatalf("defining filler %v: %v", h, err)
			}
			defined = append(defined, rc)
			h++
			if len(defined) > 1024 {
				t.Fatal("the TPM took 1024 NV indices without TPM_RC_NV_SPACE")
			}
		}
	}
	return len(defined)
}

func TestAKeySealedInNVWithAPINNeedsItAndCountsWrongOnes(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	pin := []byte("2468")
	o := sealNV(t, ctx, pin)
	before, err := ctx.GetCapabilityTPMProperty(tpm2.PropertyLockoutCounter)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.Unseal(ctx, o, []byte("1357")); !errors.Is(err, tpm.ErrWrongPIN) {
		t.Fatalf("a wrong PIN: %v, want ErrWrongPIN", err)
	}
	if after, _ := ctx.GetCapabilityTPMProperty(tpm2.PropertyLockoutCounter); after != before+1 {
		t.Errorf("the lockout counter went from %d to %d, want one more", before, after)
	}
	unseals(t, ctx, o, pin, "the right PIN")
}

func TestIndicesThatAreNotEdgesealsAreReportedAndLeftAlone(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	foreign := func(h tpm2.Handle) *tpm2.NVPublic {
		return &tpm2.NVPublic{Index: h, NameAlg: tpm2.HashAlgorithmSHA256, Size: 16,
			Attrs: tpm2.NVTypeOrdinary.WithAttrs(tpm2.AttrNVOwnerWrite | tpm2.AttrNVOwnerRead | tpm2.AttrNVNoDA)}
	}
	names := map[tpm2.Handle]tpm2.Name{}
	for _, h := range []tpm2.Handle{testNV.Index, testNV.Index + 1} {
		rc, err := ctx.NVDefineSpace(ctx.OwnerHandleContext(), nil, foreign(h), nil)
		if err != nil {
			t.Fatal(err)
		}
		names[h] = rc.Name()
	}
	if _, err := tpm.SealNV(ctx, unsealKey, []int{7}, nil, testNV, nil); !errors.Is(err, tpm.ErrNVInUse) || !strings.Contains(err.Error(), "seal.tpm2.nv_index") {
		t.Fatalf("both slots another's: %v, want ErrNVInUse naming seal.tpm2.nv_index", err)
	}
	for h, name := range names {
		rc, err := ctx.NewResourceContext(h)
		if err != nil || !bytes.Equal(rc.Name(), name) {
			t.Errorf("the index at %v was touched: %v", h, err)
		}
	}
	t.Log("another's index at the counter's handle is reported too")
	other := tpm.NVHandles{Index: 0x01000100, Counter: testNV.Index}
	if _, err := tpm.SealNV(ctx, unsealKey, []int{7}, nil, other, nil); !errors.Is(err, tpm.ErrNVInUse) || !strings.Contains(err.Error(), "seal.tpm2.counter_index") {
		t.Fatalf("the counter's handle another's: %v, want ErrNVInUse naming seal.tpm2.counter_index", err)
	}
}

func TestASealThatDidNotFinishLeavesASlotThatTheNextSealTakesBack(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	current := sealNV(t, ctx, nil)                                        // slot Index, named by the blob on disk
	orphan, err := tpm.SealNV(ctx, unsealKey, []int{7}, nil, testNV, nil) // slot Index+1: a recovery whose blob was never written
	if err != nil || orphan.NV.Index != testNV.Index+1 {
		t.Fatalf("second seal: %v", err)
	}
	t.Log("the next recovery, with the blob on disk naming slot Index, takes Index+1 back")
	again, err := tpm.SealNV(ctx, unsealKey, []int{7}, nil, testNV, current.NV)
	if err != nil || again.NV.Index != testNV.Index+1 {
		t.Fatalf("third seal: %v", err)
	}
	unseals(t, ctx, current, nil, "the blob on disk")
	if _, err := tpm.Unseal(ctx, orphan, nil); !errors.Is(err, tpm.ErrNVChanged) {
		t.Fatalf("the orphan: %v, want ErrNVChanged", err)
	}
}

func TestACounterDefinedButNeverIncrementedIsStartedBySealing(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	t.Log("a first seal stopped between defining the counter and its first increment")
	pub := &tpm2.NVPublic{Index: testNV.Counter, NameAlg: tpm2.HashAlgorithmSHA256, Size: 8,
		Attrs: tpm2.NVTypeCounter.WithAttrs(tpm2.AttrNVOwnerWrite | tpm2.AttrNVAuthRead | tpm2.AttrNVNoDA)}
	if _, err := ctx.NVDefineSpace(ctx.OwnerHandleContext(), nil, pub, nil); err != nil {
		t.Fatal(err)
	}
	unseals(t, ctx, sealNV(t, ctx, nil), nil, "sealed over a counter never incremented")
}
