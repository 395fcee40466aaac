//go:build integration

package seal_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

func tpmConfig(s *testbed.SWTPM) config.Seal {
	return config.Seal{Method: "tpm2", TPM2: config.TPM2{Device: fmt.Sprintf("swtpm:127.0.0.1:%d", s.Port), PCRs: []int{7}}}
}

// openTPM opens s for a test's own commands; the caller closes it.
func openTPM(t *testing.T, s *testbed.SWTPM) *tpm2.TPMContext {
	t.Helper()
	ctx, err := tpm.Open(fmt.Sprintf("swtpm:127.0.0.1:%d", s.Port))
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

func extend7(t *testing.T, s *testbed.SWTPM, what string) {
	t.Helper()
	ctx := openTPM(t, s)
	defer ctx.Close()
	d := sha256.Sum256([]byte(what))
	if err := ctx.PCRExtend(ctx.PCRHandleContext(7), tpm2.TaggedHashList{tpm2.MakeTaggedHash(tpm2.HashAlgorithmSHA256, d[:])}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestTPM2SealerThroughTheSealerInterface(t *testing.T) {
	ctx := context.Background()
	sw := testbed.StartSWTPM(t)
	cfg := tpmConfig(sw)
	s, err := seal.New(cfg, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{0x5a}, 32)
	blob, err := s.Seal(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Unseal(ctx, blob); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("unseal: %v", err)
	}

	t.Run("a damaged blob is corrupt", func(t *testing.T) {
		bad := bytes.Replace(blob, []byte(`"tpm2":"`), []byte(`"tpm2":"AAAA`), 1)
		if _, err := s.Unseal(ctx, bad); !errors.Is(err, seal.ErrCorrupt) {
			t.Errorf("err = %v, want ErrCorrupt", err)
		}
	})
	t.Run("another device's TPM is the wrong device", func(t *testing.T) {
		other, _ := seal.New(tpmConfig(testbed.StartSWTPM(t)), nil)
		if _, err := other.Unseal(ctx, blob); !errors.Is(err, seal.ErrWrongDevice) {
			t.Errorf("err = %v, want ErrWrongDevice", err)
		}
	})
	t.Run("no TPM is absent", func(t *testing.T) {
		c := cfg
		c.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", testbed.FreeLoopbackPort(t))
		gone, _ := seal.New(c, nil)
		if _, err := gone.Unseal(ctx, blob); !errors.Is(err, seal.ErrTPMAbsent) {
			t.Errorf("err = %v, want ErrTPMAbsent", err)
		}
	})
	t.Run("a PCR change is refused until approved", func(t *testing.T) {
		extend7(t, sw, "an update nobody approved")
		_, err := s.Unseal(ctx, blob)
		if !errors.Is(err, seal.ErrPCRMismatch) || !strings.Contains(err.Error(), "PCR 7") {
			t.Fatalf("err = %v, want ErrPCRMismatch naming PCR 7", err)
		}
		if _, err := seal.ApproveTPM2(cfg.TPM2, blob, nil); !errors.Is(err, seal.ErrPCRMismatch) {
			t.Errorf("approving from an unapproved state: %v", err)
		}
	})
}

func TestTPM2SealerWithAPINFile(t *testing.T) {
	ctx := context.Background()
	cfg := tpmConfig(testbed.StartSWTPM(t))
	pinFile := filepath.Join(t.TempDir(), "pin")
	os.WriteFile(pinFile, []byte("2468\n"), 0o600)
	cfg.TPM2.PINFile = pinFile
	s, _ := seal.New(cfg, nil)
	key := bytes.Repeat([]byte{1}, 32)
	blob, err := s.Seal(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Unseal(ctx, blob); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("with the PIN: %v", err)
	}
	os.WriteFile(pinFile, []byte("1357\n"), 0o600)
	if _, err := s.Unseal(ctx, blob); !errors.Is(err, seal.ErrWrongPIN) {
		t.Errorf("wrong PIN: %v", err)
	}
}
