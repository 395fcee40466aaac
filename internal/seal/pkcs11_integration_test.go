//go:build integration

package seal_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

const (
	tokenPIN = "4711"
	keyLabel = "edgeseal-unseal"
)

// softToken is a SoftHSM2 store with the token "device" and its sealing key,
// and the pkcs11 sealer's config for it (PIN file in place).
func softToken(t testing.TB) (*testbed.SoftHSM, config.PKCS11, string) {
	t.Helper()
	h := testbed.NewSoftHSM(t)
	t.Setenv("SOFTHSM2_CONF", h.Conf)
	serial := h.InitToken(t, "device", tokenPIN, keyLabel)
	pin := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pin, []byte(tokenPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h, config.PKCS11{Module: testbed.SoftHSMModule, TokenLabel: "device", KeyLabel: keyLabel, PINFile: pin,
		Timeout: config.Duration(30 * time.Second)}, serial
}

// pkcs11Sealer is the sealer of cfg with the helper of test t (a subtest
// passes its parent's t, whose helper is built already).
func pkcs11Sealer(t testing.TB, cfg config.PKCS11) seal.Sealer {
	return seal.NewPKCS11WithHelper(cfg, testbed.PKCS11Helper(t))
}

func TestPKCS11SealsWithSoftHSMAndUnsealsInAnotherProcess(t *testing.T) {
	_, cfg, serial := softToken(t)
	key := bytes.Repeat([]byte{0x5a}, 32)
	t.Log("Given a SoftHSM2 token with a non-extractable AES key, When the first boot seals the unseal key")
	blob, err := pkcs11Sealer(t, cfg).Seal(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	e, err := seal.ParseEnvelope(blob)
	if err != nil || e.Method != "pkcs11" || string(e.Token) != serial {
		t.Fatalf("blob %s: %v", blob, err)
	}
	t.Log("Then every later boot (a new helper process each time) unseals it, by label or by serial")
	for _, c := range []config.PKCS11{cfg, func() config.PKCS11 { c := cfg; c.TokenLabel, c.TokenSerial = "", serial; return c }()} {
		got, err := pkcs11Sealer(t, c).Unseal(t.Context(), blob)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("unseal: %x, %v", got, err)
		}
	}
}

func TestPKCS11RefusalsAgainstSoftHSM(t *testing.T) {
	top := t // its helper serves the subtests
	h, cfg, _ := softToken(t)
	blob, err := pkcs11Sealer(t, cfg).Seal(t.Context(), []byte("the unseal key"))
	if err != nil {
		t.Fatal(err)
	}
	wrongPIN := filepath.Join(t.TempDir(), "wrong-pin")
	os.WriteFile(wrongPIN, []byte("1234\n"), 0o600)
	// Another token with the same token label's twin: same key label, its own key.
	h.InitToken(t, "other", tokenPIN, keyLabel)
	// A token without the key.
	h.InitToken(t, "bare", tokenPIN, "something-else")

	for _, tc := range []struct {
		name string
		edit func(c *config.PKCS11)
		want error
		says string
	}{
		{"a wrong PIN", func(c *config.PKCS11) { c.PINFile = wrongPIN }, seal.ErrWrongPIN, "CKR_PIN_INCORRECT"},
		{"a missing token", func(c *config.PKCS11) { c.TokenLabel = "unplugged" }, seal.ErrTokenAbsent, `no token labelled "unplugged"`},
		{"another token's key with the same label", func(c *config.PKCS11) { c.TokenLabel = "other" }, seal.ErrWrongDevice, "was sealed with the key of the token with serial"},
		{"a token without the key", func(c *config.PKCS11) { c.TokenLabel = "bare" }, seal.ErrWrongDevice, "serial"},
		{"a key label the token lacks", func(c *config.PKCS11) { c.KeyLabel = "no-such-key" }, seal.ErrKeyAbsent, `no AES key labelled "no-such-key"`},
		{"a module that is not there", func(c *config.PKCS11) { c.Module = "/usr/lib/no-such-pkcs11.so" }, seal.ErrPKCS11, "seal.pkcs11.module"},
		{"a module that is not PKCS#11", func(c *config.PKCS11) { c.Module = "/usr/lib/x86_64-linux-gnu/libc.so.6" }, seal.ErrPKCS11, "not a PKCS#11 library"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.edit(&c)
			_, err := pkcs11Sealer(top, c).Unseal(t.Context(), blob)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("%v, want %v saying %q", err, tc.want, tc.says)
			}
		})
	}

	t.Run("a token without the key, at the first boot", func(t *testing.T) {
		c := cfg
		c.TokenLabel = "bare"
		if _, err := pkcs11Sealer(top, c).Seal(t.Context(), []byte("k")); !errors.Is(err, seal.ErrKeyAbsent) {
			t.Fatalf("%v, want ErrKeyAbsent", err)
		}
	})

	t.Run("the key replaced by another of the same label", func(t *testing.T) {
		h := testbed.NewSoftHSM(t)
		t.Setenv("SOFTHSM2_CONF", h.Conf)
		h.InitToken(t, "device", tokenPIN, "")
		bare := filepath.Join(t.TempDir(), "tokens")
		copyDir(t, h.Tokens, bare)
		h.GenerateKey(top, "device", tokenPIN, keyLabel)
		blob, err := pkcs11Sealer(top, cfg).Seal(t.Context(), []byte("the unseal key"))
		if err != nil {
			t.Fatal(err)
		}
		// The token as it was before the key (same serial), and a new key.
		if err := os.RemoveAll(h.Tokens); err != nil {
			t.Fatal(err)
		}
		copyDir(t, bare, h.Tokens)
		h.GenerateKey(top, "device", tokenPIN, keyLabel)
		if _, err := pkcs11Sealer(top, cfg).Unseal(t.Context(), blob); !errors.Is(err, seal.ErrWrongDevice) || !strings.Contains(err.Error(), "does not open the blob") {
			t.Fatalf("%v, want ErrWrongDevice: the key does not open the blob", err)
		}
	})
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", from, to, err, out)
	}
}

// BenchmarkPKCS11: sealing and unsealing the unseal key with SoftHSM2, each a
// run of the helper (module load, login, one AES-GCM): what a boot pays.
func BenchmarkPKCS11(b *testing.B) {
	_, cfg, _ := softToken(b)
	s := pkcs11Sealer(b, cfg)
	key := bytes.Repeat([]byte{1}, 32)
	blob, err := s.Seal(b.Context(), key)
	if err != nil {
		b.Fatal(err)
	}
	sealT, unsealT := testbed.NewSeries("seal", "ms"), testbed.NewSeries("unseal", "ms")
	for range b.N {
		t0 := time.Now()
		if _, err := s.Seal(b.Context(), key); err != nil {
			b.Fatal(err)
		}
		sealT.AddDur(time.Since(t0))
		t0 = time.Now()
		if _, err := s.Unseal(b.Context(), blob); err != nil {
			b.Fatal(err)
		}
		unsealT.AddDur(time.Since(t0))
	}
	sealT.Report(b)
	unsealT.Report(b)
	b.Logf("pkcs11 on SoftHSM2: seal %s, unseal %s", sealT, unsealT)
}
