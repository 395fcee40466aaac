// Package recovery keeps a copy of the Vault unseal key that only the operator can
// open: encrypted to a public key whose private half never touches the device. It
// is the way back when the TPM will not release the key (PCR values that were not
// approved in time) and no approved state can be booted.
//
// Scheme: an ephemeral ECDH key pair (the recipient's curve: P-256 or X25519);
// HKDF-SHA256 over the shared secret, salt = ephemeral public || recipient public,
// info "edgeseal recovery v1"; AES-256-GCM with the recipient's fingerprint as
// additional data. The format is in docs/recovery.md.
package recovery

import (
	"bytes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/edgeseal/edgeseal/internal/aesgcm"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

const (
	version = 1
	info    = "edgeseal recovery v1"
	// maxBlob bounds a recovery blob read from disk.
	maxBlob = 4096
)

// ErrNotForThisKey: the recovery copy was made for another recovery key.
var ErrNotForThisKey = errors.New("the recovery copy was made for another recovery key")

// ErrCorrupt: the recovery copy cannot be read or fails its integrity check.
var ErrCorrupt = errors.New("the recovery copy is corrupt")

// Recipient is the operator's recovery public key.
type Recipient struct {
	pub *ecdh.PublicKey
	der []byte
}

// Fingerprint is the hex SHA-256 of the recipient's PKIX encoding.
func (r *Recipient) Fingerprint() string {
	sum := sha256.Sum256(r.der)
	return hex.EncodeToString(sum[:])
}

// ParseRecipient reads a PKIX PEM public key (P-256 or X25519).
func ParseRecipient(data []byte) (*Recipient, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("cannot read the recovery key: no PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("cannot read the recovery key: %w", err)
	}
	pub, err := toECDH(k)
	if err != nil {
		return nil, err
	}
	return &Recipient{pub: pub, der: blk.Bytes}, nil
}

func toECDH(k any) (*ecdh.PublicKey, error) {
	switch k := k.(type) {
	case *ecdh.PublicKey:
		if k.Curve() == ecdh.X25519() {
			return k, nil
		}
	case *ecdsa.PublicKey:
		if p, err := k.ECDH(); err == nil && p.Curve() == ecdh.P256() {
			return p, nil
		}
	}
	return nil, errors.New("cannot use the recovery key: it must be an X25519 or NIST P-256 public key")
}

// ParsePrivate reads the operator's PKCS#8 PEM private key.
func ParsePrivate(data []byte) (*ecdh.PrivateKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("cannot read the recovery private key: no PEM PRIVATE KEY (PKCS#8) block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("cannot read the recovery private key: %w", err)
	}
	switch k := k.(type) {
	case *ecdh.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k.ECDH()
	}
	return nil, errors.New("cannot use the recovery private key: it must be X25519 or NIST P-256")
}

type wire struct {
	Version    int    `json:"version"`
	Recipient  string `json:"recipient"` // fingerprint of the recovery public key
	Ephemeral  []byte `json:"ephemeral"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

func aead(shared, eph, recipient []byte) (cipher.AEAD, error) {
	return aesgcm.Derive(shared, append(bytes.Clone(eph), recipient...), info)
}

// Seal encrypts secret to r.
func Seal(r *Recipient, secret []byte) ([]byte, error) {
	eph, err := r.pub.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cannot make an ephemeral key: %w", err)
	}
	shared, err := eph.ECDH(r.pub)
	if err != nil {
		return nil, fmt.Errorf("cannot agree a key with the recovery key: %w", err)
	}
	defer clear(shared)
	w := wire{Version: version, Recipient: r.Fingerprint(), Ephemeral: eph.PublicKey().Bytes(), Nonce: make([]byte, 12)}
	rand.Read(w.Nonce)
	a, err := aead(shared, w.Ephemeral, r.pub.Bytes())
	if err != nil {
		return nil, err
	}
	w.Ciphertext = a.Seal(nil, w.Nonce, secret, []byte(info+w.Recipient))
	out, _ := json.Marshal(w)
	return append(out, '\n'), nil
}

// RecipientOf returns the fingerprint a recovery copy was made for.
func RecipientOf(blob []byte) (string, error) {
	w, err := parse(blob)
	if err != nil {
		return "", err
	}
	return w.Recipient, nil
}

func parse(blob []byte) (*wire, error) {
	var w wire
	if err := strictjson.Decode(blob, maxBlob, &w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if w.Version != version || len(w.Nonce) != 12 || len(w.Ephemeral) == 0 || len(w.Ciphertext) < 17 {
		return nil, fmt.Errorf("%w: version %d or fields out of shape", ErrCorrupt, w.Version)
	}
	return &w, nil
}

// Open decrypts a recovery copy with the operator's private key.
func Open(priv *ecdh.PrivateKey, blob []byte) ([]byte, error) {
	w, err := parse(blob)
	if err != nil {
		return nil, err
	}
	r := &Recipient{pub: priv.PublicKey()}
	if r.der, err = x509.MarshalPKIXPublicKey(recipientKey(priv)); err != nil {
		return nil, fmt.Errorf("cannot encode the recovery public key: %w", err)
	}
	if r.Fingerprint() != w.Recipient {
		return nil, ErrNotForThisKey
	}
	eph, err := priv.Curve().NewPublicKey(w.Ephemeral)
	if err != nil {
		return nil, fmt.Errorf("%w: bad ephemeral key", ErrCorrupt)
	}
	shared, err := priv.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer clear(shared)
	a, err := aead(shared, w.Ephemeral, priv.PublicKey().Bytes())
	if err != nil {
		return nil, err
	}
	secret, err := a.Open(nil, w.Nonce, w.Ciphertext, []byte(info+w.Recipient))
	if err != nil {
		return nil, fmt.Errorf("%w: it does not decrypt", ErrCorrupt)
	}
	return secret, nil
}

// recipientKey is the public key in the form x509 encodes as the operator's
// .pem does: ECDSA for P-256, ECDH for X25519.
func recipientKey(priv *ecdh.PrivateKey) any {
	if priv.Curve() == ecdh.P256() {
		b := priv.PublicKey().Bytes()
		pub, _ := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b)
		return pub
	}
	return priv.PublicKey()
}
