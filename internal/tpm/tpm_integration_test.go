//go:build integration

package tpm_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/objectutil"

	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

func openSWTPM(t *testing.T, s *testbed.SWTPM) *tpm2.TPMContext {
	t.Helper()
	ctx, err := tpm.Open(fmt.Sprintf("swtpm:127.0.0.1:%d", s.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctx.Close() })
	return ctx
}

// powerCycle resets the TPM (no TPM2_Shutdown: a power cut unless the caller
// shut it down), opens it again and runs TPM2_Startup, as a boot's firmware.
func powerCycle(t *testing.T, s *testbed.SWTPM) *tpm2.TPMContext {
	t.Helper()
	s.Reset(t)
	ctx := openSWTPM(t, s)
	if err := ctx.Startup(tpm2.StartupClear); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// transients counts loaded transient objects: swtpm has no resource manager, so
// anything edgeseal leaves loaded stays there.
func transients(t *testing.T, ctx *tpm2.TPMContext) int {
	t.Helper()
	h, err := ctx.GetCapabilityHandles(tpm2.HandleTypeTransient.BaseHandle(), 100)
	if err != nil {
		t.Fatal(err)
	}
	return len(h)
}

func TestOpensASoftwareTPMOverTCP(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	r, err := ctx.GetRandom(16)
	if err != nil || len(r) != 16 {
		t.Fatalf("GetRandom: %x %v", r, err)
	}
}

func TestOpeningATPMThatIsNotThereSaysAbsent(t *testing.T) {
	port := testbed.FreeLoopbackPort(t)
	for _, spec := range []string{fmt.Sprintf("swtpm:127.0.0.1:%d", port), "/dev/tpmrm9"} {
		if _, err := tpm.Open(spec); !errors.Is(err, tpm.ErrAbsent) {
			t.Errorf("%s: err = %v, want ErrAbsent", spec, err)
		}
	}
}

func TestSRKIsCreatedOnceThenReusedAcrossReboots(t *testing.T) {
	s := testbed.StartSWTPM(t)
	ctx := openSWTPM(t, s)
	srk, created, err := tpm.EnsureSRK(ctx)
	if err != nil || !created {
		t.Fatalf("first EnsureSRK: created %v, %v", created, err)
	}
	first := srk.Name()
	if srk.Handle() != tpm.SRKHandle {
		t.Errorf("SRK at %v, want %v", srk.Handle(), tpm.SRKHandle)
	}
	if n := transients(t, ctx); n != 0 {
		t.Errorf("%d transient objects left loaded", n)
	}
	ctx.Close()

	t.Log("after a reboot (TPM reset and Startup), the same SRK is found, not made again")
	ctx = powerCycle(t, s)
	srk, created, err = tpm.EnsureSRK(ctx)
	if err != nil || created {
		t.Fatalf("second EnsureSRK: created %v, %v", created, err)
	}
	if string(srk.Name()) != string(first) {
		t.Error("the SRK changed across a reboot")
	}
}

func TestAnotherTPMHasAnotherSRK(t *testing.T) {
	a := openSWTPM(t, testbed.StartSWTPM(t))
	b := openSWTPM(t, testbed.StartSWTPM(t))
	srkA, _, err := tpm.EnsureSRK(a)
	if err != nil {
		t.Fatal(err)
	}
	srkB, _, err := tpm.EnsureSRK(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(srkA.Name()) == string(srkB.Name()) {
		t.Error("two TPMs produced the same SRK")
	}
}

func TestADifferentKeyAtTheSRKHandleIsRefusedAndKept(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	// Someone else's key: an RSA storage key persisted at the SRK handle.
	other := objectutil.NewRSAStorageKeyTemplate()
	obj, _, _, _, _, err := ctx.CreatePrimary(ctx.OwnerHandleContext(), nil, other, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctx.EvictControl(ctx.OwnerHandleContext(), obj, tpm.SRKHandle, nil); err != nil {
		t.Fatal(err)
	}
	ctx.FlushContext(obj)
	if _, _, err := tpm.EnsureSRK(ctx); !errors.Is(err, tpm.ErrSRKMismatch) {
		t.Fatalf("err = %v, want ErrSRKMismatch", err)
	}
	rc, err := ctx.NewResourceContext(tpm.SRKHandle)
	if err != nil {
		t.Fatal(err)
	}
	if pub, _, _, err := ctx.ReadPublic(rc); err != nil || pub.Type != tpm2.ObjectTypeRSA {
		t.Errorf("the other key was touched: %v %v", pub, err)
	}
}
