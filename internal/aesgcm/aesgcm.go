// Package aesgcm is edgeseal's one construction of an AES-256-GCM cipher from
// key material: HKDF-SHA256 (RFC 5869) of the material, with a salt and an
// info string that bind the key to its one use, gives the 32-byte key; AES-256
// in GCM with its standard 12-byte nonce encrypts. The ikm-hook envelope and
// the admin token's (package seal), the recovery copy of the unseal key
// (package recovery) and the file vaults' controller protectors (package
// fsvault) all use it; each keeps its own nonce layout on disk, which this
// package does not touch (their golden fixtures pin them).
//
// It imports nothing of edgeseal's.
package aesgcm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// KeySize is the key AES-256 takes.
const KeySize = 32

// Key derives a KeySize key from ikm with HKDF-SHA256(salt, info). The caller
// wipes it when done.
func Key(ikm, salt []byte, info string) ([]byte, error) {
	key, err := hkdf.Key(sha256.New, ikm, salt, info, KeySize)
	if err != nil {
		return nil, fmt.Errorf("cannot derive a key: %w", err)
	}
	return key, nil
}

// New returns AES-256-GCM keyed with key (KeySize bytes).
func New(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cannot make the cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cannot make the cipher: %w", err)
	}
	return aead, nil
}

// Derive is New(Key(ikm, salt, info)); the derived key is wiped before it
// returns (the cipher's own expanded key is beyond reach: best effort).
func Derive(ikm, salt []byte, info string) (cipher.AEAD, error) {
	key, err := Key(ikm, salt, info)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return New(key)
}
