package ctlproto

import (
	"bytes"
	"crypto"
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
	"slices"
	"strconv"

	"github.com/edgeseal/edgeseal/internal/tpm"
)

// BundleDomain separates a bundle signature from any other use of the
// controller's signing key.
const BundleDomain = "edgeseal controller bundle v1\x00"

func bundleDigest(payload []byte) []byte {
	h := sha256.New()
	h.Write([]byte(BundleDomain))
	h.Write(payload)
	return h.Sum(nil)
}

// Sign encodes and signs b with the controller's key: an ECDSA P-256 key,
// in memory or held elsewhere (an OpenBao transit key) behind crypto.Signer,
// giving an ASN.1 signature of the digest.
func Sign(key crypto.Signer, b *Bundle) (*SignedBundle, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("cannot sign the key bundle: %w", err)
	}
	payload, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("cannot encode the key bundle: %w", err)
	}
	if pub, ok := key.Public().(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("cannot sign the key bundle: the signing key is not an ECDSA P-256 key")
	}
	sig, err := key.Sign(rand.Reader, bundleDigest(payload), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("cannot sign the key bundle: %w", err)
	}
	return &SignedBundle{Payload: payload, Signature: sig}, nil
}

// OpenBundle checks s before anything in it is used: signed by pub (the
// controller the device enrolled with), for deviceID, answering the request
// that carried requestNonce; and in shape. In that order: a forged bundle is
// ErrBundleSignature, a replayed one ErrReplay, another device's
// ErrOtherDevice.
func OpenBundle(s *SignedBundle, pub *ecdsa.PublicKey, deviceID string, requestNonce []byte) (*Bundle, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !ecdsa.VerifyASN1(pub, bundleDigest(s.Payload), s.Signature) {
		return nil, ErrBundleSignature
	}
	var b Bundle
	if err := Unmarshal(s.Payload, &b); err != nil {
		return nil, err
	}
	if !bytes.Equal(b.RequestNonce, requestNonce) {
		return nil, ErrReplay
	}
	if b.DeviceID != deviceID {
		return nil, fmt.Errorf("%w (%s, not %s)", ErrOtherDevice, b.DeviceID, deviceID)
	}
	return &b, nil
}

// NewSigningKey makes a controller signing key (ECDSA P-256).
func NewSigningKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// MarshalPublicKey is the PEM PUBLIC KEY of an ECDSA P-256 key.
func MarshalPublicKey(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// ParsePublicKey reads a PEM PUBLIC KEY that must be ECDSA P-256 (a
// controller's signing key, a device's TLS client key).
func ParsePublicKey(data string) (*ecdsa.PublicKey, error) {
	blk, rest := pem.Decode([]byte(data))
	if blk == nil || blk.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("cannot read the public key: not one PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("cannot read the public key: %w", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("cannot use the public key: it is not ECDSA P-256")
	}
	return ek, nil
}

// QuoteFromTPM is the wire form of a quote made by tpm.MakeQuote.
func QuoteFromTPM(q *tpm.Quote) (*Quote, error) {
	nonce, err := hex.DecodeString(q.Nonce)
	if err != nil {
		return nil, fmt.Errorf("cannot encode the quote: nonce: %w", err)
	}
	w := &Quote{Nonce: nonce, AttestData: q.Attest, Signature: q.Signature, Claims: q.Claims}
	for p, v := range q.PCRs {
		i, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("cannot encode the quote: PCR %q: %w", p, err)
		}
		b, err := hex.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("cannot encode the quote: PCR %d: %w", i, err)
		}
		w.PCRValues = append(w.PCRValues, PCRValue{Index: i, HashAlgo: "sha256", Value: b})
	}
	slices.SortFunc(w.PCRValues, func(a, b PCRValue) int { return a.Index - b.Index })
	return w, nil
}

// TPM is q in tpm.Verify's form (the attestation key is the verifier's own,
// never the quote's).
func (q *Quote) TPM() *tpm.Quote {
	t := &tpm.Quote{Version: 1, Nonce: hex.EncodeToString(q.Nonce), Claims: q.Claims, PCRBank: "sha256",
		PCRs: map[string]string{}, Attest: q.AttestData, Signature: q.Signature}
	t.QualifyingData = hex.EncodeToString(tpm.QualifyingData(q.Nonce, q.Claims))
	for _, v := range q.PCRValues {
		t.PCRs[strconv.Itoa(v.Index)] = hex.EncodeToString(v.Value)
	}
	return t
}

// Values are q's PCR values by index.
func (q *Quote) Values() map[int][]byte {
	m := map[int][]byte{}
	for _, v := range q.PCRValues {
		m[v.Index] = v.Value
	}
	return m
}
