package tpm

import (
	"errors"
	"testing"
)

func FuzzUnmarshalSealedObject(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{2, 0, 0})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := UnmarshalSealedObject(data)
		if err != nil {
			if !errors.Is(err, ErrBadObject) {
				t.Fatalf("error is not ErrBadObject: %v", err)
			}
			return
		}
		// What parses must encode back to the same bytes.
		back, err := o.MarshalBinary()
		if err != nil || string(back) != string(data) {
			t.Fatalf("re-encoding differs: %v", err)
		}
	})
}
