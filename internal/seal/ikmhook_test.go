package seal

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIKMHookRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook string // shell body printing the key material
	}{
		{"hex key material with a newline", "echo 3f1a9c0e7b2d4f6a8c1e3b5d7f9a0c2e"},
		{"hex key material without a newline", "printf 3f1a9c0e7b2d4f6a8c1e3b5d7f9a0c2e"},
		{"raw binary key material with NULs and newlines inside", `printf '\000\001\n\377\012\015abcdefghijklmnop\000'`},
		{"exactly 16 bytes", "printf 0123456789abcdef"},
		{"exactly 4096 bytes", "head -c 4096 /dev/zero"},
		{"4095 bytes and a trimmed newline", "head -c 4095 /dev/zero; echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := hookSealer(writeHook(t, tc.hook))
			if s.Method() != "ikm-hook" {
				t.Errorf("Method() = %q", s.Method())
			}
			secret := []byte("vault-unseal-key-0123456789abcdef")
			blob, err := s.Seal(t.Context(), secret)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(blob, secret) {
				t.Fatal("blob holds the secret in clear")
			}
			got, err := s.Unseal(t.Context(), blob)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("unsealed %q, want %q", got, secret)
			}
		})
	}
}

func TestIKMHookSealsFreshEachTime(t *testing.T) {
	h, _ := memSealer("0123456789abcdef")
	a, err := h.Seal(t.Context(), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Seal(t.Context(), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	ea, _ := ParseEnvelope(a)
	eb, _ := ParseEnvelope(b)
	if bytes.Equal(ea.Salt, eb.Salt) || bytes.Equal(ea.Nonce, eb.Nonce) {
		t.Error("two seals share a salt or a nonce")
	}
}

func TestIKMHookTrimsOnlyOneNewline(t *testing.T) {
	// echo and printf without newline give the same key material; two newlines do not.
	secret := []byte("k")
	blob, err := hookSealer(writeHook(t, "echo 0123456789abcdef0123")).Seal(t.Context(), secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hookSealer(writeHook(t, "printf 0123456789abcdef0123")).Unseal(t.Context(), blob); err != nil {
		t.Errorf("key material without its newline: %v", err)
	}
	if _, err := hookSealer(writeHook(t, "printf '0123456789abcdef0123\\n\\n'")).Unseal(t.Context(), blob); !errors.Is(err, ErrWrongDevice) {
		t.Errorf("key material with a second newline: got %v, want ErrWrongDevice", err)
	}
}

func TestIKMHookChangedKeyMaterialIsWrongDevice(t *testing.T) {
	// The hook reads its key material from a file, as a vendor hook would read a
	// fuse or a secure element; changing the file is moving the blob to another device.
	ikmFile := filepath.Join(t.TempDir(), "ikm")
	if err := os.WriteFile(ikmFile, []byte("device-A-3f1a9c0e7b2d4f6a8c1e\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := hookSealer(writeHook(t, "cat \"$1\""), ikmFile)
	secret := []byte("the Vault unseal key of device A")
	blob, err := s.Seal(t.Context(), secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ikmFile, []byte("device-B-3f1a9c0e7b2d4f6a8c1e\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Unseal(t.Context(), blob)
	if !errors.Is(err, ErrWrongDevice) {
		t.Fatalf("got %v, want ErrWrongDevice", err)
	}
	want := "the key material from the hook does not open this blob: the blob belongs to another device or the hook's key material changed"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	for _, leak := range []string{"device-A", "device-B", string(secret)} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("error %q quotes %q", err, leak)
		}
	}
}

func TestIKMHookEverySingleByteFlipFails(t *testing.T) {
	h, _ := memSealer("3f1a9c0e7b2d4f6a8c1e3b5d7f9a0c2e")
	secret := []byte("vault-unseal-key-0123456789abcdef")
	blob, err := h.Seal(t.Context(), secret)
	if err != nil {
		t.Fatal(err)
	}
	for i := range blob {
		for x := 1; x < 256; x++ {
			b := bytes.Clone(blob)
			b[i] ^= byte(x)
			got, err := h.Unseal(t.Context(), b)
			if err == nil {
				t.Fatalf("byte %d ^ %#x: unsealed %q", i, x, got)
			}
			if !isAny(err, ErrCorrupt, ErrWrongDevice) {
				t.Fatalf("byte %d ^ %#x: got %v, want ErrCorrupt or ErrWrongDevice", i, x, err)
			}
		}
	}
}

func TestIKMHookTruncationsAreCorrupt(t *testing.T) {
	h, src := memSealer("3f1a9c0e7b2d4f6a8c1e3b5d7f9a0c2e")
	blob, err := h.Seal(t.Context(), []byte("vault-unseal-key"))
	if err != nil {
		t.Fatal(err)
	}
	calls := src.calls
	for n := range len(blob) {
		if _, err := h.Unseal(t.Context(), blob[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("first %d of %d bytes: got %v, want ErrCorrupt", n, len(blob), err)
		}
	}
	if src.calls != calls {
		t.Errorf("the hook ran %d times for truncated blobs; a corrupt blob must not run it", src.calls-calls)
	}
}

func TestIKMHookRefusesBlobOfAnotherMethod(t *testing.T) {
	h, src := memSealer("3f1a9c0e7b2d4f6a8c1e3b5d7f9a0c2e")
	n, _ := NewNone(true, func(string) {})
	blob, err := n.Seal(t.Context(), []byte("vault-unseal-key"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Unseal(t.Context(), blob)
	if !errors.Is(err, ErrWrongMethod) {
		t.Fatalf("got %v, want ErrWrongMethod", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "sealed with method none") || !strings.Contains(msg, "this sealer is ikm-hook") {
		t.Errorf("error %q does not name both methods", msg)
	}
	if src.calls != 0 {
		t.Error("the hook ran for a blob of another method")
	}
}

func TestIKMHookWipesKeyMaterial(t *testing.T) {
	h, src := memSealer("3f1a9c0e7b2d4f6a8c1e3b5d7f9a0c2e")
	blob, err := h.Seal(t.Context(), []byte("vault-unseal-key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Unseal(t.Context(), blob); err != nil {
		t.Fatal(err)
	}
	if len(src.copies) != 2 {
		t.Fatalf("key material fetched %d times, want 2", len(src.copies))
	}
	for i, c := range src.copies {
		if !bytes.Equal(c, make([]byte, len(c))) {
			t.Errorf("key material of call %d was not wiped", i)
		}
	}
}

func TestIKMHookErrorsNeverQuoteKeyMaterialOrSecret(t *testing.T) {
	const ikm = "ikm-a1b2c3d4e5f6a7b8c9d0e1f2"
	secret := []byte("secret-0f1e2d3c4b5a69788796a5b4")
	blob, err := hookSealer(printHook(t, ikm)).Seal(t.Context(), secret)
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for _, body := range []string{
		"printf '%s' '" + ikm + "'; exit 1",                           // status
		"printf '%s' '" + ikm + "'; kill -TERM $$",                    // signal
		"printf 'ikm-a1b2'",                                           // too short
		"printf '%s' '" + ikm + "'; yes '" + ikm + "' | head -c 5000", // too long
		"echo other-device-key-material-0000",                         // wrong device
	} {
		_, err := hookSealer(writeHook(t, body)).Unseal(t.Context(), blob)
		errs = append(errs, err)
	}
	h, _ := memSealer(ikm)
	for i := range blob {
		b := bytes.Clone(blob)
		b[i] ^= 0x01
		_, err := h.Unseal(t.Context(), b)
		errs = append(errs, err)
	}
	for _, err := range errs {
		if err == nil {
			t.Fatal("a failure case succeeded")
		}
		msg := err.Error()
		for _, leak := range []string{ikm, "a1b2c3d4", string(secret), "0f1e2d3c"} {
			if strings.Contains(msg, leak) {
				t.Errorf("error %q quotes %q", msg, leak)
			}
		}
	}
}

func TestIKMHookRandomFailureIsReported(t *testing.T) {
	h, _ := memSealer("3f1a9c0e7b2d4f6a8c1e3b5d7f9a0c2e")
	h.rand = bytes.NewReader(nil)
	if _, err := h.Seal(t.Context(), []byte("k")); err == nil || !strings.Contains(err.Error(), "cannot read random salt") {
		t.Errorf("got %v", err)
	}
}

// A secret kept under the unseal key (Vault's root token) opens with that key
// and that purpose only: not with another key, not for another purpose, not as
// an ikm-hook unseal key with the same key material.
func TestAKeyedSealerOpensOnlyWithItsKeyAndPurpose(t *testing.T) {
	ctx := context.Background()
	key := bytes.Repeat([]byte{7}, 32)
	secret := []byte("hvs.a-root-token")
	blob, err := NewKeyed(key, "edgeseal admin-token v1").Seal(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewKeyed(key, "edgeseal admin-token v1").Unseal(ctx, blob)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	asUnsealKey := &ikmHook{info: kdfInfo, ikm: func(context.Context) ([]byte, error) { return bytes.Clone(key), nil }}
	for name, s := range map[string]Sealer{
		"another key":           NewKeyed(bytes.Repeat([]byte{8}, 32), "edgeseal admin-token v1"),
		"another purpose":       NewKeyed(key, "edgeseal something-else v1"),
		"the unseal key's info": asUnsealKey,
	} {
		if _, err := s.Unseal(ctx, blob); !errors.Is(err, ErrWrongDevice) {
			t.Errorf("%s: err = %v, want ErrWrongDevice", name, err)
		}
	}
}
