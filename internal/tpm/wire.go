package tpm

import (
	"errors"
	"fmt"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/mu"
)

// wireVersion is the version of a SealedObject's binary form.
const wireVersion = 1

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
	w := wireSealed{Version: wireVersion, SRKName: o.SRKName, Public: o.Public, Private: o.Private,
		SignKey: o.SignKey, PCRs: selection(o.PCRs), Approved: o.Approved, Signature: o.Signature}
	if o.PIN {
		w.PIN = 1
	}
	for _, p := range o.PCRs {
		w.Values = append(w.Values, o.Values[p])
	}
	return mu.MarshalToBytes(&w)
}

// UnmarshalSealedObject decodes what MarshalBinary wrote; anything else is
// ErrBadObject.
func UnmarshalSealedObject(data []byte) (o *SealedObject, err error) {
	var w wireSealed
	if err := decodeWire(data, maxWireSize, &w); err != nil {
		return nil, err
	}
	switch {
	case w.Version != wireVersion:
		return nil, fmt.Errorf("%w: version %d (this edgeseal reads %d)", ErrBadObject, w.Version, wireVersion)
	case w.Public == nil || w.SignKey == nil || w.Signature == nil || len(w.PCRs) != 1 ||
		w.PCRs[0].Hash != tpm2.HashAlgorithmSHA256 || len(w.PCRs[0].Select) != len(w.Values) || w.PIN > 1:
		return nil, fmt.Errorf("%w: incomplete or inconsistent fields", ErrBadObject)
	}
	o = &SealedObject{SRKName: w.SRKName, Public: w.Public, Private: w.Private, SignKey: w.SignKey,
		PIN: w.PIN == 1, PCRs: w.PCRs[0].Select, Values: map[int][]byte{}, Approved: w.Approved, Signature: w.Signature}
	for i, p := range o.PCRs {
		if len(w.Values[i]) != 32 {
			return nil, fmt.Errorf("%w: PCR %d value is %d bytes", ErrBadObject, p, len(w.Values[i]))
		}
		o.Values[p] = w.Values[i]
	}
	return o, nil
}
