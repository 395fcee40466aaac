package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/canonical/go-tpm2"
)

// Errors of NV storage a caller acts on.
var (
	// ErrRolledBack: the sealed blob's approval is for an older value of the TPM's
	// counter than it holds: an old blob restored from a backup (or a copy kept
	// from before `edgeseal tpm reseal`). Restore the latest blob, or recover.
	ErrRolledBack = errors.New("the sealed blob is older than the TPM's counter (rolled back)")
	// ErrNVChanged: an NV index the blob names is gone or is another index: the
	// TPM was cleared, or the blob is another device's.
	ErrNVChanged = errors.New("the TPM's NV index is not the one this was sealed into")
	// ErrNVFull: the TPM has no room left to define an NV index.
	ErrNVFull = errors.New("the TPM's NV storage is full")
	// ErrNVInUse: an NV handle edgeseal is configured to use holds an index that
	// is not edgeseal's. edgeseal never undefines it.
	ErrNVInUse = errors.New("the NV handle holds an index that is not edgeseal's")
)

// NVHandles are the owner-hierarchy NV handles of storage nv: the sealed data
// lives at Index or Index+1 (two slots, so a new seal is written before the old
// index goes), the rollback counter at Counter.
type NVHandles struct {
	Index, Counter tpm2.Handle
}

// NVStorage locates a sealed object kept in TPM NV storage, and the counter
// value its approval holds for.
type NVStorage struct {
	Index       tpm2.Handle // the data index (one of the two slots)
	IndexName   tpm2.Name   // its name, once written and write-locked
	Counter     tpm2.Handle
	CounterName tpm2.Name
	// Value: the approval holds while the counter is at most Value
	// (PolicyNV, unsigned less-or-equal).
	Value uint64
}

// maxCounterSteps bounds the increments of one Commit (one per reseal left
// unfinished by a crash, in practice one).
const maxCounterSteps = 8

// counterPublic is the rollback counter: increments need the owner's
// authorisation (TPMA_NV_OWNERWRITE), anyone may read it (TPMA_NV_AUTHREAD with
// an empty auth value; PolicyNV reads it so). No DA: there is no secret to guess.
func counterPublic(h tpm2.Handle) *tpm2.NVPublic {
	return &tpm2.NVPublic{Index: h, NameAlg: tpm2.HashAlgorithmSHA256, Size: 8,
		Attrs: tpm2.NVTypeCounter.WithAttrs(tpm2.AttrNVOwnerWrite | tpm2.AttrNVAuthRead | tpm2.AttrNVNoDA | tpm2.AttrNVWritten)}
}

// dataAttrs are the data index's attributes: read only through its policy
// (TPMA_NV_POLICYREAD, no AUTHREAD, OWNERREAD or PPREAD); written once with its
// auth value (TPMA_NV_AUTHWRITE), then write-locked until it is undefined
// (TPMA_NV_WRITEDEFINE). Without a PIN there is nothing to guess: no DA.
func dataAttrs(pin bool) tpm2.NVAttributes {
	a := tpm2.NVTypeOrdinary.WithAttrs(tpm2.AttrNVAuthWrite | tpm2.AttrNVWriteDefine | tpm2.AttrNVPolicyRead)
	if !pin {
		a |= tpm2.AttrNVNoDA
	}
	return a
}

// ours tells whether pub has the shape of an edgeseal data index (any policy).
func ours(pub *tpm2.NVPublic) bool {
	a := pub.Attrs &^ (tpm2.AttrNVWritten | tpm2.AttrNVWriteLocked)
	return pub.NameAlg == tpm2.HashAlgorithmSHA256 && (a == dataAttrs(true) || a == dataAttrs(false))
}

// ensureCounter returns the rollback counter at h and its value, defining it
// (and incrementing it once: a counter is readable once written) if h is free.
// The TPM starts a new counter at least at the highest value any counter on it
// has had, so one undefined and defined again never goes back.
func ensureCounter(t *tpm2.TPMContext, h tpm2.Handle) (tpm2.ResourceContext, uint64, error) {
	want := counterPublic(h)
	var rc tpm2.ResourceContext
	if t.DoesHandleExist(h) {
		r, err := t.NewResourceContext(h)
		if err != nil {
			return nil, 0, fmt.Errorf("cannot read the TPM counter at %v: %w", h, err)
		}
		pub, _, err := t.NVReadPublic(r)
		if err != nil {
			return nil, 0, fmt.Errorf("cannot read the TPM counter at %v: %w", h, err)
		}
		// Its name algorithm too: the approved policy's PolicyNV names the
		// counter by a SHA-256 name (a squatted counter of another algorithm
		// would make every blob unsealable, said the review of storage nv).
		if pub.Attrs&^tpm2.AttrNVWritten != want.Attrs&^tpm2.AttrNVWritten || pub.Size != 8 || len(pub.AuthPolicy) != 0 ||
			pub.NameAlg != tpm2.HashAlgorithmSHA256 {
			return nil, 0, fmt.Errorf("%w: %v holds an index with attributes %v, not edgeseal's counter; "+
				"set seal.tpm2.counter_index to a free handle", ErrNVInUse, h, pub.Attrs)
		}
		if pub.Attrs&tpm2.AttrNVWritten == 0 {
			// Defined by a seal that stopped before its first increment.
			if err := t.NVIncrement(t.OwnerHandleContext(), r, nil); err != nil {
				return nil, 0, fmt.Errorf("cannot start the TPM counter at %v: %w", h, err)
			}
			if r, err = t.NewResourceContext(h); err != nil {
				return nil, 0, fmt.Errorf("cannot read the TPM counter at %v: %w", h, err)
			}
		}
		rc = r
	} else {
		def := *want
		def.Attrs &^= tpm2.AttrNVWritten
		r, err := t.NVDefineSpace(t.OwnerHandleContext(), nil, &def, nil)
		if err != nil {
			return nil, 0, defineError(h, "rollback counter", err)
		}
		if err := t.NVIncrement(t.OwnerHandleContext(), r, nil); err != nil {
			return nil, 0, fmt.Errorf("cannot start the TPM counter at %v: %w", h, err)
		}
		if rc, err = t.NewResourceContext(h); err != nil {
			return nil, 0, fmt.Errorf("cannot read the TPM counter at %v: %w", h, err)
		}
	}
	v, err := t.NVReadCounter(rc, rc, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read the TPM counter at %v: %w", h, err)
	}
	return rc, v, nil
}

func defineError(h tpm2.Handle, what string, err error) error {
	if tpm2.IsTPMError(err, tpm2.ErrorNVSpace, tpm2.CommandNVDefineSpace) {
		return fmt.Errorf("cannot define NV index %v for the %s: %w (TPM_RC_NV_SPACE): free room by undefining "+
			"indices nothing uses (tpm2_getcap handles-nv-index; tpm2_nvundefine), or set seal.tpm2.storage: file", h, what, ErrNVFull)
	}
	if tpm2.IsTPMSessionError(err, tpm2.ErrorBadAuth, tpm2.AnyCommandCode, tpm2.AnySessionIndex) ||
		tpm2.IsTPMSessionError(err, tpm2.ErrorAuthFail, tpm2.AnyCommandCode, tpm2.AnySessionIndex) {
		return fmt.Errorf("cannot define NV index %v for the %s: the TPM's owner hierarchy has a password: %w", h, what, err)
	}
	return fmt.Errorf("cannot define NV index %v for the %s: %w", h, what, err)
}

// freeSlot returns the data slot to seal into: Index or Index+1, whichever
// inUse (the slot the current blob names; 0: none) is not. A slot holding an
// edgeseal index that no blob names (left by a seal that did not finish) is
// undefined first; a slot holding another index is never touched.
func freeSlot(t *tpm2.TPMContext, h NVHandles, inUse tpm2.Handle) (tpm2.Handle, error) {
	var candidates []tpm2.Handle
	for _, s := range []tpm2.Handle{h.Index, h.Index + 1} {
		if s != inUse {
			candidates = append(candidates, s)
		}
	}
	for _, s := range candidates {
		if !t.DoesHandleExist(s) {
			return s, nil
		}
	}
	for _, s := range candidates {
		rc, err := t.NewResourceContext(s)
		if err != nil {
			continue
		}
		if pub, _, err := t.NVReadPublic(rc); err == nil && ours(pub) {
			if err := t.NVUndefineSpace(t.OwnerHandleContext(), rc, nil); err != nil {
				return 0, fmt.Errorf("cannot undefine the unused NV index %v: %w", s, err)
			}
			return s, nil
		}
	}
	return 0, fmt.Errorf("%w: %v; set seal.tpm2.nv_index to a free pair of handles", ErrNVInUse, candidates)
}

// SealNV seals secret into a TPM NV index, approving the current values of pcrs
// for the counter's next value, and past prev's: prev is the NV storage of the
// blob this seal replaces (a recovery's; nil: none), whose slot is left alone.
// The index is defined by the owner hierarchy with the sealed object's policy;
// the data is written over a session salted by the SRK (encrypted on the bus),
// then write-locked.
func SealNV(t *tpm2.TPMContext, secret []byte, pcrs []int, pin []byte, h NVHandles, prev *NVStorage) (*SealedObject, error) {
	s, err := newSealing(t, secret, pcrs, pin)
	if err != nil {
		return nil, err
	}
	defer clear(s.data)
	counter, value, err := ensureCounter(t, h.Counter)
	if err != nil {
		return nil, err
	}
	var inUse tpm2.Handle
	next := value + 1
	if prev != nil {
		inUse, next = prev.Index, max(next, prev.Value+1)
	}
	slot, err := freeSlot(t, h, inUse)
	if err != nil {
		return nil, err
	}
	pub := &tpm2.NVPublic{Index: slot, NameAlg: tpm2.HashAlgorithmSHA256, Attrs: dataAttrs(len(pin) > 0),
		AuthPolicy: s.authPolicy, Size: uint16(len(s.data))}
	idx, err := defineEncrypted(t, s.srk, pin, pub)
	if err != nil {
		return nil, defineError(slot, "sealed key", err)
	}
	if err := writeOnce(t, s.srk, idx, s.data); err != nil {
		// Nothing names the index yet: take it back.
		t.NVUndefineSpace(t.OwnerHandleContext(), idx, nil)
		return nil, err
	}
	_, name, err := t.NVReadPublic(idx)
	if err != nil {
		return nil, fmt.Errorf("cannot read the sealed index %v: %w", slot, err)
	}
	// Approved past the counter and the blob it replaces (whose approval may
	// not be committed yet): once this blob is written, Commit (or its first
	// unseal) advances the counter, and the blob before it (a recovery's old
	// slot) is refused even if its index could not be released (found by
	// the review of storage nv).
	return s.approved(t, &SealedObject{
		NV: &NVStorage{Index: slot, IndexName: name, Counter: h.Counter, CounterName: counter.Name(), Value: next}})
}

// CounterStarted tells whether the TPM holds edgeseal's rollback counter at h,
// started (written): a key has been sealed into NV storage on this TPM, so a
// blob from before (in a sealed object, which no counter binds) must not
// unseal any more.
func CounterStarted(t *tpm2.TPMContext, h tpm2.Handle) (bool, error) {
	if !t.DoesHandleExist(h) {
		return false, nil
	}
	rc, err := t.NewResourceContext(h)
	if err != nil {
		return false, fmt.Errorf("cannot read the TPM counter at %v: %w", h, err)
	}
	pub, _, err := t.NVReadPublic(rc)
	if err != nil {
		return false, fmt.Errorf("cannot read the TPM counter at %v: %w", h, err)
	}
	return pub.Attrs == counterPublic(h).Attrs && pub.NameAlg == tpm2.HashAlgorithmSHA256, nil
}

// defineEncrypted defines the index pub with the auth value pin, authorised
// by the owner over a session salted by the SRK with command encryption, so
// that a PIN does not cross the TPM's bus in clear (as it does not for a
// sealed object: found by the review of storage nv).
func defineEncrypted(t *tpm2.TPMContext, srk tpm2.ResourceContext, pin []byte, pub *tpm2.NVPublic) (tpm2.ResourceContext, error) {
	session, err := t.StartAuthSession(srk, nil, tpm2.SessionTypeHMAC, sha256Sym, tpm2.HashAlgorithmSHA256)
	if err != nil {
		return nil, fmt.Errorf("cannot start a session with the TPM: %w", err)
	}
	defer t.FlushContext(session)
	return t.NVDefineSpace(t.OwnerHandleContext(), pin, pub, session.WithAttrs(tpm2.AttrCommandEncrypt|tpm2.AttrContinueSession))
}

// writeOnce writes data to the index over a session salted by the SRK, with
// command encryption, then locks it against writes until it is undefined.
func writeOnce(t *tpm2.TPMContext, srk, idx tpm2.ResourceContext, data []byte) error {
	session, err := t.StartAuthSession(srk, nil, tpm2.SessionTypeHMAC, sha256Sym, tpm2.HashAlgorithmSHA256)
	if err != nil {
		return fmt.Errorf("cannot start a session with the TPM: %w", err)
	}
	defer t.FlushContext(session)
	if err := t.NVWrite(idx, idx, data, 0, session.WithAttrs(tpm2.AttrCommandEncrypt|tpm2.AttrContinueSession)); err != nil {
		return fmt.Errorf("cannot write the sealed index %v: %w", idx.Handle(), err)
	}
	if err := t.NVWriteLock(idx, idx, session.WithAttrs(tpm2.AttrContinueSession)); err != nil {
		return fmt.Errorf("cannot write-lock the sealed index %v: %w", idx.Handle(), err)
	}
	return nil
}

// counterOperand is PolicyNV's operand: the counter value, big-endian.
func counterOperand(v uint64) tpm2.Operand {
	return binary.BigEndian.AppendUint64(nil, v)
}

// nvIndex returns the NV index at h if it is the one named name (go-tpm2
// checks the name the TPM gives against the public area it reads); otherwise
// an ErrNVChanged error saying what to do.
func nvIndex(t *tpm2.TPMContext, h tpm2.Handle, name tpm2.Name, what string) (tpm2.ResourceContext, error) {
	rc, err := t.NewResourceContext(h)
	switch {
	case tpm2.IsResourceUnavailableError(err, h):
		return nil, fmt.Errorf("%w: there is no NV index at %v (the %s): the TPM was cleared, a recovery replaced this blob, "+
			"or it is another device's; bring the device back with `edgeseal recover`", ErrNVChanged, h, what)
	case err != nil:
		return nil, fmt.Errorf("cannot read the NV index %v: %w", h, err)
	case !bytes.Equal(rc.Name(), name):
		return nil, fmt.Errorf("%w: the NV index at %v (the %s) is not the one this blob was sealed into: the TPM was cleared, "+
			"a recovery replaced this blob, or it is another device's; bring the device back with `edgeseal recover`", ErrNVChanged, h, what)
	}
	return rc, nil
}

// counterValue reads the rollback counter the object names, checking it is the
// same counter; a counter past the object's Value is ErrRolledBack.
func (o *SealedObject) counterValue(t *tpm2.TPMContext) (tpm2.ResourceContext, uint64, error) {
	rc, err := nvIndex(t, o.NV.Counter, o.NV.CounterName, "rollback counter")
	if err != nil {
		return nil, 0, err
	}
	v, err := t.NVReadCounter(rc, rc, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read the TPM counter at %v: %w", o.NV.Counter, err)
	}
	if v > o.NV.Value {
		return nil, 0, o.rolledBack(v)
	}
	return rc, v, nil
}

func (o *SealedObject) rolledBack(now uint64) error {
	return fmt.Errorf("%w: it was approved for TPM counter value %d, the counter at %v is at %d: "+
		"an older copy of the sealed blob was put back (from a backup?); restore the latest one, or bring the device back with `edgeseal recover`",
		ErrRolledBack, o.NV.Value, o.NV.Counter, now)
}

// Commit advances the TPM counter to the object's Value, after the blob holding
// it is safely written: from then on every older approval is refused. It is a
// no-op for an object in a sealed data object, or when the counter is there.
func (o *SealedObject) Commit(t *tpm2.TPMContext) error {
	if o.NV == nil {
		return nil
	}
	rc, v, err := o.counterValue(t)
	if err != nil {
		return err
	}
	return o.advance(t, rc, v)
}

// advance increments the counter rc, at v, up to the object's Value.
func (o *SealedObject) advance(t *tpm2.TPMContext, rc tpm2.ResourceContext, v uint64) error {
	if v >= o.NV.Value {
		return nil
	}
	if o.NV.Value-v > maxCounterSteps {
		return fmt.Errorf("cannot advance the TPM counter at %v from %d to %d: more than %d steps", o.NV.Counter, v, o.NV.Value, maxCounterSteps)
	}
	for ; v < o.NV.Value; v++ {
		if err := t.NVIncrement(t.OwnerHandleContext(), rc, nil); err != nil {
			return fmt.Errorf("cannot advance the TPM counter at %v: %w", o.NV.Counter, err)
		}
	}
	return nil
}

// Release undefines the object's NV index, once a newer blob (a recovery's) no
// longer needs it. An index at that handle that is not the object's is left.
func (o *SealedObject) Release(t *tpm2.TPMContext) error {
	if o.NV == nil {
		return nil
	}
	rc, err := nvIndex(t, o.NV.Index, o.NV.IndexName, "sealed key")
	if errors.Is(err, ErrNVChanged) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := t.NVUndefineSpace(t.OwnerHandleContext(), rc, nil); err != nil {
		return fmt.Errorf("cannot undefine the old sealed index %v: %w", o.NV.Index, err)
	}
	return nil
}
