package tpm

import (
	"errors"
	"fmt"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/mu"
	"github.com/canonical/go-tpm2/objectutil"
)

// SRKHandle is where the storage root key persists: the TCG's reserved handle for
// the owner hierarchy's SRK, which other software expecting an SRK also uses.
const SRKHandle tpm2.Handle = 0x81000001

// ErrSRKMismatch: the key at SRKHandle is not a storage root key of edgeseal's
// template. edgeseal never overwrites it.
var ErrSRKMismatch = errors.New("the key at the storage root key handle is not a storage root key")

// srkTemplate is the TCG's ECC P-256 storage root key template (TCG TPM v2.0
// Provisioning Guidance): a primary created from it under the owner seed is
// always the same key on one TPM, and a different key on another. Like the TCG's,
// it is exempt from dictionary-attack protection (noDA): it has no secret to
// guess, and unclean power-offs, which the TPM counts as failures, must not lock
// the device out of everything sealed under it.
func srkTemplate() *tpm2.Public {
	return objectutil.NewECCStorageKeyTemplate(objectutil.WithoutDictionaryAttackProtection())
}

// EnsureSRK returns the storage root key at SRKHandle, creating and persisting it
// if the handle is empty. A key of another shape at the handle is refused with
// ErrSRKMismatch. created tells whether this call made it. No transient object is
// left loaded.
func EnsureSRK(t *tpm2.TPMContext) (srk tpm2.ResourceContext, created bool, err error) {
	if t.DoesHandleExist(SRKHandle) {
		rc, err := t.NewResourceContext(SRKHandle)
		if err != nil {
			return nil, false, fmt.Errorf("cannot read the storage root key at %v: %w", SRKHandle, err)
		}
		pub, _, _, err := t.ReadPublic(rc)
		if err != nil {
			return nil, false, fmt.Errorf("cannot read the storage root key at %v: %w", SRKHandle, err)
		}
		if !sameShape(pub, srkTemplate()) {
			return nil, false, fmt.Errorf("%w: handle %v holds a %v key with attributes %v; "+
				"edgeseal will not overwrite it (if nothing uses it, remove it with tpm2_evictcontrol -c %v)",
				ErrSRKMismatch, SRKHandle, pub.Type, pub.Attrs, SRKHandle)
		}
		return rc, false, nil
	}
	obj, _, _, _, _, err := t.CreatePrimary(t.OwnerHandleContext(), nil, srkTemplate(), nil, nil, nil)
	if err != nil {
		if tpm2.IsTPMSessionError(err, tpm2.ErrorBadAuth, tpm2.AnyCommandCode, tpm2.AnySessionIndex) ||
			tpm2.IsTPMSessionError(err, tpm2.ErrorAuthFail, tpm2.AnyCommandCode, tpm2.AnySessionIndex) {
			return nil, false, fmt.Errorf("cannot create the storage root key: the TPM's owner hierarchy has a password: %w", err)
		}
		return nil, false, fmt.Errorf("cannot create the storage root key: %w", err)
	}
	defer t.FlushContext(obj)
	persistent, err := t.EvictControl(t.OwnerHandleContext(), obj, SRKHandle, nil)
	if err != nil {
		return nil, false, fmt.Errorf("cannot persist the storage root key at %v: %w", SRKHandle, err)
	}
	return persistent, true, nil
}

// sameShape compares two public areas except their unique field (the key itself,
// which differs from TPM to TPM): want with have's unique must encode as have.
func sameShape(have, want *tpm2.Public) bool {
	w := *want
	w.Unique = have.Unique
	a, err1 := mu.MarshalToBytes(have)
	b, err2 := mu.MarshalToBytes(&w)
	return err1 == nil && err2 == nil && string(a) == string(b)
}
