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
// version, SRK name, sealed object public and private areas, the policy signing
// key, whether a PIN is needed, the PCR selection, the approved values in PCR
// order, the approved PolicyPCR digest, and its signature.
type wireSealed struct {
	Version   uint8
	SRKName   tpm2.Name
	Public    *tpm2.Public
	Private   tpm2.Private
	SignKey   *tpm2.Public
	PIN       uint8
	PCRs      tpm2.PCRSelectionList
	Values    tpm2.DigestList
	Approved  tpm2.Digest
	Signature *tpm2.Signature
}

// wireSealedNV is version 2: version, SRK name, the data index's handle and
// name, the counter's handle and name, the counter value the approval holds
// for, then as version 1 from the policy signing key on.
type wireSealedNV struct {
	Version     uint8
	SRKName     tpm2.Name
	Index       tpm2.Handle
	IndexName   tpm2.Name
	Counter     tpm2.Handle
	CounterName tpm2.Name
	Value       uint64
	SignKey     *tpm2.Public
	PIN         uint8
	PCRs        tpm2.PCRSelectionList
	Values      tpm2.DigestList
	Approved    tpm2.Digest
	Signature   *tpm2.Signature
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
	var values tpm2.DigestList
	for _, p := range o.PCRs {
		values = append(values, o.Values[p])
	}
	pin := uint8(0)
	if o.PIN {
		pin = 1
	}
	if o.NV != nil {
		return mu.MarshalToBytes(&wireSealedNV{Version: wireVersionNV, SRKName: o.SRKName,
			Index: o.NV.Index, IndexName: o.NV.IndexName, Counter: o.NV.Counter, CounterName: o.NV.CounterName, Value: o.NV.Value,
			SignKey: o.SignKey, PIN: pin, PCRs: selection(o.PCRs), Values: values, Approved: o.Approved, Signature: o.Signature})
	}
	w := wireSealed{Version: wireVersion, SRKName: o.SRKName, Public: o.Public, Private: o.Private,
		SignKey: o.SignKey, PIN: pin, PCRs: selection(o.PCRs), Values: values, Approved: o.Approved, Signature: o.Signature}
	return mu.MarshalToBytes(&w)
}

// UnmarshalSealedObject decodes what MarshalBinary wrote; anything else is
// ErrBadObject.
func UnmarshalSealedObject(data []byte) (o *SealedObject, err error) {
	if len(data) > 0 && data[0] == wireVersionNV {
		return unmarshalNV(data)
	}
	var w wireSealed
	if err := decodeWire(data, maxWireSize, &w); err != nil {
		return nil, err
	}
	switch {
	case w.Version != wireVersion:
		return nil, fmt.Errorf("%w: version %d (this edgeseal reads %d and %d)", ErrBadObject, w.Version, wireVersion, wireVersionNV)
	case w.Public == nil || w.SignKey == nil || w.Signature == nil || len(w.PCRs) != 1 ||
		w.PCRs[0].Hash != tpm2.HashAlgorithmSHA256 || len(w.PCRs[0].Select) != len(w.Values) || w.PIN > 1:
		return nil, fmt.Errorf("%w: incomplete or inconsistent fields", ErrBadObject)
	}
	o = &SealedObject{SRKName: w.SRKName, Public: w.Public, Private: w.Private, SignKey: w.SignKey,
		PIN: w.PIN == 1, Approved: w.Approved, Signature: w.Signature}
	return o, o.setValues(w.PCRs[0].Select, w.Values)
}

func unmarshalNV(data []byte) (*SealedObject, error) {
	var w wireSealedNV
	if err := decodeWire(data, maxWireSize, &w); err != nil {
		return nil, err
	}
	if w.SignKey == nil || w.Signature == nil || len(w.PCRs) != 1 || w.PCRs[0].Hash != tpm2.HashAlgorithmSHA256 ||
		len(w.PCRs[0].Select) != len(w.Values) || w.PIN > 1 ||
		w.Index.Type() != tpm2.HandleTypeNVIndex || w.Counter.Type() != tpm2.HandleTypeNVIndex || w.Index == w.Counter {
		return nil, fmt.Errorf("%w: incomplete or inconsistent fields", ErrBadObject)
	}
	o := &SealedObject{SRKName: w.SRKName, SignKey: w.SignKey, PIN: w.PIN == 1, Approved: w.Approved, Signature: w.Signature,
		NV: &NVStorage{Index: w.Index, IndexName: w.IndexName, Counter: w.Counter, CounterName: w.CounterName, Value: w.Value}}
	return o, o.setValues(w.PCRs[0].Select, w.Values)
}

func (o *SealedObject) setValues(pcrs []int, values tpm2.DigestList) error {
	o.PCRs, o.Values = pcrs, map[int][]byte{}
	for i, p := range pcrs {
		if len(values[i]) != 32 {
			return fmt.Errorf("%w: PCR %d value is %d bytes", ErrBadObject, p, len(values[i]))
		}
		o.Values[p] = values[i]
	}
	return nil
}
