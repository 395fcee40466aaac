// Package fsvault keeps edgeseal's file vaults: named directories encrypted by
// the kernel (fscrypt v2 policies), each with a random key that never changes and
// is stored only wrapped by protectors (the TPM, and the operator's recovery key
// when one is set). It reconciles the device with the config (create, unlock,
// lock, rewrap), reports each vault's state, and crypto-erases a vault only when
// asked by name.
//
// Why a package of its own: a vault's key lives as long as its data, far longer
// than a boot, so its metadata is written before anything depends on it and is
// never rewritten in place; and a lock the kernel could not finish (files still
// open) is reported as pending, never as locked.
package fsvault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/controller"
	"github.com/edgeseal/edgeseal/internal/fscrypt"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/recovery"
)

// Wrapper wraps and unwraps a vault key for one key source (the seal package's
// tpm2 Sealer for key source tpm).
type Wrapper interface {
	Seal(ctx context.Context, secret []byte) ([]byte, error)
	Unseal(ctx context.Context, blob []byte) ([]byte, error)
}

// States of a vault, as `edgeseal vault list` and the status file name them.
const (
	StateUnlocked    = "unlocked"
	StateLocked      = "locked"
	StateLockPending = "lock-pending"         // the key is removed, but open files keep it in use
	StateOrphaned    = "orphaned"             // no longer in config: locked, kept until deleted with --purge
	StateNotCreated  = "not-created"          // in config, not yet made (before the first apply)
	StateAwaiting    = "awaiting-attestation" // locked: the controller withholds the keys until the device passes its challenge
	StateError       = "error"
)

// Errors a caller acts on.
var (
	// ErrUnknownVault: no vault of that name in config or on the device.
	ErrUnknownVault = errors.New("no such vault")
	// ErrBusy: files of the vault are open; the lock is pending until they close.
	ErrBusy = errors.New("lock pending: files busy")
	// ErrNotAsConfigured: apply could not bring every vault to its policy.
	ErrNotAsConfigured = errors.New("some vaults are not as configured")
)

// Manager acts on the vaults of one device.
type Manager struct {
	Paths  paths.Paths
	Config *config.Config
	// TPM wraps vault keys for key source tpm.
	TPM Wrapper
	// Recovery, if set, also gets each new vault key (seal.recovery_key).
	Recovery *recovery.Recipient
	// Controller, if set (the device is enrolled), releases the keys of the
	// vaults with a controller key source, keeps every vault key in escrow,
	// and returns it after a good quote when the TPM refuses (PCRs changed).
	Controller KeyService
	// Now is the clock (time.Now if nil).
	Now func() time.Time

	// unlocks is how each vault was unlocked by this Manager.
	unlocks map[string]Status
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now().UTC().Truncate(time.Second)
	}
	return time.Now().UTC().Truncate(time.Second)
}

// Change is one thing apply, lock, unlock or delete did.
type Change struct {
	Vault  string `json:"vault"`
	Action string `json:"action"`
}

// Status is what `edgeseal vault list` shows of a vault.
type Status struct {
	Name       string    `json:"name"`
	UUID       string    `json:"uuid,omitempty"`
	Path       string    `json:"path"`
	State      string    `json:"state"`
	Reason     string    `json:"reason,omitempty"`
	Holders    []string  `json:"holders,omitempty"`
	Policy     string    `json:"policy,omitempty"`
	Orphaned   bool      `json:"orphaned,omitempty"`
	KeySource  string    `json:"key_source,omitempty"`
	KeyVersion int       `json:"key_version,omitempty"`
	LastChange time.Time `json:"last_change,omitzero"`
	// UnlockedBy is how the vault was unlocked this boot: tpm,
	// controller-key or escrow-recovery (an unlocked vault only).
	UnlockedBy string `json:"unlocked_by,omitempty"`
	// Offline: unlocked with the offline copy of the controller's key (the
	// controller was unreachable).
	Offline bool `json:"offline,omitempty"`
	// ChangedPCRs are the PCRs the TPM found changed when it refused to
	// unseal (escrow-recovery).
	ChangedPCRs []int `json:"changed_pcrs,omitempty"`
}

// Describe is the state as a person reads it.
func (s Status) Describe() string {
	d := s.State
	switch s.State {
	case StateLockPending:
		d = "lock pending: files busy"
		if len(s.Holders) > 0 {
			d += " (" + strings.Join(s.Holders, ", ") + ")"
		}
		if s.Orphaned {
			d = "orphaned, " + d
		}
	case StateError:
		d = "error: " + s.Reason
	case StateAwaiting:
		d = "awaiting attestation"
	case StateUnlocked:
		if s.UnlockedBy != "" {
			d += " (" + how(s.UnlockedBy, s.Offline, s.ChangedPCRs) + ")"
		}
	case StateOrphaned:
		d = "orphaned (locked; delete with --purge to erase)"
	}
	return d
}

// metaPath is where the metadata of the vault name lives.
func (m *Manager) metaPath(name string) string {
	return filepath.Join(m.Paths.VaultMeta, name+".json")
}

// loadMeta reads the metadata of name; an absent file is os.ErrNotExist.
func (m *Manager) loadMeta(name string) (*Meta, error) {
	f, err := os.Open(m.metaPath(name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxMeta+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", f.Name(), err)
	}
	meta, err := ParseMeta(data)
	if err != nil {
		return nil, fmt.Errorf("cannot use %s (restore it from a backup): %w", f.Name(), err)
	}
	if meta.Name != name {
		return nil, fmt.Errorf("cannot use %s: %w: it names vault %q", f.Name(), ErrCorruptMeta, meta.Name)
	}
	return meta, nil
}

func (m *Manager) writeMeta(meta *Meta) error {
	if err := os.MkdirAll(m.Paths.VaultMeta, 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %w", m.Paths.VaultMeta, err)
	}
	return fsutil.WriteFileAtomic(m.metaPath(meta.Name), meta.Marshal(), 0o600, fsutil.Self)
}

// metaNames lists the vaults that have metadata on the device.
func (m *Manager) metaNames() ([]string, error) {
	ents, err := os.ReadDir(m.Paths.VaultMeta)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", m.Paths.VaultMeta, err)
	}
	var names []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && e.Type().IsRegular() && nameRE.MatchString(name) {
			names = append(names, name)
		}
	}
	return names, nil
}

// exclusive holds the vaults' lock file (in tmpfs, beside the status file)
// until the returned func runs: two applies (the boot service and an
// operator) never interleave.
func (m *Manager) exclusive() (func(), error) {
	dir := filepath.Dir(m.Paths.VaultStatus)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", dir, err)
	}
	name := filepath.Join(dir, ".lock")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot lock %s: %w", name, err)
	}
	return func() { f.Close() }, nil
}

// keyring is a directory of the vault's filesystem outside the vault, for the
// key ioctls: an fd of the vault directory itself would be a file using the
// key, and keep a lock pending. (A filesystem's root cannot be encrypted, so
// the parent is on the same filesystem.)
func keyring(meta *Meta) string { return filepath.Dir(meta.Path) }

// observe reads the state of a vault that has metadata from the kernel.
func observe(meta *Meta) Status {
	s := Status{Name: meta.Name, UUID: meta.UUID, Path: meta.Path, KeySource: meta.Source(),
		KeyVersion: meta.KeyVersion(), LastChange: meta.Changed}
	id, encrypted, err := fscrypt.Policy(meta.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s.fail(fmt.Errorf("the directory %s is gone (restore it, or delete the vault with --purge)", meta.Path))
	case err != nil:
		return s.fail(err)
	case !encrypted:
		return s.fail(fmt.Errorf("%s is not encrypted (creation did not finish: run edgeseal vault apply)", meta.Path))
	case id != meta.Identifier():
		return s.fail(fmt.Errorf("%s is encrypted with key %s, not the vault's key %s", meta.Path, id, meta.KeyIdentifier))
	}
	st, err := fscrypt.Status(keyring(meta), id)
	if err != nil {
		return s.fail(err)
	}
	switch st {
	case fscrypt.Present:
		s.State = StateUnlocked
	case fscrypt.Absent:
		s.State = StateLocked
	case fscrypt.IncompletelyRemoved:
		s.State, s.Holders = StateLockPending, Holders(meta.Path)
	default:
		return s.fail(fmt.Errorf("the kernel reports key %s as %v", id, st))
	}
	return s
}

func (s Status) fail(err error) Status {
	s.State, s.Reason = StateError, err.Error()
	if errors.Is(err, ErrAwaitingAttestation) {
		s.State = StateAwaiting
	}
	return s
}

// awaitingError is an awaiting-attestation reason read back from the status
// file.
type awaitingError struct{ reason string }

func (e *awaitingError) Error() string        { return e.reason }
func (e *awaitingError) Is(target error) bool { return target == ErrAwaitingAttestation }

// lastError is the error a status from the status file reports (nil if none).
func lastError(s Status) error {
	switch s.State {
	case StateError:
		return errors.New(s.Reason)
	case StateAwaiting:
		return &awaitingError{s.Reason}
	}
	return nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// checkNewPath refuses a path a new vault cannot take: a directory that is not
// empty, a file, or a filesystem that cannot encrypt. It changes nothing.
func checkNewPath(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("cannot use %s for a new vault: %w", path, err)
	case !fi.IsDir():
		return fmt.Errorf("cannot use %s for a new vault: it is not a directory", path)
	default:
		ents, err := os.ReadDir(path)
		if err != nil {
			return fmt.Errorf("cannot use %s for a new vault: %w", path, err)
		}
		if len(ents) > 0 {
			return fmt.Errorf("cannot use %s for a new vault: it is not empty (%d entries): move its files away, or name an empty or absent directory", path, len(ents))
		}
		if _, encrypted, err := fscrypt.Policy(path); err == nil && encrypted {
			return fmt.Errorf("cannot use %s for a new vault: %w", path, fscrypt.ErrOtherPolicy)
		}
	}
	// The nearest directory that exists tells whether the filesystem encrypts.
	dir := path
	for {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if _, err := fscrypt.Status(dir, fscrypt.Identifier{}); err != nil {
		if errors.Is(err, fscrypt.ErrNotSupported) {
			return fmt.Errorf("cannot use %s for a new vault: %w", path, fscrypt.ErrNotSupported)
		}
		return fmt.Errorf("cannot use %s for a new vault: %w", path, err)
	}
	return nil
}

// create makes the vault v: a random key, wrapped; the empty directory; the
// metadata written (so a crash from here on leaves a vault apply can finish,
// never a key lost); then the key added and the policy set.
func (m *Manager) create(ctx context.Context, v config.FileVault) (meta *Meta, reported string, err error) {
	if err := checkNewPath(v.Path); err != nil {
		return nil, "", fmt.Errorf("cannot create vault %s: %w", v.Name, err)
	}
	key := make([]byte, fscrypt.KeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return nil, "", fmt.Errorf("cannot make a key for vault %s: %w", v.Name, err)
	}
	id, err := fscrypt.Identify(key)
	if err != nil {
		return nil, "", err
	}
	now := m.now()
	meta = &Meta{Format: MetaFormat, Version: MetaVersion, UUID: v.UUID, Name: v.Name, Path: v.Path,
		KeyIdentifier: id.String(), Created: now, Changed: now}
	if meta.UUID == "" {
		meta.UUID = newUUID()
	}
	x := &exchange{m: m, meta: meta, v: v}
	defer x.close()
	var ck *controller.Key
	if hasController(v.KeySource) {
		if ck, err = x.newKeys(ctx); err != nil {
			return nil, "", fmt.Errorf("cannot create vault %s: %w", v.Name, err)
		}
	}
	src, err := m.protect(ctx, meta, v.KeySource, v.KeyVersion, ck, v.Offline, key)
	if err != nil {
		return nil, "", err
	}
	if err := m.setProtectors(meta, src, key); err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(meta.Path, 0o700); err != nil {
		return nil, "", fmt.Errorf("cannot create the directory of vault %s: %w", meta.Name, err)
	}
	if err := m.writeMeta(meta); err != nil {
		return nil, "", err
	}
	if err := m.finishCreate(meta, key); err != nil {
		return meta, "", err
	}
	// The controller learns the key version the vault is wrapped with, and
	// keeps the key in escrow, from the start.
	return meta, m.report(ctx, meta, &opened{key: key}), nil
}

// finishCreate makes the empty directory encrypted with key.
func (m *Manager) finishCreate(meta *Meta, key []byte) error {
	if _, err := m.addKey(meta, key); err != nil {
		return err
	}
	if err := fscrypt.SetPolicy(meta.Path, meta.Identifier()); err != nil {
		return fmt.Errorf("cannot encrypt vault %s: %w", meta.Name, err)
	}
	return fsutil.SyncDir(filepath.Dir(meta.Path))
}

// addKey adds key for meta's directory and checks it is the vault's key.
func (m *Manager) addKey(meta *Meta, key []byte) (fscrypt.Identifier, error) {
	if len(key) != fscrypt.KeySize {
		return fscrypt.Identifier{}, fmt.Errorf("cannot unlock vault %s: %w: its key unwraps to %d bytes", meta.Name, ErrCorruptMeta, len(key))
	}
	id, err := fscrypt.AddKey(keyring(meta), key)
	if err != nil {
		return id, fmt.Errorf("cannot unlock vault %s: %w", meta.Name, err)
	}
	if id != meta.Identifier() {
		fscrypt.RemoveKey(keyring(meta), id)
		return id, fmt.Errorf("cannot unlock vault %s: %w: its key's identifier is %s, not %s", meta.Name, ErrCorruptMeta, id, meta.KeyIdentifier)
	}
	return id, nil
}

// unwrap returns the vault key from its key source protector (asking the
// controller as the source needs, recovering from escrow if the TPM refuses),
// checked against the vault's key identifier.
func (m *Manager) unwrap(ctx context.Context, meta *Meta, v config.FileVault) (*exchange, *opened, error) {
	x := &exchange{m: m, meta: meta, v: v}
	o, err := x.open(ctx)
	if err != nil {
		x.close()
		return nil, nil, err
	}
	if id, err := fscrypt.Identify(o.key); err != nil || id != meta.Identifier() {
		o.wipe()
		x.close()
		return nil, nil, fmt.Errorf("cannot unwrap the key of vault %s: %w: the unwrapped key is not the vault's", meta.Name, ErrCorruptMeta)
	}
	return x, o, nil
}

// unlock adds the vault's key to the kernel (add false: only rewraps it, for
// a vault already unlocked), rewrapping it first where the config or the
// controller asks: a new key source, a rotated controller key, a reseal
// after an escrow recovery. It says what it did.
func (m *Manager) unlock(ctx context.Context, meta *Meta, v config.FileVault, add bool) ([]string, error) {
	x, o, err := m.unwrap(ctx, meta, v)
	if err != nil {
		return nil, err
	}
	defer x.close()
	defer o.wipe()
	acts, err := m.rewrapFor(ctx, x, o)
	if err != nil {
		return acts, err
	}
	if !add {
		// Rewrapped while unlocked (a new key source): the controller
		// learns the key version, and keeps the key in escrow, now.
		if len(acts) > 0 {
			if r := m.report(ctx, meta, &opened{key: o.key}); r != "" {
				acts = append(acts, r)
			}
		}
		return acts, nil
	}
	if _, err := m.addKey(meta, o.key); err != nil {
		return acts, err
	}
	m.remember(meta.Name, o)
	act := "unlocked"
	if o.method != UnlockTPM {
		act += " (" + how(o.method, o.offline, o.changed) + ")"
	}
	acts = append(acts, act)
	if r := m.report(ctx, meta, o); r != "" {
		acts = append(acts, r)
	}
	return acts, nil
}

// rewrapFor rewrites the vault's key source protector when the config asks
// for another, when the controller rotated its key, or after an escrow
// recovery (sealed to the PCR values of now). No file is re-encrypted.
func (m *Manager) rewrapFor(ctx context.Context, x *exchange, o *opened) ([]string, error) {
	meta, v := x.meta, x.v
	why := needsRewrap(meta, v)
	old := meta.SourceProtector()
	switch {
	case why != "":
	case o.method == UnlockEscrow:
		why = "from escrow, sealed to the TPM's PCR values of now"
	case o.current != nil:
		why = fmt.Sprintf("rotated from the controller's key version %d to %d", old.KeyVersion, o.current.Version)
	default:
		return nil, nil
	}
	var ck *controller.Key
	if hasController(v.KeySource) {
		ck = o.current
		if ck == nil && hasController(meta.Source()) && o.ck != nil {
			ck = o.ck
		}
		if ck == nil {
			var err error
			if ck, err = x.newKeys(ctx); err != nil {
				return nil, fmt.Errorf("cannot rewrap vault %s (%s): %w", meta.Name, why, err)
			}
		}
	}
	version := v.KeyVersion
	if old.Type == ProtectorTPM2 {
		version = old.KeyVersion
	}
	src, err := m.protect(ctx, meta, v.KeySource, version, ck, v.Offline, o.key)
	if err != nil {
		return nil, err
	}
	next := *meta
	if err := m.setProtectors(&next, src, o.key); err != nil {
		return nil, err
	}
	next.Changed = m.now()
	if err := m.writeMeta(&next); err != nil {
		return nil, err
	}
	*meta = next
	return []string{"key rewrapped: " + why + " (no file re-encrypted)"}, nil
}

// how says how a vault was unlocked: "controller-key, offline copy",
// "escrow-recovery, PCR 16 changed".
func how(method string, offline bool, changed []int) string {
	if offline {
		method += ", offline copy"
	}
	if len(changed) > 0 {
		method += ", PCR " + joinInts(changed) + " changed"
	}
	return method
}

// remember keeps how a vault was unlocked, for its status.
func (m *Manager) remember(name string, o *opened) {
	if m.unlocks == nil {
		m.unlocks = map[string]Status{}
	}
	m.unlocks[name] = Status{UnlockedBy: o.method, Offline: o.offline, ChangedPCRs: o.changed}
}

// lock removes the vault's key. Busy is ErrBusy with the holders named: the
// key is gone from the kernel's keyring, but open files keep their contents
// readable until they close and a lock runs again.
func lock(meta *Meta) error {
	busy, err := removeKey(meta)
	if err != nil {
		return err
	}
	if busy {
		return busyError(meta)
	}
	return nil
}

// removeKey removes the vault's key; busy is true while open files keep it.
func removeKey(meta *Meta) (busy bool, err error) {
	for range 2 {
		// The first removal evicts what it can; a file closed since is let go
		// by the second.
		busy, err = fscrypt.RemoveKey(keyring(meta), meta.Identifier())
		if errors.Is(err, fscrypt.ErrKeyAbsent) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("cannot lock vault %s: %w", meta.Name, err)
		}
		if !busy {
			return false, nil
		}
	}
	return true, nil
}

// busyError is ErrBusy naming the processes that hold the vault.
func busyError(meta *Meta) error {
	if h := Holders(meta.Path); len(h) > 0 {
		return fmt.Errorf("vault %s: %w (%s)", meta.Name, ErrBusy, strings.Join(h, ", "))
	}
	return fmt.Errorf("vault %s: %w", meta.Name, ErrBusy)
}

// rewrap wraps the vault key anew as key version version: a new sealed object
// (and a new recovery copy); no file is touched, the key is the same.
func (m *Manager) rewrap(ctx context.Context, meta *Meta, v config.FileVault) error {
	x, o, err := m.unwrap(ctx, meta, v)
	if err != nil {
		return err
	}
	defer x.close()
	defer o.wipe()
	if meta.Source() != config.KeySourceTPM || v.KeySource != config.KeySourceTPM {
		return fmt.Errorf("cannot change the key of vault %s: change-key is for key source tpm; a controller rotates its own keys", meta.Name)
	}
	src, err := m.protect(ctx, meta, config.KeySourceTPM, v.KeyVersion, nil, false, o.key)
	if err != nil {
		return err
	}
	next := *meta
	next.Protectors = nil // a new recovery copy too
	if err := m.setProtectors(&next, src, o.key); err != nil {
		return err
	}
	next.Changed = m.now()
	if err := m.writeMeta(&next); err != nil {
		return err
	}
	*meta = next
	return nil
}

// vaultByName returns the effective config of the vault name.
func (m *Manager) vaultByName(name string) (config.FileVault, bool) {
	vaults := m.Config.FileVaults.Effective()
	i := slices.IndexFunc(vaults, func(v config.FileVault) bool { return v.Name == name })
	if i < 0 {
		return config.FileVault{}, false
	}
	return vaults[i], true
}
