package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/cryptutil"
	"github.com/canonical/go-tpm2/objectutil"
	"github.com/canonical/go-tpm2/policyutil"
)

// Errors of sealed objects a caller acts on.
var (
	// ErrPCRMismatch: the PCR values differ from the approved ones (an update not
	// approved in time, or a boot that is not the expected one).
	ErrPCRMismatch = errors.New("PCR values differ from the approved ones")
	// ErrWrongPIN: the PIN is wrong; the failure counts toward dictionary-attack
	// lockout.
	ErrWrongPIN = errors.New("wrong PIN")
	// ErrLockout: the TPM refuses authorisations until its lockout lifts.
	ErrLockout = errors.New("TPM is in dictionary-attack lockout")
	// ErrSRKChanged: the storage root key is not the one the object was sealed
	// under: the disk was moved to another device, or the TPM was cleared.
	ErrSRKChanged = errors.New("the TPM's storage root key is not the one this was sealed under")
)

// maxSealedData is what a TPM's sealed data object holds (MAX_SYM_DATA).
const maxSealedData = 128

// sealedDataVersion heads the data inside the sealed object.
const sealedDataVersion = 1

// SealedObject is a secret sealed under the SRK. The object's policy is
// PolicyAuthorize(signing key) [and PolicyAuthValue with a PIN]: it unseals in any
// PCR state whose PolicyPCR digest the signing key approved. The signing key's
// private half is sealed with the secret, so only a device in an approved state
// can approve new values, and nothing outside the TPM ever holds it at rest.
type SealedObject struct {
	SRKName tpm2.Name
	Public  *tpm2.Public
	Private tpm2.Private
	SignKey *tpm2.Public // the policy signing key (public)
	PIN     bool

	// The approved state: SHA-256 PCR values, the PolicyPCR digest, its signature.
	PCRs      []int
	Values    map[int][]byte
	Approved  tpm2.Digest
	Signature *tpm2.Signature

	// NV, if set, keeps the sealed data in a TPM NV index instead (Public and
	// Private are then empty), and binds the approval to a rollback counter.
	NV *NVStorage
}

var sha256Sym = &tpm2.SymDef{Algorithm: tpm2.SymAlgorithmAES, KeyBits: &tpm2.SymKeyBitsU{Sym: 128}, Mode: &tpm2.SymModeU{Sym: tpm2.SymModeCFB}}

func selection(pcrs []int) tpm2.PCRSelectionList {
	return tpm2.PCRSelectionList{{Hash: tpm2.HashAlgorithmSHA256, Select: pcrs}}
}

// ReadPCRs reads the SHA-256 bank's values of pcrs.
func ReadPCRs(t *tpm2.TPMContext, pcrs []int) (map[int][]byte, error) {
	_, values, err := t.PCRRead(selection(pcrs))
	if err != nil {
		return nil, fmt.Errorf("cannot read PCRs %v: %w", pcrs, err)
	}
	out := map[int][]byte{}
	for _, p := range pcrs {
		v, ok := values[tpm2.HashAlgorithmSHA256][p]
		if !ok {
			return nil, fmt.Errorf("cannot read PCR %d: the TPM has no SHA-256 bank for it", p)
		}
		out[p] = v
	}
	return out, nil
}

func policyDigests(signKey *tpm2.Public, pin bool) (tpm2.Digest, error) {
	b := policyutil.NewPolicyBuilder(tpm2.HashAlgorithmSHA256)
	b.RootBranch().PolicyAuthorize(nil, signKey)
	if pin {
		b.RootBranch().PolicyAuthValue()
	}
	return b.Digest()
}

// pcrPolicy is the approved policy: PolicyPCR(values) and, for NV storage,
// PolicyNV(counter <= nv.Value).
func pcrPolicy(pcrs []int, values map[int][]byte, nv *NVStorage) (tpm2.Digest, error) {
	vals := tpm2.PCRValues{tpm2.HashAlgorithmSHA256: {}}
	for p, v := range values {
		vals[tpm2.HashAlgorithmSHA256][p] = v
	}
	d, err := policyutil.ComputePCRDigest(tpm2.HashAlgorithmSHA256, selection(pcrs), vals)
	if err != nil {
		return nil, err
	}
	b := policyutil.NewPolicyBuilder(tpm2.HashAlgorithmSHA256)
	b.RootBranch().PolicyPCRDigest(d, selection(pcrs))
	if nv != nil {
		b.RootBranch().PolicyNV(counterPublic(nv.Counter), counterOperand(nv.Value), 0, tpm2.OpUnsignedLE)
	}
	return b.Digest()
}

// sealing is what every seal makes before it stores the sealed data (in a
// sealed object or an NV index): the SRK, a fresh policy signing key, the
// policy digest and the sealed data, which the caller wipes.
type sealing struct {
	pcrs       []int
	pin        bool
	srk        tpm2.ResourceContext
	key        *ecdsa.PrivateKey
	signPub    *tpm2.Public
	authPolicy tpm2.Digest
	data       []byte
}

func newSealing(t *tpm2.TPMContext, secret []byte, pcrs []int, pin []byte) (*sealing, error) {
	if len(secret) == 0 || len(secret)+40 > maxSealedData {
		return nil, fmt.Errorf("cannot seal %d bytes in the TPM: at most %d", len(secret), maxSealedData-40)
	}
	srk, _, err := EnsureSRK(t)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cannot generate the policy signing key: %w", err)
	}
	signPub, err := objectutil.NewECCPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	authPolicy, err := policyDigests(signPub, len(pin) > 0)
	if err != nil {
		return nil, fmt.Errorf("cannot compute the sealed key's policy: %w", err)
	}
	return &sealing{pcrs: slices.Compact(slices.Sorted(slices.Values(pcrs))), pin: len(pin) > 0,
		srk: srk, key: key, signPub: signPub, authPolicy: authPolicy, data: packSealedData(secret, key)}, nil
}

// approved completes o, whose storage fields are set, and approves the current
// values of the PCRs.
func (s *sealing) approved(t *tpm2.TPMContext, o *SealedObject) (*SealedObject, error) {
	o.SRKName, o.SignKey, o.PIN, o.PCRs = s.srk.Name(), s.signPub, s.pin, slices.Clone(s.pcrs)
	values, err := ReadPCRs(t, s.pcrs)
	if err != nil {
		return nil, err
	}
	if err := o.approve(s.key, values); err != nil {
		return nil, err
	}
	return o, nil
}

// Seal seals secret under the SRK, approving the current values of pcrs.
func Seal(t *tpm2.TPMContext, secret []byte, pcrs []int, pin []byte) (*SealedObject, error) {
	s, err := newSealing(t, secret, pcrs, pin)
	if err != nil {
		return nil, err
	}
	defer clear(s.data)
	opts := []objectutil.PublicTemplateOption{
		objectutil.WithUserAuthMode(objectutil.RequirePolicy),
		objectutil.WithAuthPolicy(s.authPolicy),
	}
	if len(pin) == 0 {
		// Without a PIN there is nothing to guess, and dictionary-attack protection
		// would only let unclean power-offs (each counts as a failure) lock the
		// device out of its own key. With a PIN, wrong guesses must count.
		opts = append(opts, objectutil.WithoutDictionaryAttackProtection())
	}
	template := objectutil.NewSealedObjectTemplate(opts...)
	session, err := t.StartAuthSession(s.srk, nil, tpm2.SessionTypeHMAC, sha256Sym, tpm2.HashAlgorithmSHA256)
	if err != nil {
		return nil, fmt.Errorf("cannot start a session with the TPM: %w", err)
	}
	defer t.FlushContext(session)
	priv, pub, _, _, _, err := t.Create(s.srk, &tpm2.SensitiveCreate{UserAuth: pin, Data: s.data}, template, nil, nil,
		session.WithAttrs(tpm2.AttrCommandEncrypt|tpm2.AttrContinueSession))
	if err != nil {
		return nil, fmt.Errorf("cannot create the sealed object: %w", err)
	}
	return s.approved(t, &SealedObject{Public: pub, Private: priv})
}

// approve signs the PolicyPCR digest of values with the policy signing key.
func (o *SealedObject) approve(key *ecdsa.PrivateKey, values map[int][]byte) error {
	d, err := pcrPolicy(o.PCRs, values, o.NV)
	if err != nil {
		return fmt.Errorf("cannot compute the PCR policy: %w", err)
	}
	tbs := policyutil.ComputePolicyAuthorizationTBSDigest(crypto.SHA256, d, nil)
	sig, err := cryptutil.Sign(rand.Reader, key, tbs, crypto.SHA256)
	if err != nil {
		return fmt.Errorf("cannot sign the PCR policy: %w", err)
	}
	o.Values, o.Approved, o.Signature = values, d, sig
	return nil
}

// Unseal returns the secret if the PCRs are in the approved state (and the PIN is
// right). Everything it loads is flushed; the secret travels encrypted.
//
// For NV storage it then advances the counter to the object's value if a
// reseal did not (a crash between writing the blob and Commit).
func Unseal(t *tpm2.TPMContext, o *SealedObject, pin []byte) ([]byte, error) {
	secret, _, err := o.unseal(t, pin)
	return secret, err
}

// Approve approves values for the PCRs (e.g. the values expected after an update)
// in place of the approved ones. It must unseal the object first, so it works only
// in an approved state; the object itself does not change. For NV storage the
// approval is for the counter's next value: write the blob, then Commit, and
// every older approval is refused.
func (o *SealedObject) Approve(t *tpm2.TPMContext, pin []byte, values map[int][]byte) error {
	secret, key, err := o.unseal(t, pin)
	clear(secret)
	if err != nil {
		return err
	}
	for _, p := range o.PCRs {
		if len(values[p]) != 32 {
			return fmt.Errorf("cannot approve PCR values: PCR %d needs a 32-byte SHA-256 value", p)
		}
	}
	if o.NV != nil {
		_, v, err := o.counterValue(t)
		if err != nil {
			return err
		}
		o.NV.Value = v + 1
	}
	return o.approve(key, values)
}

// unseal unseals o; for NV storage it then advances the counter to the
// object's value if a reseal did not (a crash between writing the blob and
// Commit).
func (o *SealedObject) unseal(t *tpm2.TPMContext, pin []byte) ([]byte, *ecdsa.PrivateKey, error) {
	var nv *nvUnseal
	if o.NV != nil {
		// The indices first: after a TPM2_Clear they are gone, and that is
		// what an operator needs to read.
		var err error
		if nv, err = o.nvState(t); err != nil {
			return nil, nil, err
		}
	}
	if !t.DoesHandleExist(SRKHandle) {
		return nil, nil, fmt.Errorf("%w: there is no storage root key at %v (the TPM was cleared, or this blob is another device's)", ErrSRKChanged, SRKHandle)
	}
	srk, err := t.NewResourceContext(SRKHandle)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read the storage root key: %w", err)
	}
	if !bytes.Equal(srk.Name(), o.SRKName) {
		return nil, nil, fmt.Errorf("%w (the disk may have been moved to another device, or the TPM cleared)", ErrSRKChanged)
	}
	if nv != nil {
		secret, key, err := o.unsealNV(t, srk, nv, pin)
		if err == nil {
			err = o.checkSignKey(key)
		}
		if err == nil {
			err = o.advance(t, nv.counter, nv.value)
		}
		if err != nil {
			clear(secret)
			return nil, nil, err
		}
		return secret, key, nil
	}
	hmac, err := t.StartAuthSession(srk, nil, tpm2.SessionTypeHMAC, sha256Sym, tpm2.HashAlgorithmSHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot start a session with the TPM: %w", err)
	}
	defer t.FlushContext(hmac)
	obj, err := t.Load(srk, o.Private, o.Public, hmac.WithAttrs(tpm2.AttrContinueSession))
	if err != nil {
		if tpm2.IsTPMWarning(err, tpm2.WarningLockout, tpm2.AnyCommandCode) {
			return nil, nil, lockoutError(t)
		}
		return nil, nil, fmt.Errorf("%w: cannot load the sealed object: %v", ErrSRKChanged, err)
	}
	defer t.FlushContext(obj)

	policy, err := o.policySession(t, srk, nil)
	if err != nil {
		return nil, nil, err
	}
	defer t.FlushContext(policy)
	if o.PIN {
		obj.SetAuthValue(pin)
	}
	data, err := t.Unseal(obj, policy, hmac.WithAttrs(tpm2.AttrResponseEncrypt))
	if err != nil {
		return nil, nil, o.classifyUnseal(t, err)
	}
	defer clear(data)
	return unpackSealedData(data)
}

// nvUnseal is what an NV unseal reads before its policy session: the data
// index and its size, the counter and its value.
type nvUnseal struct {
	index   tpm2.ResourceContext
	size    uint16
	counter tpm2.ResourceContext
	value   uint64
}

// nvState checks the object's indices (ErrNVChanged) and the counter
// (ErrRolledBack) and reads what the unseal needs.
func (o *SealedObject) nvState(t *tpm2.TPMContext) (*nvUnseal, error) {
	idx, err := nvIndex(t, o.NV.Index, o.NV.IndexName, "sealed key")
	if err != nil {
		return nil, err
	}
	pub, _, err := t.NVReadPublic(idx)
	if err != nil {
		return nil, fmt.Errorf("cannot read the NV index %v: %w", o.NV.Index, err)
	}
	counter, v, err := o.counterValue(t)
	if err != nil {
		return nil, err
	}
	return &nvUnseal{index: idx, size: pub.Size, counter: counter, value: v}, nil
}

// unsealNV reads the sealed index through its policy, the response encrypted
// by the policy session (salted by the SRK).
func (o *SealedObject) unsealNV(t *tpm2.TPMContext, srk tpm2.ResourceContext, nv *nvUnseal, pin []byte) ([]byte, *ecdsa.PrivateKey, error) {
	policy, err := o.policySession(t, srk, nv.counter)
	if err != nil {
		return nil, nil, err
	}
	defer t.FlushContext(policy)
	idx := nv.index
	if o.PIN {
		idx.SetAuthValue(pin)
	}
	data, err := t.NVRead(idx, idx, nv.size, 0, policy.WithAttrs(tpm2.AttrResponseEncrypt))
	if err != nil {
		return nil, nil, o.classifyUnseal(t, err)
	}
	defer clear(data)
	return unpackSealedData(data)
}

// policySession starts a policy session salted by the SRK and runs the sealed
// object's policy in it: PolicyPCR [PolicyNV], PolicyAuthorize with the
// approval, [PolicyAuthValue]. counter is the NV storage's counter (nil for a
// sealed object). The caller flushes it.
func (o *SealedObject) policySession(t *tpm2.TPMContext, srk, counter tpm2.ResourceContext) (tpm2.SessionContext, error) {
	policy, err := t.StartAuthSession(srk, nil, tpm2.SessionTypePolicy, sha256Sym, tpm2.HashAlgorithmSHA256)
	if err != nil {
		return nil, fmt.Errorf("cannot start a policy session: %w", err)
	}
	if err := o.runPolicy(t, policy, counter); err != nil {
		t.FlushContext(policy)
		return nil, err
	}
	return policy, nil
}

func (o *SealedObject) runPolicy(t *tpm2.TPMContext, policy tpm2.SessionContext, counter tpm2.ResourceContext) error {
	if err := t.PolicyPCR(policy, nil, selection(o.PCRs)); err != nil {
		return fmt.Errorf("cannot run PolicyPCR: %w", err)
	}
	if o.NV != nil {
		if err := t.PolicyNV(counter, counter, policy, counterOperand(o.NV.Value), 0, tpm2.OpUnsignedLE, nil); err != nil {
			if tpm2.IsTPMError(err, tpm2.ErrorPolicy, tpm2.CommandPolicyNV) {
				v, _ := t.NVReadCounter(counter, counter, nil)
				return o.rolledBack(v)
			}
			return fmt.Errorf("cannot run PolicyNV: %w", err)
		}
	}
	signKey, err := t.LoadExternal(nil, o.SignKey, tpm2.HandleOwner)
	if err != nil {
		return fmt.Errorf("cannot load the policy signing key: %w", err)
	}
	tbs := policyutil.ComputePolicyAuthorizationTBSDigest(crypto.SHA256, o.Approved, nil)
	signName := signKey.Name() // read before the flush invalidates the context
	ticket, err := t.VerifySignature(signKey, tbs, o.Signature)
	t.FlushContext(signKey)
	if err != nil {
		return fmt.Errorf("%w: the approval's signature does not verify: %v", ErrSRKChanged, err)
	}
	if err := t.PolicyAuthorize(policy, o.Approved, nil, signName, ticket); err != nil {
		if tpm2.IsTPMParameterError(err, tpm2.ErrorValue, tpm2.CommandPolicyAuthorize, 1) {
			return o.pcrMismatch(t)
		}
		return fmt.Errorf("cannot run PolicyAuthorize: %w", err)
	}
	if o.PIN {
		if err := t.PolicyAuthValue(policy); err != nil {
			return fmt.Errorf("cannot run PolicyAuthValue: %w", err)
		}
	}
	return nil
}

// MismatchError is ErrPCRMismatch naming the PCRs whose values differ (the
// status a controller and an operator read).
type MismatchError struct {
	PCRs []int
}

func (e *MismatchError) Error() string {
	ps := make([]string, len(e.PCRs))
	for i, p := range e.PCRs {
		ps[i] = strconv.Itoa(p)
	}
	return fmt.Sprintf("%v: PCR %s (sha256); boot the approved software, or approve new values with `edgeseal tpm reseal` from an approved state",
		ErrPCRMismatch, strings.Join(ps, ", "))
}

func (e *MismatchError) Unwrap() error { return ErrPCRMismatch }

// pcrMismatch names the PCRs whose values differ from the approved ones.
func (o *SealedObject) pcrMismatch(t *tpm2.TPMContext) error {
	now, err := ReadPCRs(t, o.PCRs)
	if err != nil {
		return fmt.Errorf("%w (and %v)", ErrPCRMismatch, err)
	}
	e := &MismatchError{}
	for _, p := range o.PCRs {
		if !bytes.Equal(now[p], o.Values[p]) {
			e.PCRs = append(e.PCRs, p)
		}
	}
	return e
}

func (o *SealedObject) classifyUnseal(t *tpm2.TPMContext, err error) error {
	switch {
	case tpm2.IsTPMWarning(err, tpm2.WarningLockout, tpm2.AnyCommandCode):
		return lockoutError(t)
	case tpm2.IsTPMSessionError(err, tpm2.ErrorAuthFail, tpm2.AnyCommandCode, tpm2.AnySessionIndex),
		tpm2.IsTPMSessionError(err, tpm2.ErrorBadAuth, tpm2.AnyCommandCode, tpm2.AnySessionIndex):
		return fmt.Errorf("%w: the TPM counts this failure toward its lockout", ErrWrongPIN)
	case tpm2.IsTPMSessionError(err, tpm2.ErrorPolicyFail, tpm2.AnyCommandCode, tpm2.AnySessionIndex):
		return o.pcrMismatch(t)
	}
	return fmt.Errorf("cannot unseal: %w", err)
}

func lockoutError(t *tpm2.TPMContext) error {
	interval, err1 := t.GetCapabilityTPMProperty(tpm2.PropertyLockoutInterval)
	counter, err2 := t.GetCapabilityTPMProperty(tpm2.PropertyLockoutCounter)
	max, err3 := t.GetCapabilityTPMProperty(tpm2.PropertyMaxAuthFail)
	if err1 != nil || err2 != nil || err3 != nil {
		return ErrLockout
	}
	// One failure is forgotten every interval; below the maximum, it lifts.
	wait := (counter - max + 1) * interval
	return fmt.Errorf("%w: %d failures of %d allowed; it lifts in about %d s without further failures",
		ErrLockout, counter, max, wait)
}

// packSealedData: version (1) | len(secret) (2, big-endian) | secret | P-256 scalar (32).
func packSealedData(secret []byte, key *ecdsa.PrivateKey) []byte {
	out := []byte{sealedDataVersion}
	out = binary.BigEndian.AppendUint16(out, uint16(len(secret)))
	out = append(out, secret...)
	d, _ := key.Bytes() // the 32-byte scalar of a P-256 key
	out = append(out, d...)
	clear(d)
	return out
}

// checkSignKey checks the signing key read with the secret is the one whose
// approvals the blob carries. An NV index undefined and defined again with the
// same public area has the same name, so whoever has the owner's authorisation
// (empty on an edgeseal device) could plant data of their own in it: not the
// secret, which it never reveals, but a key that would then sign approvals no
// TPM honours (found by the review of storage nv). Such data is refused here,
// as a replaced index, before anything is unsealed or approved with it.
func (o *SealedObject) checkSignKey(key *ecdsa.PrivateKey) error {
	want, ok := o.SignKey.Public().(*ecdsa.PublicKey)
	if !ok || !want.Equal(&key.PublicKey) {
		return fmt.Errorf("%w: the NV index at %v holds data that is not this blob's (it was replaced); "+
			"bring the device back with `edgeseal recover`", ErrNVChanged, o.NV.Index)
	}
	return nil
}

func unpackSealedData(data []byte) ([]byte, *ecdsa.PrivateKey, error) {
	if len(data) < 3 || data[0] != sealedDataVersion {
		return nil, nil, errors.New("cannot read the sealed data: unknown version")
	}
	n := int(binary.BigEndian.Uint16(data[1:3]))
	if len(data) != 3+n+32 {
		return nil, nil, errors.New("cannot read the sealed data: wrong length")
	}
	secret := slices.Clone(data[3 : 3+n])
	key, err := ecdh256Key(data[3+n:])
	if err != nil {
		clear(secret)
		return nil, nil, err
	}
	return secret, key, nil
}

func ecdh256Key(d []byte) (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, fmt.Errorf("cannot read the sealed policy signing key: %w", err)
	}
	return k, nil
}
