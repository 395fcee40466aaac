package tpm

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/cryptutil"
	"github.com/canonical/go-tpm2/mu"
)

// Enrolment: before a controller seals keys to a device (SealToTPM), it must
// know that the storage root key it seals to is in the same TPM as the
// attestation key whose quotes it trusts. The device proves it: its
// attestation key certifies the SRK (TPM2_Certify), over the controller's
// nonce. Whether the attestation key itself is a TPM's (an endorsement
// certificate, credential activation) is the controller's enrolment policy;
// this only ties the SRK to it.

// enrolDomain separates enrolment's qualifying data from a quote's.
const enrolDomain = "edgeseal enrol v1\x00"

// ErrEnrolment: an enrolment that does not prove what it claims.
var ErrEnrolment = errors.New("the enrolment does not prove its storage root key is in the attestation key's TPM")

// Enrolment is what a device sends to enrol (docs/attestation.md).
type Enrolment struct {
	Version   int    `json:"version"`
	AKPublic  string `json:"ak_public"`  // PEM, as in a quote
	SRKPublic []byte `json:"srk_public"` // TPMT_PUBLIC of the SRK
	Attest    []byte `json:"attest"`     // TPMS_ATTEST (certify), as signed
	Signature []byte `json:"signature"`  // TPMT_SIGNATURE by the attestation key
}

func enrolQualifyingData(nonce []byte) []byte {
	h := sha256.New()
	h.Write([]byte(enrolDomain))
	h.Write(nonce)
	return h.Sum(nil)
}

// MakeEnrolment has the attestation key certify the storage root key over
// the controller's nonce (both keys made if absent).
func MakeEnrolment(t *tpm2.TPMContext, nonce []byte) (*Enrolment, error) {
	if len(nonce) < 8 || len(nonce) > 32 {
		return nil, fmt.Errorf("cannot enrol: the nonce is %d bytes; use 8 to 32", len(nonce))
	}
	srk, _, err := EnsureSRK(t)
	if err != nil {
		return nil, err
	}
	ak, akPEM, err := ensureAKPEM(t)
	if err != nil {
		return nil, err
	}
	srkPub, _, _, err := t.ReadPublic(srk)
	if err != nil {
		return nil, fmt.Errorf("cannot read the storage root key: %w", err)
	}
	attest, sig, err := t.Certify(srk, ak, enrolQualifyingData(nonce), nil, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot certify the storage root key: %w", err)
	}
	e := &Enrolment{Version: 1, AKPublic: akPEM}
	if e.SRKPublic, err = mu.MarshalToBytes(srkPub); err != nil {
		return nil, err
	}
	if e.Attest, err = mu.MarshalToBytes(attest); err != nil {
		return nil, err
	}
	if e.Signature, err = mu.MarshalToBytes(sig); err != nil {
		return nil, err
	}
	return e, nil
}

// VerifyEnrolment checks, for the controller, that e's SRK was certified by
// the attestation key ak over nonce, and returns the SRK's public area to
// seal to. ak is the key the controller decided to trust (e's own AKPublic,
// parsed with ParseAKPublic, only under a trust-on-first-use policy).
func VerifyEnrolment(e *Enrolment, ak crypto.PublicKey, nonce []byte) (*tpm2.Public, error) {
	if e.Version != 1 {
		return nil, fmt.Errorf("%w: version %d (this edgeseal reads 1)", ErrBadQuote, e.Version)
	}
	var srk tpm2.Public
	if n, err := mu.UnmarshalFromBytes(e.SRKPublic, &srk); err != nil || n != len(e.SRKPublic) {
		return nil, fmt.Errorf("%w: srk_public is not a TPMT_PUBLIC (%v)", ErrBadQuote, err)
	}
	if !sameShape(&srk, srkTemplate()) {
		return nil, fmt.Errorf("%w: srk_public is not an edgeseal storage root key", ErrEnrolment)
	}
	var attest tpm2.Attest
	if n, err := mu.UnmarshalFromBytes(e.Attest, &attest); err != nil || n != len(e.Attest) {
		return nil, fmt.Errorf("%w: attest is not a TPMS_ATTEST (%v)", ErrBadQuote, err)
	}
	var sig tpm2.Signature
	if n, err := mu.UnmarshalFromBytes(e.Signature, &sig); err != nil || n != len(e.Signature) {
		return nil, fmt.Errorf("%w: signature is not a TPMT_SIGNATURE (%v)", ErrBadQuote, err)
	}
	digest := sha256.Sum256(e.Attest)
	if ok, err := cryptutil.VerifySignature(ak, digest[:], &sig); err != nil || !ok {
		return nil, fmt.Errorf("%w (%v)", ErrSignature, err)
	}
	// Signed by the key: the attest structure is the TPM's word.
	if attest.Magic != tpm2.TPMGeneratedValue || attest.Type != tpm2.TagAttestCertify || attest.Attested == nil || attest.Attested.Certify == nil {
		return nil, fmt.Errorf("%w: the signed structure is not a TPM certification", ErrEnrolment)
	}
	if !bytes.Equal(attest.ExtraData, enrolQualifyingData(nonce)) {
		return nil, fmt.Errorf("%w: it was made for another nonce", ErrNonce)
	}
	name, err := srk.ComputeName()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadQuote, err)
	}
	if !bytes.Equal(attest.Attested.Certify.Name, name) {
		return nil, fmt.Errorf("%w: the certified key is not srk_public", ErrEnrolment)
	}
	return &srk, nil
}
