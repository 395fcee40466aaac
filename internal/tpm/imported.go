package tpm

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/mu"
	"github.com/canonical/go-tpm2/objectutil"
)

// A controller hands a device a secret (a file vault's key) that only the
// device's TPM can read, without a TPM of its own: it makes a sealed data
// object holding the secret and wraps it for import under the device's
// storage root key, whose public area the device gives at enrolment
// (SRKPublic). The outer wrapper's seed is encrypted to that key, so only the
// TPM that holds the SRK's private half can import the object (TPM2_Import);
// the device then loads and unseals it. Nothing of the secret is ever in clear
// outside the two ends.

// importableVersion heads an Importable's binary form.
const importableVersion = 1

// maxImportableSize bounds an Importable's binary form (a real one is under
// 1 KiB); it comes from the network.
const maxImportableSize = 4096

// maxImportedSecret bounds the secret: a sealed data object holds at most
// MAX_SYM_DATA (128 bytes).
const maxImportedSecret = maxSealedData

// ErrNotForThisTPM: an importable object was made for another device's
// storage root key (or changed on the way): this TPM cannot import it.
var ErrNotForThisTPM = errors.New("the object was not made for this TPM's storage root key")

// Importable is a sealed data object wrapped for one TPM's storage root key.
type Importable struct {
	Public    *tpm2.Public
	Duplicate tpm2.Private
	Seed      tpm2.EncryptedSecret
}

type wireImportable struct {
	Version   uint8
	Public    *tpm2.Public
	Duplicate tpm2.Private
	Seed      tpm2.EncryptedSecret
}

// MarshalBinary encodes the object in the TPM's own encoding (go-tpm2's mu):
// version, public area, duplicate, encrypted seed.
func (i *Importable) MarshalBinary() ([]byte, error) {
	return mu.MarshalToBytes(&wireImportable{Version: importableVersion, Public: i.Public, Duplicate: i.Duplicate, Seed: i.Seed})
}

// UnmarshalImportable decodes what MarshalBinary wrote, strictly: it comes
// from a controller, over the network. Anything else is ErrBadObject.
func UnmarshalImportable(data []byte) (*Importable, error) {
	var w wireImportable
	if err := decodeWire(data, maxImportableSize, &w); err != nil {
		return nil, err
	}
	switch {
	case w.Version != importableVersion:
		return nil, fmt.Errorf("%w: version %d (this edgeseal reads %d)", ErrBadObject, w.Version, importableVersion)
	case w.Public == nil || w.Public.Type != tpm2.ObjectTypeKeyedHash || len(w.Duplicate) == 0 || len(w.Seed) == 0:
		return nil, fmt.Errorf("%w: not a wrapped sealed data object", ErrBadObject)
	case w.Public.Attrs&(tpm2.AttrFixedTPM|tpm2.AttrFixedParent|tpm2.AttrSign|tpm2.AttrDecrypt) != 0:
		return nil, fmt.Errorf("%w: attributes %v are not those of an importable sealed object", ErrBadObject, w.Public.Attrs)
	}
	return &Importable{Public: w.Public, Duplicate: w.Duplicate, Seed: w.Seed}, nil
}

// SRKPublic returns the public area of this TPM's storage root key (made if
// absent): what a device gives a controller at enrolment.
func SRKPublic(t *tpm2.TPMContext) (*tpm2.Public, error) {
	srk, _, err := EnsureSRK(t)
	if err != nil {
		return nil, err
	}
	pub, _, _, err := t.ReadPublic(srk)
	if err != nil {
		return nil, fmt.Errorf("cannot read the storage root key: %w", err)
	}
	return pub, nil
}

// SealToTPM wraps secret for the TPM whose storage root key's public area is
// srk. It needs no TPM: a controller runs it. The object needs no
// authorisation to unseal once imported: whoever holds that TPM (and the
// wrapped object) may read it, and the device's own policy decides when.
func SealToTPM(srk *tpm2.Public, secret []byte) (*Importable, error) {
	if len(secret) == 0 || len(secret) > maxImportedSecret {
		return nil, fmt.Errorf("cannot seal %d bytes for a TPM: 1 to %d", len(secret), maxImportedSecret)
	}
	if srk == nil || !sameShape(srk, srkTemplate()) {
		return nil, fmt.Errorf("cannot seal for a TPM: %w: the public key given is not an edgeseal storage root key", ErrSRKMismatch)
	}
	pub, sensitive, err := objectutil.NewSealedObject(rand.Reader, secret, nil, objectutil.WithoutDictionaryAttackProtection())
	if err != nil {
		return nil, fmt.Errorf("cannot make the sealed object: %w", err)
	}
	// sensitive.Sensitive.Bits is secret itself, the caller's to wipe.
	_, dup, seed, err := objectutil.CreateImportable(rand.Reader, sensitive, pub, srk, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot wrap the sealed object for the TPM: %w", err)
	}
	return &Importable{Public: pub, Duplicate: dup, Seed: seed}, nil
}

// OpenImported imports i under this TPM's storage root key, loads and unseals
// it, and returns the secret (the response encrypted on its way from the TPM).
// An object made for another TPM is ErrNotForThisTPM. Nothing is left loaded.
func OpenImported(t *tpm2.TPMContext, i *Importable) ([]byte, error) {
	srk, _, err := EnsureSRK(t)
	if err != nil {
		return nil, err
	}
	priv, err := t.Import(srk, nil, i.Public, i.Duplicate, i.Seed, nil, nil)
	if err != nil {
		if tpm2.IsTPMParameterError(err, tpm2.AnyErrorCode, tpm2.CommandImport, tpm2.AnyParameterIndex) {
			return nil, fmt.Errorf("%w (%v)", ErrNotForThisTPM, err)
		}
		return nil, fmt.Errorf("cannot import the object: %w", err)
	}
	session, err := t.StartAuthSession(srk, nil, tpm2.SessionTypeHMAC, sha256Sym, tpm2.HashAlgorithmSHA256)
	if err != nil {
		return nil, fmt.Errorf("cannot start a session with the TPM: %w", err)
	}
	defer t.FlushContext(session)
	obj, err := t.Load(srk, priv, i.Public, session.WithAttrs(tpm2.AttrContinueSession))
	if err != nil {
		return nil, fmt.Errorf("cannot load the imported object: %w", err)
	}
	defer t.FlushContext(obj)
	data, err := t.Unseal(obj, session.WithAttrs(tpm2.AttrContinueSession|tpm2.AttrResponseEncrypt))
	if err != nil {
		return nil, fmt.Errorf("cannot unseal the imported object: %w", err)
	}
	return data, nil
}
