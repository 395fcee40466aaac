package seal

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNoneRefusesWithoutConsent(t *testing.T) {
	s, err := NewNone(false, func(string) { t.Error("warned while refusing") })
	if !errors.Is(err, ErrInsecureNotAllowed) || s != nil {
		t.Fatalf("got %v, %v; want ErrInsecureNotAllowed", s, err)
	}
	if !strings.Contains(err.Error(), "allow_insecure_none") {
		t.Errorf("error %q does not say how to consent", err)
	}
}

func TestNoneWarnsOnEverySealAndUnseal(t *testing.T) {
	var warnings []string
	s, err := NewNone(true, func(msg string) { warnings = append(warnings, msg) })
	if err != nil {
		t.Fatal(err)
	}
	if s.Method() != "none" {
		t.Errorf("Method() = %q", s.Method())
	}
	secret := []byte("vault-unseal-key-0123456789abcdef")
	blob, err := s.Seal(t.Context(), secret)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		got, err := s.Unseal(t.Context(), blob)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("unsealed %q, want %q", got, secret)
		}
	}
	if len(warnings) != 3 {
		t.Fatalf("warned %d times for 1 seal and 2 unseals", len(warnings))
	}
	for _, w := range warnings {
		if w != "WARNING: seal method none stores the Vault unseal key in clear on disk; for development only" {
			t.Errorf("warning %q", w)
		}
	}
	// A failed unseal warns too: the method is in use either way.
	_, _ = s.Unseal(t.Context(), []byte("{}"))
	if len(warnings) != 4 {
		t.Errorf("a failed unseal did not warn")
	}
}

func TestNoneStoresSecretInClear(t *testing.T) {
	s, _ := NewNone(true, func(string) {})
	blob, err := s.Seal(t.Context(), []byte("SSSS"))
	if err != nil {
		t.Fatal(err)
	}
	if string(blob) != validNone {
		t.Errorf("blob %q, want %q", blob, validNone)
	}
}

func TestNoneRejectsCorruptAndForeignBlobs(t *testing.T) {
	s, _ := NewNone(true, func(string) {})
	blob, err := s.Seal(t.Context(), []byte("vault-unseal-key"))
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(blob) {
		if _, err := s.Unseal(t.Context(), blob[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("first %d bytes: got %v, want ErrCorrupt", n, err)
		}
	}
	h, _ := memSealer("3f1a9c0e7b2d4f6a8c1e3b5d7f9a0c2e")
	foreign, err := h.Seal(t.Context(), []byte("vault-unseal-key"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Unseal(t.Context(), foreign)
	if !errors.Is(err, ErrWrongMethod) {
		t.Fatalf("got %v, want ErrWrongMethod", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "sealed with method ikm-hook") || !strings.Contains(msg, "this sealer is none") {
		t.Errorf("error %q does not name both methods", msg)
	}
}

func TestNoneWithoutWarnFuncStillWorks(t *testing.T) {
	s, err := NewNone(true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal(t.Context(), []byte("k")); err != nil {
		t.Fatal(err)
	}
}
