package fsvault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fscrypt"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// Report is the status file: every vault's state after the last apply, lock,
// unlock or delete.
type Report struct {
	Updated time.Time `json:"updated"`
	Vaults  []Status  `json:"vaults"`
}

// maxReport bounds the status file read back.
const maxReport = 1 << 20

// Apply reconciles the device with the config: it creates the vaults that are
// new, unlocks, locks or rewraps each per its policy, and locks the vaults no
// longer in config (orphaned). A vault it cannot bring to its policy is
// reported with the reason and the others go on; the error then wraps
// ErrNotAsConfigured. The status file is written in any case.
func (m *Manager) Apply(ctx context.Context) ([]Change, []Status, error) {
	release, err := m.exclusive()
	if err != nil {
		return nil, nil, err
	}
	defer release()
	var changes []Change
	failed := map[string]error{}
	want := m.Config.FileVaults.Effective()
	for _, v := range want {
		acts, err := m.reconcile(ctx, v, v.Policy)
		for _, a := range acts {
			changes = append(changes, Change{Vault: v.Name, Action: a})
		}
		if err != nil {
			failed[v.Name] = err
		}
	}
	have, err := m.metaNames()
	if err != nil {
		return changes, nil, err
	}
	for _, name := range have {
		if slices.ContainsFunc(want, func(v config.FileVault) bool { return v.Name == name }) {
			continue
		}
		meta, err := m.loadMeta(name)
		if err != nil {
			failed[name] = err
			continue
		}
		if st := observe(meta).State; st == StateUnlocked || st == StateLockPending {
			err := lock(meta)
			if err == nil || errors.Is(err, ErrBusy) {
				changes = append(changes, Change{Vault: name, Action: "locked (orphaned: no longer in config)"})
			}
			if err != nil {
				failed[name] = err
			}
		}
	}
	prev, _ := m.readReport()
	list, err := m.statuses(failed, prev)
	if err != nil {
		return changes, nil, err
	}
	if err := m.writeReport(list); err != nil {
		return changes, list, err
	}
	return changes, list, summarise(failed)
}

// summarise makes one error of the vaults that failed.
func summarise(failed map[string]error) error {
	if len(failed) == 0 {
		return nil
	}
	var errs []error
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range failed {
			if !yield(k) {
				return
			}
		}
	}) {
		errs = append(errs, failed[name])
	}
	return fmt.Errorf("%w: %w", ErrNotAsConfigured, errors.Join(errs...))
}

// reconcile brings the vault v to policy and says what it did.
func (m *Manager) reconcile(ctx context.Context, v config.FileVault, policy string) (acts []string, err error) {
	if !slices.Contains([]string{config.VaultUnlock, config.VaultLock, config.VaultChangeKey}, policy) {
		return nil, fmt.Errorf("vault %s: unknown policy %q: use unlock, lock or change-key", v.Name, policy)
	}
	meta, err := m.loadMeta(v.Name)
	if errors.Is(err, os.ErrNotExist) {
		var reported string
		if meta, reported, err = m.create(ctx, v); err != nil {
			if meta != nil {
				return []string{"created (key wrapped; the directory is not finished)"}, err
			}
			return nil, err
		}
		acts = append(acts, fmt.Sprintf("created (uuid %s, key version %d)", meta.UUID, meta.KeyVersion()))
		if reported != "" {
			acts = append(acts, reported)
		}
	} else if err != nil {
		return nil, err
	}
	if v.UUID != "" && v.UUID != meta.UUID {
		return acts, fmt.Errorf("vault %s: the config names uuid %s, but the vault on this device was created as %s: it is another vault (rename one, or delete the old with --purge)", v.Name, v.UUID, meta.UUID)
	}
	if v.Path != meta.Path {
		return acts, fmt.Errorf("vault %s: the config puts it at %s, but it is at %s: a vault cannot move (set path back, or delete it with --purge and let apply make a new one)", v.Name, v.Path, meta.Path)
	}
	if finished, err := m.repair(ctx, meta, v); err != nil {
		return acts, err
	} else if finished {
		acts = append(acts, "creation finished (it was interrupted)")
	}
	if policy == config.VaultChangeKey {
		switch have := meta.KeyVersion(); {
		case v.KeyVersion < have:
			return acts, fmt.Errorf("vault %s: key_version %d is older than the vault's key version %d: set key_version above %d to change the key", v.Name, v.KeyVersion, have, have)
		case v.KeyVersion > have:
			if err := m.rewrap(ctx, meta, v); err != nil {
				return acts, err
			}
			acts = append(acts, fmt.Sprintf("key changed (key version %d to %d; no file re-encrypted)", have, v.KeyVersion))
		}
	}
	st := observe(meta)
	if st.State == StateError {
		return acts, fmt.Errorf("vault %s: %s", v.Name, st.Reason)
	}
	switch policy {
	case config.VaultUnlock, config.VaultChangeKey:
		if st.State != StateUnlocked || needsRewrap(meta, v) != "" {
			did, err := m.unlock(ctx, meta, v, st.State != StateUnlocked)
			acts = append(acts, did...)
			if err != nil {
				return acts, err
			}
		}
	case config.VaultLock:
		if st.State != StateLocked {
			err := lock(meta)
			if err == nil {
				acts = append(acts, "locked")
			} else if errors.Is(err, ErrBusy) && st.State == StateUnlocked {
				acts = append(acts, "lock pending: files busy")
			}
			return acts, err
		}
	}
	return acts, nil
}

// repair finishes a creation a crash interrupted: the metadata is written but
// the directory is still empty and not encrypted.
func (m *Manager) repair(ctx context.Context, meta *Meta, v config.FileVault) (finished bool, err error) {
	_, encrypted, err := fscrypt.Policy(meta.Path)
	if err != nil || encrypted {
		return false, nil // observe reports what is wrong
	}
	if err := checkNewPath(meta.Path); err != nil {
		return false, fmt.Errorf("vault %s: cannot finish its creation: %w", meta.Name, err)
	}
	x, o, err := m.unwrap(ctx, meta, v)
	if err != nil {
		return false, fmt.Errorf("cannot finish the creation of vault %s: %w", meta.Name, err)
	}
	defer x.close()
	defer o.wipe()
	return true, m.finishCreate(meta, o.key)
}

// Unlock makes sure the vault name exists and is unlocked (creating it if the
// config has it and it is new): what edgeseal-fsvault@NAME.service starts
// with. A vault whose policy is lock is refused.
func (m *Manager) Unlock(ctx context.Context, name string) ([]Change, error) {
	v, ok := m.vaultByName(name)
	if !ok {
		return nil, fmt.Errorf("cannot unlock vault %s: %w in the config (edgeseal vault list shows the vaults)", name, ErrUnknownVault)
	}
	if v.Policy == config.VaultLock {
		return nil, fmt.Errorf("cannot unlock vault %s: its policy is lock in the config", name)
	}
	return m.one(ctx, name, func() ([]string, error) { return m.reconcile(ctx, v, v.Policy) })
}

// Lock locks the vault name now, whatever its policy (the next apply or start
// of its unit unlocks it again if the policy is unlock). With files open it
// returns ErrBusy; with wait > 0 it first waits that long for them to close.
func (m *Manager) Lock(ctx context.Context, name string, wait time.Duration) ([]Change, error) {
	return m.one(ctx, name, func() ([]string, error) {
		meta, err := m.loadMeta(name)
		if errors.Is(err, os.ErrNotExist) {
			if _, ok := m.vaultByName(name); ok {
				return nil, nil // not created yet: nothing to lock
			}
			return nil, fmt.Errorf("cannot lock vault %s: %w", name, ErrUnknownVault)
		} else if err != nil {
			return nil, err
		}
		if observe(meta).State == StateLocked {
			return nil, nil
		}
		// Wait for open files to close; the holders are looked for once, at
		// the end (a scan of /proc every round would flood an audit log).
		deadline := time.Now().Add(wait)
		for {
			busy, err := removeKey(meta)
			if err != nil {
				return nil, err
			}
			if !busy {
				return []string{"locked"}, nil
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return []string{"lock pending: files busy"}, busyError(meta)
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
}

// LockAll locks every vault on the device, in the config or orphaned, as Lock
// does each: what edgeseal-fsvault.service does when it stops (at shutdown).
// The vaults are waited for together, up to wait in all.
func (m *Manager) LockAll(ctx context.Context, wait time.Duration) ([]Change, error) {
	names, err := m.metaNames()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	var changes []Change
	var errs []error
	for _, name := range names {
		c, err := m.Lock(ctx, name, max(time.Until(deadline), 0))
		changes = append(changes, c...)
		errs = append(errs, err)
	}
	return changes, errors.Join(errs...)
}

// one runs fn on the vault name under the lock, and writes the status file.
func (m *Manager) one(ctx context.Context, name string, fn func() ([]string, error)) ([]Change, error) {
	release, err := m.exclusive()
	if err != nil {
		return nil, err
	}
	defer release()
	acts, err := fn()
	var changes []Change
	for _, a := range acts {
		changes = append(changes, Change{Vault: name, Action: a})
	}
	failed := map[string]error{}
	if err != nil && !errors.Is(err, ErrBusy) {
		failed[name] = err
	}
	prev, _ := m.readReport()
	if prev != nil {
		for _, s := range prev.Vaults {
			if err := lastError(s); s.Name != name && err != nil {
				failed[s.Name] = err
			}
		}
	}
	if list, lerr := m.statuses(failed, prev); lerr == nil {
		if werr := m.writeReport(list); werr != nil && err == nil {
			err = werr
		}
	}
	return changes, err
}

// Delete crypto-erases the vault name: its files are removed (they are
// ciphertext, locked first) and its wrapped key is overwritten and removed, so
// nothing on the device can decrypt what is left on the disk. It refuses a
// vault still in config (apply would make it again) and one with files open.
func (m *Manager) Delete(ctx context.Context, name string) ([]Change, error) {
	if _, ok := m.vaultByName(name); ok {
		return nil, fmt.Errorf("cannot delete vault %s: it is in the config: remove it from file_vaults (or set file_vaults.defaults: false for a default vault), run edgeseal vault apply, then delete it", name)
	}
	return m.one(ctx, name, func() ([]string, error) {
		meta, err := m.loadMeta(name)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cannot delete vault %s: %w on this device", name, ErrUnknownVault)
		} else if err != nil {
			return nil, err
		}
		if err := lock(meta); err != nil {
			return nil, fmt.Errorf("cannot delete vault %s: %w: stop what uses it first", name, err)
		}
		// The files first: a crash after this leaves the metadata, and the
		// delete can run again; the other order would leave a directory
		// nothing names.
		if err := os.RemoveAll(meta.Path); err != nil {
			return nil, fmt.Errorf("cannot delete the files of vault %s: %w", name, err)
		}
		if err := fsutil.SyncDir(filepath.Dir(meta.Path)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if err := erase(m.metaPath(name)); err != nil {
			return []string{"files removed"}, err
		}
		return []string{"purged (files removed, key material erased)"}, nil
	})
}

// erase overwrites a file with zeros, syncs it, and removes it durably.
func erase(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cannot erase %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.WriteAt(make([]byte, fi.Size()), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("cannot erase %s: %w", path, err)
	}
	return fsutil.RemoveDurable(path)
}

// List returns every vault's state, live from the kernel: those in the config
// (created or not) and those on the device that the config no longer names.
// A vault that the last apply could not bring to its policy, and still is not,
// shows that apply's reason.
func (m *Manager) List() ([]Status, error) {
	failed := map[string]error{}
	prev, _ := m.readReport()
	if prev != nil {
		for _, s := range prev.Vaults {
			if err := lastError(s); err != nil {
				failed[s.Name] = err
			}
		}
	}
	return m.statuses(failed, prev)
}

// statuses observes every vault; failed holds errors of the last action,
// shown for a vault that is not in its policy's state; prev is the status
// file as it was (nil if none), for how the unlocked vaults were unlocked.
func (m *Manager) statuses(failed map[string]error, prev *Report) ([]Status, error) {
	var out []Status
	want := m.Config.FileVaults.Effective()
	for _, v := range want {
		meta, err := m.loadMeta(v.Name)
		var s Status
		switch {
		case errors.Is(err, os.ErrNotExist):
			s = Status{Name: v.Name, UUID: v.UUID, Path: v.Path, State: StateNotCreated, KeySource: v.KeySource}
		case err != nil:
			s = Status{Name: v.Name, UUID: v.UUID, Path: v.Path, KeySource: v.KeySource}.fail(err)
		default:
			s = observe(meta)
		}
		s.Policy = v.Policy
		// A pending lock shows as such, with its holders, not as the error it
		// was reported as.
		if err := failed[v.Name]; err != nil && s.State != StateError && s.State != StateLockPending && !inPolicy(s, v) {
			s = s.fail(err)
		}
		out = append(out, s)
	}
	have, err := m.metaNames()
	if err != nil {
		return nil, err
	}
	for _, name := range have {
		if slices.ContainsFunc(want, func(v config.FileVault) bool { return v.Name == name }) {
			continue
		}
		meta, err := m.loadMeta(name)
		if err != nil {
			out = append(out, Status{Name: name, Orphaned: true}.fail(err))
			continue
		}
		s := observe(meta)
		s.Orphaned = true
		if s.State == StateLocked {
			s.State = StateOrphaned
		} else if err := failed[name]; err != nil && s.State != StateError && s.State != StateLockPending {
			s = s.fail(err)
		}
		out = append(out, s)
	}
	m.carry(out, prev)
	return out, nil
}

// carry fills in how each unlocked vault was unlocked: by this Manager, or
// as the status file says (an earlier command, the same boot: a vault still
// unlocked was not unlocked again since).
func (m *Manager) carry(list []Status, prev *Report) {
	for i := range list {
		s := &list[i]
		if s.State != StateUnlocked {
			continue
		}
		if u, ok := m.unlocks[s.Name]; ok {
			s.UnlockedBy, s.Offline, s.ChangedPCRs = u.UnlockedBy, u.Offline, u.ChangedPCRs
			continue
		}
		if prev == nil {
			continue
		}
		for _, p := range prev.Vaults {
			if p.Name == s.Name && p.UUID == s.UUID && p.State == StateUnlocked {
				s.UnlockedBy, s.Offline, s.ChangedPCRs = p.UnlockedBy, p.Offline, p.ChangedPCRs
			}
		}
	}
}

// inPolicy is true if s is the state v's policy asks for.
func inPolicy(s Status, v config.FileVault) bool {
	if v.Policy == config.VaultLock {
		return s.State == StateLocked
	}
	return s.State == StateUnlocked && (v.Policy != config.VaultChangeKey || s.KeyVersion == v.KeyVersion)
}

// writeReport writes the status file (0644: it holds no secret).
func (m *Manager) writeReport(list []Status) error {
	if err := os.MkdirAll(filepath.Dir(m.Paths.VaultStatus), 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", filepath.Dir(m.Paths.VaultStatus), err)
	}
	data, err := json.MarshalIndent(Report{Updated: m.now(), Vaults: list}, "", "  ")
	if err != nil {
		return fmt.Errorf("internal error: cannot encode the vault status: %w", err)
	}
	return fsutil.WriteFileAtomic(m.Paths.VaultStatus, append(data, '\n'), 0o644, fsutil.Self)
}

// LastReport is the status file: the vaults' states after the last apply,
// lock, unlock, delete or recover (for those who may not read the metadata).
func (m *Manager) LastReport() (*Report, error) { return m.readReport() }

// readReport reads the status file back (nil if there is none).
func (m *Manager) readReport() (*Report, error) {
	data, err := fsutil.ReadBounded(m.Paths.VaultStatus, maxReport)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := strictjson.Decode(data, maxReport, &r); err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", m.Paths.VaultStatus, err)
	}
	return &r, nil
}
