package tpm

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/cryptutil"
	"github.com/canonical/go-tpm2/mu"
	"github.com/canonical/go-tpm2/objectutil"
	"github.com/canonical/go-tpm2/policyutil"
)

// AKHandle is where the attestation key persists (the TCG's range for
// endorsement-hierarchy keys).
const AKHandle tpm2.Handle = 0x81010002

// qualifyingDomain separates edgeseal's qualifying data from any other use of a
// nonce with this key.
const qualifyingDomain = "edgeseal attest v1\x00"

// Verification errors a controller acts on.
var (
	ErrNonce     = errors.New("the quote is not for this nonce and these claims (stale or replayed)")
	ErrSignature = errors.New("the quote's signature is not from this attestation key")
	ErrPCRValues = errors.New("the quoted PCR values are not the expected ones")
	ErrBadQuote  = errors.New("malformed quote")
)

// akTemplate is a restricted ECC P-256 signing key (ECDSA-SHA256): it signs only
// TPM-generated structures, so a quote cannot be forged with it.
func akTemplate() *tpm2.Public {
	return objectutil.NewECCAttestationKeyTemplate(objectutil.WithoutDictionaryAttackProtection())
}

// EnsureAK returns the attestation key, creating it in the endorsement hierarchy
// and persisting it at AKHandle the first time; a key of another shape there is
// refused.
func EnsureAK(t *tpm2.TPMContext) (tpm2.ResourceContext, error) {
	if t.DoesHandleExist(AKHandle) {
		rc, err := t.NewResourceContext(AKHandle)
		if err != nil {
			return nil, fmt.Errorf("cannot read the attestation key at %v: %w", AKHandle, err)
		}
		pub, _, _, err := t.ReadPublic(rc)
		if err != nil || !sameShape(pub, akTemplate()) {
			return nil, fmt.Errorf("cannot use the key at %v as edgeseal's attestation key: it is not one (%v)", AKHandle, err)
		}
		return rc, nil
	}
	obj, _, _, _, _, err := t.CreatePrimary(t.EndorsementHandleContext(), nil, akTemplate(), nil, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot create the attestation key: %w", err)
	}
	defer t.FlushContext(obj)
	ak, err := t.EvictControl(t.OwnerHandleContext(), obj, AKHandle, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot persist the attestation key at %v: %w", AKHandle, err)
	}
	return ak, nil
}

// ensureAKPEM returns the attestation key (EnsureAK) and its public key as PEM,
// the form a quote and an enrolment carry.
func ensureAKPEM(t *tpm2.TPMContext) (tpm2.ResourceContext, string, error) {
	ak, err := EnsureAK(t)
	if err != nil {
		return nil, "", err
	}
	pub, _, _, err := t.ReadPublic(ak)
	if err != nil {
		return nil, "", fmt.Errorf("cannot read the attestation key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub.Public())
	if err != nil {
		return nil, "", fmt.Errorf("cannot encode the attestation key: %w", err)
	}
	return ak, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// QualifyingData binds a quote to the controller's nonce and the device's claims:
// SHA-256("edgeseal attest v1\0" || nonce || JSON of the claims, keys sorted).
// It is the quote's extraData (qualification for tpm2_checkquote).
func QualifyingData(nonce []byte, claims map[string]string) []byte {
	h := sha256.New()
	h.Write([]byte(qualifyingDomain))
	h.Write(nonce)
	if len(claims) == 0 {
		claims = nil // no claims: one encoding (null), whether nil or empty
	}
	c, _ := json.Marshal(claims) // encoding/json sorts map keys
	h.Write(c)
	return h.Sum(nil)
}

// Quote is the documented JSON form of a quote (see docs/attestation.md).
type Quote struct {
	Version        int               `json:"version"`
	Nonce          string            `json:"nonce"`
	Claims         map[string]string `json:"claims,omitempty"`
	QualifyingData string            `json:"qualifying_data"`
	PCRBank        string            `json:"pcr_bank"`
	PCRs           map[string]string `json:"pcrs"`
	AKPublic       string            `json:"ak_public"`
	Attest         []byte            `json:"attest"`    // TPMS_ATTEST, as signed
	Signature      []byte            `json:"signature"` // TPMT_SIGNATURE
}

// MakeQuote quotes pcrs (SHA-256 bank) with the attestation key, bound to nonce
// and claims.
func MakeQuote(t *tpm2.TPMContext, nonce []byte, claims map[string]string, pcrs []int) (*Quote, error) {
	if len(nonce) < 8 || len(nonce) > 32 {
		return nil, fmt.Errorf("cannot quote: the nonce is %d bytes; use 8 to 32", len(nonce))
	}
	pcrs = slices.Compact(slices.Sorted(slices.Values(pcrs)))
	ak, akPEM, err := ensureAKPEM(t)
	if err != nil {
		return nil, err
	}
	qd := QualifyingData(nonce, claims)
	// The values read must be the ones quoted: read, quote, read again.
	for range 3 {
		before, err := ReadPCRs(t, pcrs)
		if err != nil {
			return nil, err
		}
		attest, sig, err := t.Quote(ak, qd, nil, selection(pcrs), nil)
		if err != nil {
			return nil, fmt.Errorf("cannot quote: %w", err)
		}
		after, err := ReadPCRs(t, pcrs)
		if err != nil {
			return nil, err
		}
		if !samePCRs(before, after) {
			continue
		}
		a, err := mu.MarshalToBytes(attest)
		if err != nil {
			return nil, err
		}
		s, err := mu.MarshalToBytes(sig)
		if err != nil {
			return nil, err
		}
		q := &Quote{Version: 1, Nonce: hex.EncodeToString(nonce), Claims: claims, QualifyingData: hex.EncodeToString(qd),
			PCRBank: "sha256", PCRs: map[string]string{}, Attest: a, Signature: s,
			AKPublic: akPEM}
		for p, v := range after {
			q.PCRs[strconv.Itoa(p)] = hex.EncodeToString(v)
		}
		return q, nil
	}
	return nil, errors.New("cannot quote: the PCRs kept changing while quoting")
}

func samePCRs(a, b map[int][]byte) bool {
	for p, v := range a {
		if !bytes.Equal(v, b[p]) {
			return false
		}
	}
	return len(a) == len(b)
}

// ParseAKPublic reads a PEM public key (the attestation key a verifier trusts).
func ParseAKPublic(data []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("cannot read the attestation key: no PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("cannot read the attestation key: %w", err)
	}
	return k, nil
}

// Verify checks q against the attestation key the verifier trusts, the nonce it
// sent, and (if not nil) the PCR values it expects. It says exactly what did not
// match. The quote's own ak_public is not trusted.
func Verify(q *Quote, ak crypto.PublicKey, nonce []byte, expected map[int][]byte) error {
	var attest tpm2.Attest
	if n, err := mu.UnmarshalFromBytes(q.Attest, &attest); err != nil || n != len(q.Attest) {
		return fmt.Errorf("%w: attest is not a TPMS_ATTEST (%v)", ErrBadQuote, err)
	}
	var sig tpm2.Signature
	if n, err := mu.UnmarshalFromBytes(q.Signature, &sig); err != nil || n != len(q.Signature) {
		return fmt.Errorf("%w: signature is not a TPMT_SIGNATURE (%v)", ErrBadQuote, err)
	}
	digest := sha256.Sum256(q.Attest)
	if ok, err := cryptutil.VerifySignature(ak, digest[:], &sig); err != nil || !ok {
		return fmt.Errorf("%w (%v)", ErrSignature, err)
	}
	// Signed by the key: from here on the attest structure is the TPM's word.
	if attest.Magic != tpm2.TPMGeneratedValue || attest.Type != tpm2.TagAttestQuote || attest.Attested == nil || attest.Attested.Quote == nil {
		return fmt.Errorf("%w: the signed structure is not a TPM quote", ErrBadQuote)
	}
	if want := QualifyingData(nonce, q.Claims); !bytes.Equal(attest.ExtraData, want) {
		return fmt.Errorf("%w: it was made for another nonce or other claims", ErrNonce)
	}
	info := attest.Attested.Quote
	if len(info.PCRSelect) != 1 || info.PCRSelect[0].Hash != tpm2.HashAlgorithmSHA256 {
		return fmt.Errorf("%w: it does not quote one SHA-256 PCR selection", ErrBadQuote)
	}
	pcrs := info.PCRSelect[0].Select
	reported := map[int][]byte{}
	for _, p := range pcrs {
		v, err := hex.DecodeString(q.PCRs[strconv.Itoa(p)])
		if err != nil || len(v) != 32 {
			return fmt.Errorf("%w: no 32-byte value reported for quoted PCR %d", ErrBadQuote, p)
		}
		reported[p] = v
	}
	if d, err := pcrDigest(pcrs, reported); err != nil || !bytes.Equal(d, info.PCRDigest) {
		return fmt.Errorf("%w: the reported PCR values are not the ones the TPM quoted", ErrPCRValues)
	}
	if expected == nil {
		return nil
	}
	var differ []string
	for p, want := range expected {
		got, ok := reported[p]
		switch {
		case !ok:
			differ = append(differ, fmt.Sprintf("PCR %d is not in the quote", p))
		case !bytes.Equal(got, want):
			differ = append(differ, fmt.Sprintf("PCR %d is %x, expected %x", p, got, want))
		}
	}
	if len(differ) > 0 {
		sort.Strings(differ)
		return fmt.Errorf("%w: %s", ErrPCRValues, strings.Join(differ, "; "))
	}
	return nil
}

func pcrDigest(pcrs []int, values map[int][]byte) (tpm2.Digest, error) {
	vals := tpm2.PCRValues{tpm2.HashAlgorithmSHA256: {}}
	for p, v := range values {
		vals[tpm2.HashAlgorithmSHA256][p] = v
	}
	return policyutil.ComputePCRDigest(tpm2.HashAlgorithmSHA256, selection(pcrs), vals)
}
