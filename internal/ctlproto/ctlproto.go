// Package ctlproto is the wire protocol between a device and its controller:
// enrolment, the attestation challenge, the release of file vault keys, and
// the device's report (rotation done, vault keys escrowed). Both ends import
// it, so the device (internal/controller) and the reference controller
// (internal/refctl) cannot drift apart, and a real controller's adapter has
// one place to read.
//
// Why a package of its own: every message here comes from the other side of
// a network. Each is decoded strictly (a size bound, no unknown field, no
// second value) and checked field by field before anyone acts on it; and the
// controller's answer is signed, bound to the request it answers, so a
// replayed or forged answer is refused before a key in it is looked at.
//
// The quote's shape follows EVE's attestation API (ZAttestQuote: attestData,
// signature, pcr_values with index, hash algorithm and value), so an adapter
// to an EVE controller maps fields one to one; docs/controller.md has the
// table.
package ctlproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/edgeseal/edgeseal/internal/naming"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// Version of the protocol (the path prefix /v1).
const Version = 1

// HTTP paths. Every request is a POST of one JSON value; every answer is one
// JSON value, or {"error": "..."} with a 4xx/5xx status. The two enrolment
// paths authenticate with the one-time enrolment token; every other path
// with the device's TLS client certificate from enrolment.
const (
	PathEnrolNonce = "/v1/enrol/nonce"
	PathEnrol      = "/v1/enrol"
	PathChallenge  = "/v1/challenge"
	PathKeys       = "/v1/keys"
	PathReport     = "/v1/report"
)

// Limits on what either side accepts.
const (
	MaxBody      = 256 << 10          // one message
	NonceSize    = 32                 // every nonce
	KeySize      = 32                 // a controller key (AES-256 / HKDF input)
	MaxSealed    = 4096               // one key sealed to a TPM (tpm.Importable's bound)
	MaxVaults    = 64                 // vaults in one request or bundle (a bundle of 64 mid-rotation, with escrow, fits MaxBody/2)
	MaxPCR       = 23                 // PCR indices 0..23, SHA-256 bank
	MaxClaims    = naming.MaxClaims   // claims in one quote
	MaxClaimLen  = naming.MaxClaimLen // a claim's name or value
	MaxReason    = 1024               // a reason text
	MaxPEM       = 8192               // a PEM public key or certificate
	MaxTokenLen  = 128                // an enrolment token
	MaxKeyVer    = 1 << 30            // a key version
	MaxAttestLen = 1024               // a TPMS_ATTEST
	MaxSigLen    = 512                // a TPMT_SIGNATURE
)

// Errors a device or controller acts on.
var (
	// ErrMalformed: a message that does not decode or is out of shape.
	ErrMalformed = errors.New("malformed controller protocol message")
	// ErrBundleSignature: a key bundle not signed by the controller enrolled with.
	ErrBundleSignature = errors.New("the key bundle is not signed by the enrolled controller")
	// ErrReplay: a key bundle that answers another request (an old one replayed).
	ErrReplay = errors.New("the key bundle does not answer this request (replayed or stale)")
	// ErrOtherDevice: a key bundle made for another device.
	ErrOtherDevice = errors.New("the key bundle is for another device")
)

var (
	uuidRE  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	nameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	idRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,128}$`)
)

// Message is anything sent on the wire: it says whether it is in shape.
type Message interface{ Validate() error }

// Decode reads one message from r strictly: at most MaxBody bytes, no unknown
// field, nothing after the value, and m.Validate() passing. Anything else is
// ErrMalformed, naming the field at fault.
func Decode(r io.Reader, m Message) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxBody+1))
	if err != nil {
		return fmt.Errorf("%w: cannot read it: %v", ErrMalformed, err)
	}
	return Unmarshal(data, m)
}

// Unmarshal is Decode of bytes.
func Unmarshal(data []byte, m Message) error {
	if err := strictjson.Decode(data, MaxBody, m); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// ErrorBody is the body of an answer that is not a success.
type ErrorBody struct {
	Error string `json:"error"`
}

func (e *ErrorBody) Validate() error {
	return checkLen("error", e.Error, 1, MaxReason)
}

// EnrolNonceRequest asks for a nonce to enrol with (token-authenticated).
type EnrolNonceRequest struct {
	Token string `json:"token"`
}

func (r *EnrolNonceRequest) Validate() error { return checkToken(r.Token) }

// EnrolNonce is the controller's nonce for enrolment, and the PCRs whose
// values it will expect (quoted once at enrolment: trust on first use).
type EnrolNonce struct {
	Nonce []byte `json:"nonce"`
	PCRs  []int  `json:"pcrs"`
}

func (n *EnrolNonce) Validate() error {
	return errors.Join(checkNonce("nonce", n.Nonce), checkPCRs(n.PCRs, true))
}

// EnrolRequest enrols a device: its attestation key and storage root key
// (certified by the attestation key over the nonce: tpm.Enrolment), a quote
// of the PCRs asked for over the same nonce, and the public key of its TLS
// client key.
type EnrolRequest struct {
	Token string `json:"token"`
	Nonce []byte `json:"nonce"`
	// Enrolment is a tpm.Enrolment, as JSON.
	Enrolment json.RawMessage `json:"enrolment"`
	Quote     *Quote          `json:"quote"`
	// ClientKey is the PEM PUBLIC KEY (ECDSA P-256) of the device's TLS
	// client key; the controller certifies it.
	ClientKey string `json:"client_key"`
}

func (r *EnrolRequest) Validate() error {
	var errs []error
	errs = append(errs, checkToken(r.Token), checkNonce("nonce", r.Nonce))
	if len(r.Enrolment) == 0 || len(r.Enrolment) > 4*MaxSealed {
		errs = append(errs, fmt.Errorf("enrolment: %d bytes", len(r.Enrolment)))
	}
	if r.Quote == nil {
		errs = append(errs, errors.New("quote: missing"))
	} else if err := r.Quote.Validate(); err != nil {
		errs = append(errs, err)
	} else if !bytes.Equal(r.Quote.Nonce, r.Nonce) {
		errs = append(errs, errors.New("quote: not over the enrolment nonce"))
	}
	errs = append(errs, checkLen("client_key", r.ClientKey, 1, MaxPEM))
	return errors.Join(errs...)
}

// Enrolled is the controller's answer to an enrolment: the device's id, its
// TLS client certificate, and the public key that signs key bundles (the
// device pins it).
type Enrolled struct {
	DeviceID   string `json:"device_id"`
	ClientCert string `json:"client_cert"` // PEM CERTIFICATE
	SigningKey string `json:"signing_key"` // PEM PUBLIC KEY (ECDSA P-256)
}

func (e *Enrolled) Validate() error {
	return errors.Join(checkID(e.DeviceID), checkLen("client_cert", e.ClientCert, 1, MaxPEM),
		checkLen("signing_key", e.SigningKey, 1, MaxPEM))
}

// ChallengeRequest asks for a challenge (the body is {}).
type ChallengeRequest struct{}

func (*ChallengeRequest) Validate() error { return nil }

// Challenge is what the device must answer with a quote: the nonce, the PCRs
// to quote (SHA-256 bank), and the claims to include.
type Challenge struct {
	Nonce   []byte    `json:"nonce"`
	PCRs    []int     `json:"pcrs"`
	Claims  []string  `json:"claims,omitempty"`
	Expires time.Time `json:"expires"`
}

func (c *Challenge) Validate() error {
	errs := []error{checkNonce("nonce", c.Nonce), checkPCRs(c.PCRs, true)}
	if len(c.Claims) > MaxClaims {
		errs = append(errs, fmt.Errorf("claims: %d, at most %d", len(c.Claims), MaxClaims))
	}
	for _, n := range c.Claims {
		if !naming.ValidClaimName(n) {
			errs = append(errs, fmt.Errorf("claims: %q is not a claim name", n))
		}
	}
	if c.Expires.IsZero() {
		errs = append(errs, errors.New("expires: missing"))
	}
	return errors.Join(errs...)
}

// Quote answers a challenge, in EVE's shape: the TPMS_ATTEST as signed, the
// TPMT_SIGNATURE, and the values of the quoted PCRs; claims (device_id,
// location, addresses, ...) are bound into the quote's qualifying data
// (tpm.QualifyingData), so they are signed too.
type Quote struct {
	Nonce      []byte            `json:"nonce"`
	AttestData []byte            `json:"attest_data"`
	Signature  []byte            `json:"signature"`
	PCRValues  []PCRValue        `json:"pcr_values"`
	Claims     map[string]string `json:"claims,omitempty"`
}

// PCRValue is one quoted PCR (EVE's TpmPCRValue).
type PCRValue struct {
	Index    int    `json:"index"`
	HashAlgo string `json:"hash_algo"` // "sha256"
	Value    []byte `json:"value"`
}

func (q *Quote) Validate() error {
	errs := []error{checkNonce("quote.nonce", q.Nonce)}
	if n := len(q.AttestData); n == 0 || n > MaxAttestLen {
		errs = append(errs, fmt.Errorf("quote.attest_data: %d bytes", n))
	}
	if n := len(q.Signature); n == 0 || n > MaxSigLen {
		errs = append(errs, fmt.Errorf("quote.signature: %d bytes", n))
	}
	if len(q.PCRValues) == 0 || len(q.PCRValues) > MaxPCR+1 {
		errs = append(errs, fmt.Errorf("quote.pcr_values: %d values", len(q.PCRValues)))
	}
	seen := map[int]bool{}
	for _, v := range q.PCRValues {
		switch {
		case v.Index < 0 || v.Index > MaxPCR || seen[v.Index]:
			errs = append(errs, fmt.Errorf("quote.pcr_values: index %d is out of range or repeated", v.Index))
		case v.HashAlgo != "sha256":
			errs = append(errs, fmt.Errorf("quote.pcr_values: PCR %d: hash_algo %q: only sha256", v.Index, v.HashAlgo))
		case len(v.Value) != 32:
			errs = append(errs, fmt.Errorf("quote.pcr_values: PCR %d: %d bytes, not 32", v.Index, len(v.Value)))
		}
		seen[v.Index] = true
	}
	errs = append(errs, CheckClaims(q.Claims))
	return errors.Join(errs...)
}

// CheckClaims checks a set of claims (naming.CheckClaims: the config's
// expected claims are checked by the same rule).
func CheckClaims(claims map[string]string) error { return naming.CheckClaims(claims) }

// KeysRequest asks for the keys of the device's vaults. RequestNonce is the
// device's own fresh nonce: the bundle must echo it. Quote answers the last
// challenge; it is needed for any vault released only after attestation, and
// for an escrowed key.
type KeysRequest struct {
	RequestNonce []byte         `json:"request_nonce"`
	Quote        *Quote         `json:"quote,omitempty"`
	Vaults       []VaultRequest `json:"vaults"`
}

// VaultRequest names one vault.
type VaultRequest struct {
	UUID string `json:"uuid"`
	Name string `json:"name"`
	// Attestation: release only after attestation. The controller records it
	// the first time and never lowers it on a device's word.
	Attestation bool `json:"attestation,omitempty"`
	// KeyVersion is the controller key version the device's protector is
	// wrapped to (0: none yet).
	KeyVersion int `json:"key_version,omitempty"`
	// Escrow asks for the vault key the device escrowed (recovery after its
	// TPM refused to unseal); always after attestation.
	Escrow bool `json:"escrow,omitempty"`
	// Keys asks for the controller's keys of the vault (key source
	// controller or tpm+controller).
	Keys bool `json:"keys,omitempty"`
}

func (r *KeysRequest) Validate() error {
	errs := []error{checkNonce("request_nonce", r.RequestNonce)}
	if r.Quote != nil {
		errs = append(errs, r.Quote.Validate())
	}
	errs = append(errs, checkUUIDs(len(r.Vaults), 1, func(i int) string { return r.Vaults[i].UUID }))
	for _, v := range r.Vaults {
		if !nameRE.MatchString(v.Name) {
			errs = append(errs, fmt.Errorf("vaults: %s: name %q is not a vault name", v.UUID, v.Name))
		}
		if v.KeyVersion < 0 || v.KeyVersion > MaxKeyVer {
			errs = append(errs, fmt.Errorf("vaults: %s: key_version %d out of range", v.UUID, v.KeyVersion))
		}
		if !v.Escrow && !v.Keys {
			errs = append(errs, fmt.Errorf("vaults: %s: asks for neither keys nor escrow", v.UUID))
		}
	}
	return errors.Join(errs...)
}

// Attestation results in a bundle.
const (
	AttestNotAsked = "not-asked" // no quote was sent, none was needed
	AttestVerified = "verified"  // the quote was good
	AttestRequired = "required"  // a vault needs one and none was sent
	AttestRefused  = "refused"   // the quote was not good: Reason says why
)

// Vault release results in a bundle.
const (
	Released = "released"
	Withheld = "withheld"
)

// SignedBundle is the answer to a KeysRequest: Payload is a Bundle's JSON,
// Signature an ASN.1 ECDSA P-256 signature over SHA-256(BundleDomain ||
// Payload) by the controller's signing key.
type SignedBundle struct {
	Payload   []byte `json:"payload"`
	Signature []byte `json:"signature"`
}

func (s *SignedBundle) Validate() error {
	var errs []error
	if n := len(s.Payload); n == 0 || n > MaxBody/2 {
		errs = append(errs, fmt.Errorf("payload: %d bytes", n))
	}
	if n := len(s.Signature); n == 0 || n > 128 {
		errs = append(errs, fmt.Errorf("signature: %d bytes", n))
	}
	return errors.Join(errs...)
}

// Bundle is what the controller releases for one request.
type Bundle struct {
	Version      int       `json:"version"`
	DeviceID     string    `json:"device_id"`
	RequestNonce []byte    `json:"request_nonce"`
	Issued       time.Time `json:"issued"`
	// Attestation is the verdict on the request's quote.
	Attestation AttestResult   `json:"attestation"`
	Vaults      []VaultRelease `json:"vaults"`
}

// AttestResult is the controller's verdict on a quote.
type AttestResult struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// ChangedPCRs are the PCRs whose quoted values differ from the ones the
	// controller expects (refused), or from the ones it expected before an
	// operator approved new ones (verified).
	ChangedPCRs []int `json:"changed_pcrs,omitempty"`
}

// VaultRelease is the controller's answer for one vault: its keys (the
// current and the previous, the same when no rotation is under way) and,
// if asked, the escrowed vault key, each sealed to the device's TPM
// (tpm.Importable, binary); or withheld, with the reason.
type VaultRelease struct {
	UUID     string `json:"uuid"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
	Current  *Key   `json:"current,omitempty"`
	Previous *Key   `json:"previous,omitempty"`
	Escrow   []byte `json:"escrow,omitempty"`
}

// Key is one version of a controller key, sealed to the device's TPM.
type Key struct {
	Version int    `json:"version"`
	Sealed  []byte `json:"sealed"`
}

func (k *Key) validate(field string) error {
	if k.Version < 1 || k.Version > MaxKeyVer {
		return fmt.Errorf("%s.version %d out of range", field, k.Version)
	}
	if n := len(k.Sealed); n == 0 || n > MaxSealed {
		return fmt.Errorf("%s.sealed: %d bytes", field, n)
	}
	return nil
}

func (b *Bundle) Validate() error {
	var errs []error
	if b.Version != Version {
		errs = append(errs, fmt.Errorf("version %d: this device speaks %d", b.Version, Version))
	}
	errs = append(errs, checkID(b.DeviceID), checkNonce("request_nonce", b.RequestNonce))
	if b.Issued.IsZero() {
		errs = append(errs, errors.New("issued: missing"))
	}
	switch b.Attestation.Status {
	case AttestNotAsked, AttestVerified, AttestRequired, AttestRefused:
	default:
		errs = append(errs, fmt.Errorf("attestation.status %q is unknown", b.Attestation.Status))
	}
	errs = append(errs, checkLen("attestation.reason", b.Attestation.Reason, 0, MaxReason), checkPCRs(b.Attestation.ChangedPCRs, false))
	errs = append(errs, checkUUIDs(len(b.Vaults), 0, func(i int) string { return b.Vaults[i].UUID }))
	for _, v := range b.Vaults {
		errs = append(errs, checkLen("vaults."+v.UUID+".reason", v.Reason, 0, MaxReason))
		switch v.Status {
		case Released:
			if v.Current == nil && v.Escrow == nil {
				errs = append(errs, fmt.Errorf("vaults: %s: released with no key", v.UUID))
			}
			if v.Current != nil {
				errs = append(errs, v.Current.validate("vaults."+v.UUID+".current"))
				if v.Previous == nil {
					errs = append(errs, fmt.Errorf("vaults: %s: a current key with no previous (send the current again when there is no rotation)", v.UUID))
				} else {
					errs = append(errs, v.Previous.validate("vaults."+v.UUID+".previous"))
					if v.Previous.Version > v.Current.Version {
						errs = append(errs, fmt.Errorf("vaults: %s: previous key version %d is after current %d", v.UUID, v.Previous.Version, v.Current.Version))
					}
				}
			} else if v.Previous != nil {
				errs = append(errs, fmt.Errorf("vaults: %s: a previous key with no current", v.UUID))
			}
			if len(v.Escrow) > MaxSealed {
				errs = append(errs, fmt.Errorf("vaults: %s: escrow: %d bytes", v.UUID, len(v.Escrow)))
			}
		case Withheld:
			if v.Current != nil || v.Previous != nil || v.Escrow != nil {
				errs = append(errs, fmt.Errorf("vaults: %s: withheld, yet with keys", v.UUID))
			}
		default:
			errs = append(errs, fmt.Errorf("vaults: %s: status %q is unknown", v.UUID, v.Status))
		}
	}
	return errors.Join(errs...)
}

// Report is what the device tells the controller after an apply: the key
// version each vault is now wrapped to (a rotation is complete when the
// device reports the current version), and each vault key escrowed, sealed
// to the device's own TPM (the controller cannot read it).
type Report struct {
	Vaults []VaultReport `json:"vaults"`
}

// VaultReport is one vault in a Report.
type VaultReport struct {
	UUID string `json:"uuid"`
	// Name is the vault's name: a controller learns of a vault whose key
	// only the TPM wraps (key source tpm) from its first escrow.
	Name       string `json:"name,omitempty"`
	KeyVersion int    `json:"key_version,omitempty"`
	Escrow     []byte `json:"escrow,omitempty"`
	// Unlocked says how the vault was last unlocked: tpm, controller-key or
	// escrow-recovery (for the operator's view).
	Unlocked string `json:"unlocked,omitempty"`
}

func (r *Report) Validate() error {
	errs := []error{checkUUIDs(len(r.Vaults), 1, func(i int) string { return r.Vaults[i].UUID })}
	for _, v := range r.Vaults {
		if v.Name != "" && !nameRE.MatchString(v.Name) {
			errs = append(errs, fmt.Errorf("vaults: %s: name %q is not a vault name", v.UUID, v.Name))
		}
		if v.KeyVersion < 0 || v.KeyVersion > MaxKeyVer {
			errs = append(errs, fmt.Errorf("vaults: %s: key_version %d out of range", v.UUID, v.KeyVersion))
		}
		if len(v.Escrow) > MaxSealed {
			errs = append(errs, fmt.Errorf("vaults: %s: escrow: %d bytes", v.UUID, len(v.Escrow)))
		}
		switch v.Unlocked {
		case "", "tpm", "controller-key", "escrow-recovery":
		default:
			errs = append(errs, fmt.Errorf("vaults: %s: unlocked %q is unknown", v.UUID, v.Unlocked))
		}
	}
	return errors.Join(errs...)
}

// ReportAck answers a Report (the body is {}).
type ReportAck struct{}

func (*ReportAck) Validate() error { return nil }

// checkUUIDs checks that the n vaults of a message (least to MaxVaults of
// them) each name a vault by its UUID, once.
func checkUUIDs(n, least int, uuid func(int) string) error {
	if n < least || n > MaxVaults {
		return fmt.Errorf("vaults: %d, %d to %d", n, least, MaxVaults)
	}
	seen := map[string]bool{}
	var errs []error
	for i := range n {
		u := uuid(i)
		if !uuidRE.MatchString(u) || seen[u] {
			errs = append(errs, fmt.Errorf("vaults: uuid %q is not a UUID or is repeated", u))
		}
		seen[u] = true
	}
	return errors.Join(errs...)
}

func checkNonce(field string, n []byte) error {
	if len(n) != NonceSize {
		return fmt.Errorf("%s: %d bytes, not %d", field, len(n), NonceSize)
	}
	return nil
}

func checkPCRs(pcrs []int, needOne bool) error {
	if needOne && len(pcrs) == 0 {
		return errors.New("pcrs: none")
	}
	if len(pcrs) > MaxPCR+1 {
		return fmt.Errorf("pcrs: %d, at most %d", len(pcrs), MaxPCR+1)
	}
	seen := map[int]bool{}
	for _, p := range pcrs {
		if p < 0 || p > MaxPCR || seen[p] {
			return fmt.Errorf("pcrs: %d is out of range (0-%d) or repeated", p, MaxPCR)
		}
		seen[p] = true
	}
	return nil
}

func checkID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("device_id %q is not a device id (lower case letters, digits, . _ -; up to 64)", id)
	}
	return nil
}

func checkToken(t string) error {
	if !tokenRE.MatchString(t) {
		return errors.New("token: not an enrolment token (16 to 128 of A-Z a-z 0-9 _ -)")
	}
	return nil
}

func checkLen(field, s string, minLen, maxLen int) error {
	return naming.CheckText(field, s, minLen, maxLen)
}
