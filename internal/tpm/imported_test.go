package tpm

import (
	"errors"
	"testing"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/mu"
)

// What a controller sends is parsed strictly: damaged, truncated, padded,
// another version, or another kind of object is ErrBadObject.
func FuzzUnmarshalImportable(f *testing.F) {
	pub := &tpm2.Public{Type: tpm2.ObjectTypeKeyedHash, NameAlg: tpm2.HashAlgorithmSHA256, Attrs: tpm2.AttrUserWithAuth,
		Params: &tpm2.PublicParamsU{KeyedHashDetail: &tpm2.KeyedHashParams{Scheme: tpm2.KeyedHashScheme{Scheme: tpm2.KeyedHashSchemeNull}}},
		Unique: &tpm2.PublicIDU{KeyedHash: make(tpm2.Digest, 32)}}
	good, err := (&Importable{Public: pub, Duplicate: []byte{1, 2, 3}, Seed: []byte{4, 5}}).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	if i, err := UnmarshalImportable(good); err != nil || i.Public.Type != tpm2.ObjectTypeKeyedHash {
		f.Fatalf("a good object: %v", err)
	}
	signing := *pub
	signing.Attrs |= tpm2.AttrFixedTPM
	fixed, _ := mu.MarshalToBytes(&wireImportable{Version: 1, Public: &signing, Duplicate: []byte{1}, Seed: []byte{2}})
	for _, bad := range [][]byte{nil, good[:len(good)-1], append(good, 0), append([]byte{2}, good[1:]...), fixed} {
		if _, err := UnmarshalImportable(bad); !errors.Is(err, ErrBadObject) {
			f.Errorf("UnmarshalImportable(%x) = %v; want ErrBadObject", bad, err)
		}
		f.Add(bad)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		i, err := UnmarshalImportable(data)
		if err != nil {
			if !errors.Is(err, ErrBadObject) {
				t.Fatalf("an error that is not ErrBadObject: %v", err)
			}
			return
		}
		again, err := i.MarshalBinary()
		if err != nil {
			t.Fatalf("a parsed object does not encode: %v", err)
		}
		if _, err := UnmarshalImportable(again); err != nil {
			t.Fatalf("a parsed object does not parse again: %v", err)
		}
	})
}
