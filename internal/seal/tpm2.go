package seal

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// maxPINSize bounds a PIN file: a TPM auth value is at most a digest long.
const maxPINSize = 32

// maxPINFileSize bounds what is read of a PIN file: a PIN and its newlines.
const maxPINFileSize = 256

// tpm2Sealer seals to the device's TPM: a sealed data object under the storage
// root key, released only in an approved PCR state (and with the PIN, if set).
type tpm2Sealer struct{ cfg config.TPM2 }

// NewTPM2 returns the tpm2 sealer.
func NewTPM2(cfg config.TPM2) Sealer { return &tpm2Sealer{cfg: cfg} }

func (s *tpm2Sealer) Method() string { return MethodTPM2 }

func (s *tpm2Sealer) open() (*tpm2.TPMContext, error) {
	t, err := tpm.Open(s.cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("cannot use seal method tpm2: %w", err)
	}
	return t, nil
}

func (s *tpm2Sealer) pin() ([]byte, error) {
	if s.cfg.PINFile == "" {
		return nil, nil
	}
	data, err := fsutil.ReadSecretFile(s.cfg.PINFile, maxPINFileSize)
	if err != nil {
		return nil, fmt.Errorf("cannot read the TPM PIN (seal.tpm2.pin_file): %w", err)
	}
	pin := bytes.TrimRight(data, "\n")
	if len(pin) == 0 || len(pin) > maxPINSize {
		clear(data)
		return nil, fmt.Errorf("cannot use the TPM PIN in %s: it must be 1 to %d bytes", s.cfg.PINFile, maxPINSize)
	}
	return pin, nil
}

func (s *tpm2Sealer) Seal(_ context.Context, secret []byte) ([]byte, error) {
	return s.seal(secret, nil)
}

// nvHandles are the config's NV handles.
func (s *tpm2Sealer) nvHandles() tpm.NVHandles {
	return tpm.NVHandles{Index: tpm2.Handle(s.cfg.NVIndex), Counter: tpm2.Handle(s.cfg.CounterIndex)}
}

// seal seals secret as the config says; with storage nv, prev is the NV
// storage of the blob it replaces (nil: none): the new index takes the other
// slot and an approval past prev's.
func (s *tpm2Sealer) seal(secret []byte, prev *tpm.NVStorage) ([]byte, error) {
	pin, err := s.pin()
	if err != nil {
		return nil, err
	}
	defer clear(pin)
	t, err := s.open()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var o *tpm.SealedObject
	if s.cfg.Storage == config.TPM2StorageNV {
		o, err = tpm.SealNV(t, secret, s.cfg.PCRs, pin, s.nvHandles(), prev)
	} else {
		o, err = tpm.Seal(t, secret, s.cfg.PCRs, pin)
	}
	if err != nil {
		return nil, classifyTPM(err)
	}
	return envelope(o)
}

// envelope encodes a sealed object as a tpm2 blob.
func envelope(o *tpm.SealedObject) ([]byte, error) {
	data, err := o.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("internal error: cannot encode the TPM sealed object: %w", err)
	}
	return (&Envelope{Version: EnvelopeVersion, Method: MethodTPM2, TPM2: data}).Marshal(), nil
}

// withObject parses blob, reads the PIN and opens the TPM, then runs fn; the PIN
// is wiped and the TPM closed after.
func (s *tpm2Sealer) withObject(blob []byte, fn func(t *tpm2.TPMContext, o *tpm.SealedObject, pin []byte) error) error {
	e, err := parseFor(MethodTPM2, blob)
	if err != nil {
		return err
	}
	o, err := tpm.UnmarshalSealedObject(e.TPM2)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	pin, err := s.pin()
	if err != nil {
		return err
	}
	defer clear(pin)
	t, err := s.open()
	if err != nil {
		return err
	}
	defer t.Close()
	if o.NV == nil && s.cfg.Storage == config.TPM2StorageNV {
		// A blob of storage file, no counter binds it: once a key has been
		// sealed into NV storage here, it is an older copy (the one a
		// recovery keeps beside the new, a backup), refused as rolled back
		// (found by the review of storage nv).
		started, err := tpm.CounterStarted(t, tpm2.Handle(s.cfg.CounterIndex))
		if err != nil {
			return err
		}
		if started {
			return fmt.Errorf("%w: it is sealed in a TPM object (seal.tpm2.storage file), and a key has since been sealed "+
				"into NV storage with the rollback counter at %#x: it is an older copy; restore the latest one, or bring the "+
				"device back with `edgeseal recover`", ErrRolledBack, s.cfg.CounterIndex)
		}
	}
	return fn(t, o, pin)
}

func (s *tpm2Sealer) Unseal(_ context.Context, blob []byte) (secret []byte, err error) {
	err = s.withObject(blob, func(t *tpm2.TPMContext, o *tpm.SealedObject, pin []byte) error {
		secret, err = tpm.Unseal(t, o, pin)
		return classifyTPM(err)
	})
	return secret, err
}

// ApproveTPM2 re-approves a tpm2 blob for new PCR values (nil: the current ones)
// and returns the new blob. It works only where the blob unseals now, so run it
// before an update with the values the update will produce, or right after
// recovering. The sealed object itself, and the key it holds, do not change.
// A blob in TPM NV storage is approved for the rollback counter's next value:
// write it (atomically), then CommitTPM2 it, and older blobs are refused; until
// the commit both unseal, so a crash in between loses nothing (the next unseal
// of the new blob commits it).
func ApproveTPM2(cfg config.TPM2, blob []byte, values map[int][]byte) (out []byte, err error) {
	s := &tpm2Sealer{cfg: cfg}
	err = s.withObject(blob, func(t *tpm2.TPMContext, o *tpm.SealedObject, pin []byte) error {
		if values == nil {
			if values, err = tpm.ReadPCRs(t, o.PCRs); err != nil {
				return err
			}
		}
		if err := o.Approve(t, pin, values); err != nil {
			return classifyTPM(err)
		}
		out, err = envelope(o)
		return err
	})
	return out, err
}

// CommitTPM2 advances the TPM's rollback counter to what blob was approved
// for, if blob is in TPM NV storage (nv tells); a blob in a sealed object has
// no counter. Call it once blob is safely written: every older blob is then
// refused as rolled back.
func CommitTPM2(cfg config.TPM2, blob []byte) (nv bool, err error) {
	s := &tpm2Sealer{cfg: cfg}
	err = s.withObject(blob, func(t *tpm2.TPMContext, o *tpm.SealedObject, _ []byte) error {
		nv = o.NV != nil
		return classifyTPM(o.Commit(t))
	})
	return nv, err
}

// ResealTPM2 seals secret again as the config says (recovery), next to old,
// the blob it replaces: with storage nv the new index goes in the slot old does
// not name, and old's index stays until ReleaseTPM2, once the new blob is
// written. old may be nil or unreadable.
func ResealTPM2(cfg config.TPM2, secret, old []byte) ([]byte, error) {
	s := &tpm2Sealer{cfg: cfg}
	var prev *tpm.NVStorage
	if o := nvObject(old); o != nil {
		prev = o.NV
	}
	return s.seal(secret, prev)
}

// ReleaseTPM2 undefines the NV index of old (storage nv), replaced by a newer
// blob that is now written. Anything else (a blob in a sealed object, an
// unreadable one, an index that is no longer old's) is left alone.
func ReleaseTPM2(cfg config.TPM2, old []byte) error {
	o := nvObject(old)
	if o == nil {
		return nil
	}
	t, err := (&tpm2Sealer{cfg: cfg}).open()
	if err != nil {
		return err
	}
	defer t.Close()
	return o.Release(t)
}

// nvObject returns the sealed object of blob if it is one in TPM NV storage.
func nvObject(blob []byte) *tpm.SealedObject {
	e, err := parseFor(MethodTPM2, blob)
	if err != nil {
		return nil
	}
	o, err := tpm.UnmarshalSealedObject(e.TPM2)
	if err != nil || o.NV == nil {
		return nil
	}
	return o
}

// classifyTPM makes a storage root key or an NV index that is not the sealing
// one a wrong-device error; the other tpm errors are already this package's
// sentinels.
func classifyTPM(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, tpm.ErrSRKChanged) || errors.Is(err, tpm.ErrNVChanged) {
		return fmt.Errorf("%w: %w", ErrWrongDevice, err)
	}
	return err
}
