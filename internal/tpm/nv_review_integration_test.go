//go:build integration

package tpm_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// The review of storage nv attacked it with the owner's authorisation, empty
// on an edgeseal device, which any member of tss has. Each test below performs
// one of its attacks; each failed on the code before its fix.

// An index undefined and defined again with the same public area has the same
// name: the attacker writes a secret and a signing key of their own into it.
func TestAnIndexRedefinedWithTheSamePublicAreaAndOtherDataIsRefused(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	o := roundTrip(t, sealNV(t, ctx, nil))
	rc, err := ctx.NewResourceContext(o.NV.Index)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := ctx.NVReadPublic(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctx.NVUndefineSpace(ctx.OwnerHandleContext(), rc, nil); err != nil {
		t.Fatal(err)
	}
	def := *pub
	def.Attrs &^= tpm2.AttrNVWritten | tpm2.AttrNVWriteLocked
	idx, err := ctx.NVDefineSpace(ctx.OwnerHandleContext(), nil, &def, nil)
	if err != nil {
		t.Fatal(err)
	}
	planted := append(append([]byte{1, 0, 32}, bytes.Repeat([]byte{0xee}, 32)...), bytes.Repeat([]byte{0x11}, 32)...)
	if err := ctx.NVWrite(idx, idx, planted, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := ctx.NVWriteLock(idx, idx, nil); err != nil {
		t.Fatal(err)
	}
	got, err := tpm.Unseal(ctx, o, nil)
	if !errors.Is(err, tpm.ErrNVChanged) {
		t.Fatalf("the genuine blob over a planted index: secret %x, %v; want ErrNVChanged", got, err)
	}
	t.Logf("refused: %v", err)
	if err := o.Approve(ctx, nil, o.Values); !errors.Is(err, tpm.ErrNVChanged) {
		t.Errorf("a reseal over the planted index: %v, want ErrNVChanged", err)
	}
}

// A counter squatted before the first seal with edgeseal's attributes and
// another name algorithm: the seal succeeded, and its blob never unsealed.
func TestACounterSquattedWithAnotherNameAlgorithmIsReported(t *testing.T) {
	for _, alg := range []tpm2.HashAlgorithmId{tpm2.HashAlgorithmSHA1, tpm2.HashAlgorithmSHA384} {
		t.Run(fmt.Sprintf("%#x", uint16(alg)), func(t *testing.T) {
			ctx := openSWTPM(t, testbed.StartSWTPM(t))
			pub := &tpm2.NVPublic{Index: testNV.Counter, NameAlg: alg, Size: 8,
				Attrs: tpm2.NVTypeCounter.WithAttrs(tpm2.AttrNVOwnerWrite | tpm2.AttrNVAuthRead | tpm2.AttrNVNoDA)}
			if _, err := ctx.NVDefineSpace(ctx.OwnerHandleContext(), nil, pub, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := tpm.SealNV(ctx, unsealKey, []int{7}, nil, testNV, nil); !errors.Is(err, tpm.ErrNVInUse) {
				t.Fatalf("a seal with a %v counter squatted: %v, want ErrNVInUse", alg, err)
			}
		})
	}
}

// recordingDevice keeps every command sent to the TPM, as someone reading
// the bus would.
type recordingDevice struct {
	tpm2.TPMDevice
	sent *bytes.Buffer
}

type recordingTransport struct {
	tpm2.Transport
	sent *bytes.Buffer
}

func (d recordingDevice) Open() (tpm2.Transport, error) {
	tr, err := d.TPMDevice.Open()
	return recordingTransport{tr, d.sent}, err
}

func (r recordingTransport) Write(b []byte) (int, error) {
	r.sent.Write(b)
	return r.Transport.Write(b)
}

// The PIN is the index's auth value, given when it is defined: it crossed
// the bus in clear (a sealed object's goes encrypted).
func TestThePINDoesNotCrossTheBusInClearWhenSealingIntoNV(t *testing.T) {
	s := testbed.StartSWTPM(t)
	dev, err := tpm.Device(fmt.Sprintf("swtpm:127.0.0.1:%d", s.Port))
	if err != nil {
		t.Fatal(err)
	}
	var sent bytes.Buffer
	ctx, err := tpm2.OpenTPMDevice(recordingDevice{dev, &sent})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	pin := []byte("PIN-4711-on-the-bus")
	if _, err := tpm.SealNV(ctx, unsealKey, []int{7}, pin, testNV, nil); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sent.Bytes(), pin) {
		t.Error("the PIN crossed the bus in clear")
	}
	if bytes.Contains(sent.Bytes(), unsealKey) {
		t.Error("the secret crossed the bus in clear")
	}
}

// A recovery seals into the other slot; the old slot's index stays until it
// is released, which may fail or not happen (a crash). The old blob must be
// refused from the commit on, released or not.
func TestARecoveryCommittedRefusesTheOldSlotEvenIfItIsNotReleased(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	old := roundTrip(t, sealNV(t, ctx, nil))
	recovered, err := tpm.SealNV(ctx, unsealKey, []int{7}, nil, testNV, old.NV)
	if err != nil {
		t.Fatal(err)
	}
	recovered = roundTrip(t, recovered)
	if err := recovered.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.Unseal(ctx, old, nil); !errors.Is(err, tpm.ErrRolledBack) {
		t.Fatalf("the old slot's blob after a committed recovery: %v, want ErrRolledBack", err)
	}
	if got, err := tpm.Unseal(ctx, recovered, nil); err != nil || !bytes.Equal(got, unsealKey) {
		t.Fatalf("the recovered blob: %v", err)
	}
}
