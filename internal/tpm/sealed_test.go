package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
)

func TestSealedDataRoundTripsAndRefusesDamage(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	secret := bytes.Repeat([]byte{7}, 32)
	data := packSealedData(secret, key)
	if len(data) > maxSealedData {
		t.Fatalf("%d bytes do not fit a sealed data object", len(data))
	}
	got, k, err := unpackSealedData(data)
	if err != nil || !bytes.Equal(got, secret) || !k.Equal(key) {
		t.Fatalf("round trip: %v", err)
	}
	for name, bad := range map[string][]byte{
		"empty":         nil,
		"wrong version": append([]byte{9}, data[1:]...),
		"truncated":     data[:len(data)-1],
		"too long":      append(append([]byte{}, data...), 0),
	} {
		if _, _, err := unpackSealedData(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
