package aesgcm

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// RFC 5869, test case 1: HKDF-SHA256 as the key derivation.
func TestKeyIsHKDFSHA256(t *testing.T) {
	ikm := bytes.Repeat([]byte{0x0b}, 22)
	salt, _ := hex.DecodeString("000102030405060708090a0b0c")
	info, _ := hex.DecodeString("f0f1f2f3f4f5f6f7f8f9")
	key, err := Key(ikm, salt, string(info))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(key); got != "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf" {
		t.Fatalf("OKM %s", got)
	}
}

func TestDeriveSealsWhatOnlyTheSameMaterialSaltAndInfoOpen(t *testing.T) {
	ikm, salt := bytes.Repeat([]byte{1}, 32), []byte("salt")
	a, err := Derive(ikm, salt, "edgeseal test v1")
	if err != nil {
		t.Fatal(err)
	}
	if a.NonceSize() != 12 {
		t.Fatalf("nonce %d bytes, want GCM's 12", a.NonceSize())
	}
	nonce := make([]byte, 12)
	ct := a.Seal(nil, nonce, []byte("secret"), []byte("aad"))
	for name, other := range map[string][3]any{
		"another info": {ikm, salt, "edgeseal test v2"},
		"another salt": {ikm, []byte("pepper"), "edgeseal test v1"},
		"another ikm":  {bytes.Repeat([]byte{2}, 32), salt, "edgeseal test v1"},
	} {
		b, err := Derive(other[0].([]byte), other[1].([]byte), other[2].(string))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Open(nil, nonce, ct, []byte("aad")); err == nil {
			t.Errorf("%s opens it", name)
		}
	}
	// The same as HKDF by hand, then AES-256-GCM: what the callers did before.
	key, _ := hkdf.Key(sha256.New, ikm, salt, "edgeseal test v1", 32)
	b, _ := New(key)
	if pt, err := b.Open(nil, nonce, ct, []byte("aad")); err != nil || string(pt) != "secret" {
		t.Fatalf("the hand-made cipher: %q, %v", pt, err)
	}
}
