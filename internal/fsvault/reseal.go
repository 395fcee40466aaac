package fsvault

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"os"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fscrypt"
	"github.com/edgeseal/edgeseal/internal/recovery"
)

// ErrNoRecoveryCopy: the vault was made without a recovery key set.
var ErrNoRecoveryCopy = errors.New("the vault has no recovery copy of its key (seal.recovery_key was not set when it was made or last rewrapped)")

// ReplaceTPM replaces the TPM protector of every vault on the device (names:
// only those) by fn's result, rewriting each metadata file atomically: `edgeseal
// tpm reseal` approves new PCR values with it. The key version stays: the key
// is wrapped by the same sealed object.
func (m *Manager) ReplaceTPM(names []string, fn func(blob []byte) ([]byte, error)) ([]Change, error) {
	return m.each(names, func(meta *Meta) (string, error) {
		p := meta.SourceProtector()
		// Every blob the TPM sealed: the key (tpm2), the TPM's share
		// (tpm+controller), the offline copy of the controller's key.
		blobs := []*[]byte{&p.Share, &p.Cache}
		if p.Type == ProtectorTPM2 {
			blobs = []*[]byte{&p.Blob}
		}
		n := 0
		for _, b := range blobs {
			if len(*b) == 0 {
				continue
			}
			out, err := fn(*b)
			if err != nil {
				return "", fmt.Errorf("vault %s: %w", meta.Name, err)
			}
			*b, n = out, n+1
		}
		if n == 0 {
			return "nothing sealed by the TPM (key source controller, no offline copy)", nil
		}
		meta.Changed = m.now()
		if err := m.writeMeta(meta); err != nil {
			return "", err
		}
		return "TPM protector approved for new PCR values", nil
	})
}

// Recover seals each vault's key to the TPM again from its recovery copy,
// opened with the operator's private key: after PCR values changed that nobody
// approved in time. The key, and so every file, is unchanged.
func (m *Manager) Recover(ctx context.Context, names []string, priv *ecdh.PrivateKey) ([]Change, error) {
	return m.each(names, func(meta *Meta) (string, error) {
		p := meta.Protector(ProtectorRecovery)
		if p == nil {
			return "", fmt.Errorf("cannot recover vault %s: %w", meta.Name, ErrNoRecoveryCopy)
		}
		if meta.Source() != config.KeySourceTPM {
			return "", fmt.Errorf("cannot recover vault %s with the recovery key: its key source is %s, which needs the controller's key too; "+
				"the controller's escrow recovers it (edgeseal vault apply, after `edgeseal-controller device approve`)", meta.Name, meta.Source())
		}
		key, err := recovery.Open(priv, p.Blob)
		if err != nil {
			return "", fmt.Errorf("cannot recover vault %s: %w", meta.Name, err)
		}
		defer clear(key)
		if id, err := fscrypt.Identify(key); err != nil || id != meta.Identifier() {
			return "", fmt.Errorf("cannot recover vault %s: %w: its recovery copy is not the vault's key", meta.Name, ErrCorruptMeta)
		}
		blob, err := m.TPM.Seal(ctx, key)
		if err != nil {
			return "", fmt.Errorf("cannot seal the key of vault %s to the TPM: %w", meta.Name, err)
		}
		meta.Protector(ProtectorTPM2).Blob = blob
		meta.Changed = m.now()
		if err := m.writeMeta(meta); err != nil {
			return "", err
		}
		return "key sealed to the TPM again from its recovery copy", nil
	})
}

// each runs fn on the metadata of every vault on the device (or of names),
// under the lock, and writes the status file.
func (m *Manager) each(names []string, fn func(*Meta) (string, error)) ([]Change, error) {
	release, err := m.exclusive()
	if err != nil {
		return nil, err
	}
	defer release()
	if len(names) == 0 {
		if names, err = m.metaNames(); err != nil {
			return nil, err
		}
	}
	var changes []Change
	var errs []error
	for _, name := range names {
		meta, err := m.loadMeta(name)
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("vault %s: %w on this device", name, ErrUnknownVault)
		}
		if err == nil {
			var act string
			if act, err = fn(meta); err == nil {
				changes = append(changes, Change{Vault: name, Action: act})
			}
		}
		errs = append(errs, err)
	}
	prev, _ := m.readReport()
	if list, err := m.statuses(nil, prev); err == nil {
		m.writeReport(list)
	}
	return changes, errors.Join(errs...)
}
