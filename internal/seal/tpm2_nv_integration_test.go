//go:build integration

package seal_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

var updateNVGolden = flag.Bool("update-nv-golden", false, "rewrite testdata/tpm2-nv-v1.sealed and tpm2-v1.sealed from seals into swtpm")

func nvConfig(s *testbed.SWTPM) config.TPM2 {
	c := tpmConfig(s).TPM2
	d := config.Default().Seal.TPM2
	c.Storage, c.NVIndex, c.CounterIndex = config.TPM2StorageNV, d.NVIndex, d.CounterIndex
	return c
}

func TestTPM2SealerInNVRefusesARolledBackBlobAndRecoversIntoTheOtherSlot(t *testing.T) {
	ctx := t.Context()
	sw := testbed.StartSWTPM(t)
	cfg := nvConfig(sw)
	s, err := seal.New(config.Seal{Method: seal.MethodTPM2, TPM2: cfg}, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{0x5a}, 32)
	first, err := s.Seal(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if *updateNVGolden {
		fileCfg := cfg
		fileCfg.Storage = config.TPM2StorageFile
		inFile, err := seal.NewTPM2(fileCfg).Seal(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		for name, blob := range map[string][]byte{"tpm2-nv-v1.sealed": first, "tpm2-v1.sealed": inFile} {
			if err := os.WriteFile(filepath.Join("testdata", name), blob, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, err := s.Unseal(ctx, first); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("unseal: %v", err)
	}

	t.Log("Given `edgeseal tpm reseal`: the new blob written, then committed")
	second, err := seal.ApproveTPM2(cfg, first, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("(had writing the new blob failed, there is no commit, and the blob on disk still unseals)")
	if got, err := s.Unseal(ctx, first); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the old blob before the commit: %v", err)
	}
	if nv, err := seal.CommitTPM2(cfg, second); err != nil || !nv {
		t.Fatalf("commit: %v %v", nv, err)
	}
	t.Log("When the first blob is put back, Then it is refused as rolled back")
	if _, err := s.Unseal(ctx, first); !errors.Is(err, seal.ErrRolledBack) || errors.Is(err, seal.ErrWrongDevice) {
		t.Fatalf("the old blob: %v, want ErrRolledBack", err)
	}
	if got, err := s.Unseal(ctx, second); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the new blob: %v", err)
	}

	t.Log("Recovery seals into the other slot, then releases the old index")
	third, err := seal.ResealTPM2(cfg, key, second)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Unseal(ctx, second); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("before the release, the old blob still unseals: %v", err)
	}
	if err := seal.ReleaseTPM2(cfg, second); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Unseal(ctx, third); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the recovered blob: %v", err)
	}
	if _, err := s.Unseal(ctx, second); !errors.Is(err, seal.ErrWrongDevice) {
		t.Fatalf("the blob recovery replaced: %v, want ErrWrongDevice", err)
	}
	if _, err := s.Unseal(ctx, first); !errors.Is(err, seal.ErrWrongDevice) && !errors.Is(err, seal.ErrRolledBack) {
		t.Fatalf("the first blob: %v, want it refused", err)
	}
	t.Log("a second recovery goes back to the first slot")
	fourth, err := seal.ResealTPM2(cfg, key, third)
	if err != nil {
		t.Fatal(err)
	}
	if err := seal.ReleaseTPM2(cfg, third); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Unseal(ctx, fourth); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("after two recoveries: %v", err)
	}
	for _, h := range []tpm2.Handle{tpm2.Handle(cfg.NVIndex), tpm2.Handle(cfg.NVIndex + 1)} {
		t.Logf("slot %v defined: %v", h, handleExists(t, sw, h))
	}
	if n := btoi(handleExists(t, sw, tpm2.Handle(cfg.NVIndex))) + btoi(handleExists(t, sw, tpm2.Handle(cfg.NVIndex+1))); n != 1 {
		t.Errorf("%d sealed indices are left, want 1", n)
	}
}

func TestTPM2SealerInNVOnAClearedTPMSaysWrongDeviceAndCleared(t *testing.T) {
	sw := testbed.StartSWTPM(t)
	cfg := nvConfig(sw)
	s := seal.NewTPM2(cfg)
	blob, err := s.Seal(t.Context(), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	ctx := openTPM(t, sw)
	if err := ctx.Clear(ctx.LockoutHandleContext(), nil); err != nil {
		t.Fatal(err)
	}
	ctx.Close()
	_, err = s.Unseal(t.Context(), blob)
	if !errors.Is(err, seal.ErrWrongDevice) || !strings.Contains(err.Error(), "TPM was cleared") {
		t.Fatalf("err = %v, want ErrWrongDevice saying the TPM was cleared", err)
	}
}

func TestABlobSealedInAFileKeepsUnsealingAndResealingAfterStorageBecomesNV(t *testing.T) {
	sw := testbed.StartSWTPM(t)
	fileCfg := tpmConfig(sw).TPM2
	key := bytes.Repeat([]byte{2}, 32)
	blob, err := seal.NewTPM2(fileCfg).Seal(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := nvConfig(sw)
	if got, err := seal.NewTPM2(cfg).Unseal(t.Context(), blob); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("unseal with storage nv configured: %v", err)
	}
	again, err := seal.ApproveTPM2(cfg, blob, nil)
	if err != nil {
		t.Fatal(err)
	}
	if nv, err := seal.CommitTPM2(cfg, again); err != nil || nv {
		t.Fatalf("commit of a blob in a file: nv %v, %v; want no counter", nv, err)
	}
	if got, err := seal.NewTPM2(cfg).Unseal(t.Context(), again); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the resealed blob: %v", err)
	}
	if handleExists(t, sw, tpm2.Handle(cfg.NVIndex)) || handleExists(t, sw, tpm2.Handle(cfg.CounterIndex)) {
		t.Error("NV indices were defined for a blob in a file")
	}
}

func handleExists(t *testing.T, sw *testbed.SWTPM, h tpm2.Handle) bool {
	t.Helper()
	ctx := openTPM(t, sw)
	defer ctx.Close()
	return ctx.DoesHandleExist(h)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A device switched from storage file to nv by `edgeseal recover`: the blob
// of storage file it had (kept beside the new one as .before-recovery, or in
// a backup) is no counter's, and unsealed after any number of reseals (found
// by the review of storage nv). Once a key is sealed into NV storage, it is
// refused as rolled back.
func TestABlobOfStorageFileIsRefusedOnceAKeyIsSealedIntoNV(t *testing.T) {
	sw := testbed.StartSWTPM(t)
	key := bytes.Repeat([]byte{3}, 32)
	before, err := seal.NewTPM2(tpmConfig(sw).TPM2).Seal(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := nvConfig(sw)
	t.Log("Given the config says storage nv and the old blob still unseals until a key is sealed into NV")
	if got, err := seal.NewTPM2(cfg).Unseal(t.Context(), before); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the blob of storage file before any NV seal: %v", err)
	}
	t.Log("When edgeseal recover seals the key into NV and commits")
	after, err := seal.ResealTPM2(cfg, key, before)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seal.CommitTPM2(cfg, after); err != nil {
		t.Fatal(err)
	}
	t.Log("Then the blob of storage file is refused as rolled back, and the new one unseals")
	if _, err := seal.NewTPM2(cfg).Unseal(t.Context(), before); !errors.Is(err, seal.ErrRolledBack) {
		t.Fatalf("the blob of storage file after an NV seal: %v, want ErrRolledBack", err)
	}
	if _, err := seal.ApproveTPM2(cfg, before, nil); !errors.Is(err, seal.ErrRolledBack) {
		t.Errorf("a reseal of the blob of storage file after an NV seal: %v, want ErrRolledBack", err)
	}
	if got, err := seal.NewTPM2(cfg).Unseal(t.Context(), after); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the NV blob: %v", err)
	}
}
