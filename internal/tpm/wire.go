package tpm

import (
	"errors"
	"fmt"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/mu"
)

// Versions of a SealedObject's binary form: 1 for a sealed data object under
// the SRK (storage file), 2 for a sealed NV index (storage nv). Both are read.
const (
	wireVersion   = 1
	wireVersionNV = 2
)

// maxWireSize bounds a SealedObject's binary form (real ones are under 1 KiB).
const maxWireSize = 4096

// ErrBadObject: the binary form of a sealed object cannot be read.
var ErrBadObject = errors.New("malformed TPM sealed object")

// wireSealed is the binary form, in the TPM's own encoding (go-tpm2's mu):
// version, SRK name, sealed object public and private areas, then the approval.
type wireSealed struct {
	Version  uint8
	SRKName  tpm2.Name
	Public   *tpm2.Public
	Private  tpm2.Private
	Approval wireApproval
}

// wireSealedNV is version 2: version, SRK name, the data index's handle and
// name, the counter's handle and name, the counter value the approval holds
// for, then the approval.
type wireSealedNV struct {
	Version     uint8
	SRKName     tpm2.Name
	Index       tpm2.Handle
	IndexName   tpm2.Name
	Counter     tpm2.Handle
	CounterName tpm2.Name
	Value       uint64
	Approval    wireApproval
}

// wireApproval ends both versions (encoded inline): the policy signing key,
// whether a PIN is needed, the PCR selection, the approved values in PCR
// order, the approved policy digest, and its signature.
type wireApproval struct {
	SignKey   *tpm2.Public
	PIN       uint8
	PCRs      tpm2.PCRSelectionList
	Values    tpm2.DigestList
	Approved  tpm2.Digest
	Signature *tpm2.Signature
}

// decodeWire decodes data, at most limit bytes and nothing after the value,
// into w with the TPM's encoding; anything else is ErrBadObject.
func decodeWire(data []byte, limit int, w any) error {
	if len(data) > limit {
		return fmt.Errorf("%w: %d bytes", ErrBadObject, len(data))
	}
	n, err := mu.UnmarshalFromBytes(data, w)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrBadObject, err)
	case n != len(data):
		return fmt.Errorf("%w: %d bytes after the object", ErrBadObject, len(data)-n)
	}
	return nil
}

// MarshalBinary encodes the sealed object for the sealed blob.
func (o *SealedObject) MarshalBinary() ([]byte, error) {
	a := wireApproval{SignKey: o.SignKey, PCRs: selection(o.PCRs), Approved: o.Approved, Signature: o.Signature}
	if o.PIN {
		a.PIN = 1
	}
	for _, p := range o.PCRs {
		a.Values = append(a.Values, o.Values[p])
	}
	if o.NV != nil {
		return mu.MarshalToBytes(&wireSealedNV{Version: wireVersionNV, SRKName: o.SRKName, Index: o.NV.Index, IndexName: o.NV.IndexName,
			Counter: o.NV.Counter, CounterName: o.NV.CounterName, Value: o.NV.Value, Approval: a})
	}
	return mu.MarshalToBytes(&wireSealed{Version: wireVersion, SRKName: o.SRKName, Public: o.Public, Private: o.Private, Approval: a})
}

// UnmarshalSealedObject decodes what MarshalBinary wrote; anything else is
// ErrBadObject.
func UnmarshalSealedObject(data []byte) (*SealedObject, error) {
	o := &SealedObject{}
	var a *wireApproval
	if len(data) > 0 && data[0] == wireVersionNV {
		var w wireSealedNV
		if err := decodeWire(data, maxWireSize, &w); err != nil {
			return nil, err
		}
		if w.Index.Type() != tpm2.HandleTypeNVIndex || w.Counter.Type() != tpm2.HandleTypeNVIndex || w.Index == w.Counter {
			return nil, fmt.Errorf("%w: NV handles %v and %v", ErrBadObject, w.Index, w.Counter)
		}
		o.SRKName, a = w.SRKName, &w.Approval
		o.NV = &NVStorage{Index: w.Index, IndexName: w.IndexName, Counter: w.Counter, CounterName: w.CounterName, Value: w.Value}
	} else {
		var w wireSealed
		if err := decodeWire(data, maxWireSize, &w); err != nil {
			return nil, err
		}
		if w.Version != wireVersion {
			return nil, fmt.Errorf("%w: version %d (this edgeseal reads %d and %d)", ErrBadObject, w.Version, wireVersion, wireVersionNV)
		}
		if w.Public == nil {
			return nil, fmt.Errorf("%w: incomplete or inconsistent fields", ErrBadObject)
		}
		o.SRKName, o.Public, o.Private, a = w.SRKName, w.Public, w.Private, &w.Approval
	}
	if a.SignKey == nil || a.Signature == nil || len(a.PCRs) != 1 ||
		a.PCRs[0].Hash != tpm2.HashAlgorithmSHA256 || len(a.PCRs[0].Select) != len(a.Values) || a.PIN > 1 {
		return nil, fmt.Errorf("%w: incomplete or inconsistent fields", ErrBadObject)
	}
	o.SignKey, o.PIN, o.Approved, o.Signature = a.SignKey, a.PIN == 1, a.Approved, a.Signature
	o.PCRs, o.Values = a.PCRs[0].Select, map[int][]byte{}
	for i, p := range o.PCRs {
		if len(a.Values[i]) != 32 {
			return nil, fmt.Errorf("%w: PCR %d value is %d bytes", ErrBadObject, p, len(a.Values[i]))
		}
		o.Values[p] = a.Values[i]
	}
	return o, nil
}
