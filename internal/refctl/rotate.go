package refctl

import (
	"crypto/rand"
	"fmt"
	"time"
)

// Key rotation. A vault's controller key has versions; the device wraps its
// vault to one and reports which (acks it). The controller makes a new
// version only once the device acked the newest one, so it is never two
// ahead; and once the device acks the newest, every older version is
// dropped: after a rotation completes the old key exists nowhere, so a copy
// of an old wrapped vault key cannot be opened with keys the controller
// still gives out.

// newVault is a vault the controller learns of: key version 1.
func newVault(name string, attestation bool, now time.Time) (*vault, error) {
	k, err := newVaultKey(1, now)
	if err != nil {
		return nil, err
	}
	return &vault{Name: name, Attestation: attestation, Keys: []*vaultKey{k}}, nil
}

func newVaultKey(version int, now time.Time) (*vaultKey, error) {
	b := make([]byte, controllerKeySize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("cannot make a vault key: %w", err)
	}
	return &vaultKey{Version: version, Key: b, Created: now}, nil
}

// rotationDue says whether the vault gets a new key version now: an operator
// asked for one, or the newest is older than every (0: never by age); and
// in either case only once the device acked the newest.
func rotationDue(v *vault, now time.Time, every time.Duration) bool {
	cur := v.current()
	if v.Acked != cur.Version {
		return false
	}
	return v.RotatePending || every > 0 && !now.Before(cur.Created.Add(every))
}

// rotate adds the next key version.
func (v *vault) rotate(now time.Time) error {
	k, err := newVaultKey(v.current().Version+1, now)
	if err != nil {
		return err
	}
	v.Keys = append(v.Keys, k)
	v.RotatePending = false
	return nil
}

// releaseKeys are the keys given for a request: the newest, and the one of
// the version the device says its vault is wrapped to (the newest again if
// that one is no longer kept, or none yet).
func releaseKeys(v *vault, deviceVersion int) (current, previous *vaultKey) {
	current = v.current()
	if previous = v.key(deviceVersion); previous == nil {
		previous = current
	}
	return current, previous
}

// ack records that the device's vault is wrapped to version n. A version not
// kept, or older than one acked already, is ignored (false). Acking the
// newest drops every older version.
func (v *vault) ack(n int) bool {
	if v.key(n) == nil || n < v.Acked {
		return false
	}
	v.Acked = n
	if n == v.current().Version {
		for _, k := range v.Keys[:len(v.Keys)-1] {
			clear(k.Key)
		}
		v.Keys = v.Keys[len(v.Keys)-1:]
	}
	return true
}
