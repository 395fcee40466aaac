//go:build integration

package fsvault

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/canonical/go-tpm2"
	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fscrypt"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/recovery"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// A device for these tests: its disk (an ext4 with encryption, holding both
// the vaults and edgeseal's state, as a device's root filesystem would) and
// its TPM.
type bed struct {
	t   testing.TB
	fs  *testbed.EncryptFS
	tpm *testbed.SWTPM
	cfg *config.Config
	// ctl, if set, is the device's controller (controller_integration_test.go).
	ctl KeyService
}

// marker is the plaintext an app writes: it must never be on the disk.
const marker = "EDGESEAL-PLAINTEXT-MARKER-"

func newBed(t testing.TB, edit func(*config.Config)) *bed {
	b := &bed{t: t, fs: testbed.NewEncryptFS(t, "64M"), tpm: testbed.StartSWTPM(t), cfg: config.Default()}
	b.cfg.Seal.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", b.tpm.Port)
	b.cfg.FileVaults.Dir = filepath.Join(b.fs.Mount, "vaults")
	if edit != nil {
		edit(b.cfg)
	}
	t.Cleanup(func() {
		// Keys go with the unmount; a vault left unlocked by a failed test
		// must not keep the unmount busy.
		if m := b.manager(); m != nil {
			names, _ := m.metaNames()
			for _, n := range names {
				if meta, err := m.loadMeta(n); err == nil {
					lock(meta)
				}
			}
		}
	})
	return b
}

func (b *bed) manager() *Manager {
	return &Manager{Paths: paths.New(b.fs.Mount), Config: b.cfg, TPM: seal.NewTPM2(b.cfg.Seal.TPM2), Controller: b.ctl}
}

func (b *bed) apply() []Change {
	b.t.Helper()
	changes, _, err := b.manager().Apply(context.Background())
	if err != nil {
		b.t.Fatalf("apply: %v", err)
	}
	return changes
}

func (b *bed) state(name string) Status {
	b.t.Helper()
	list, err := b.manager().List()
	if err != nil {
		b.t.Fatal(err)
	}
	for _, s := range list {
		if s.Name == name {
			return s
		}
	}
	b.t.Fatalf("vault %s is not listed: %+v", name, list)
	return Status{}
}

func (b *bed) vaultPath(name string) string { return filepath.Join(b.cfg.FileVaults.Dir, name) }

func (b *bed) write(name, file, content string) {
	b.t.Helper()
	f, err := os.Create(filepath.Join(b.vaultPath(name), file))
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		b.t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.t.Fatal(err)
	}
	f.Close()
}

// openFile applies the config, writes the marker to a file of vault name and
// returns that file open, as an app would hold it.
func (b *bed) openFile(name string) *os.File {
	b.t.Helper()
	b.apply()
	b.write(name, "open.txt", marker)
	f, err := os.Open(filepath.Join(b.vaultPath(name), "open.txt"))
	if err != nil {
		b.t.Fatal(err)
	}
	return f
}

func (b *bed) setPolicy(name, policy string, keyVersion int) {
	for i, v := range b.cfg.FileVaults.Vaults {
		if v.Name == name {
			b.cfg.FileVaults.Vaults[i].Policy, b.cfg.FileVaults.Vaults[i].KeyVersion = policy, keyVersion
			return
		}
	}
	uuid := newUUID()
	if meta, err := b.manager().loadMeta(name); err == nil {
		uuid = meta.UUID // a default vault, named in the config by its UUID
	}
	b.cfg.FileVaults.Vaults = append(b.cfg.FileVaults.Vaults, config.FileVault{Schema: 1, UUID: uuid, Name: name, Policy: policy, KeyVersion: keyVersion})
}

// powerOff ends the device's boot: the kernel forgets every vault key. An
// unmount alone does that on a device; here a container that a test of
// another package starts meanwhile copies this mount into its namespace,
// keeping the filesystem, and the keys added for it, alive past the unmount
// (and a mount of the same image again gets it back, keys and all). So the
// keys are removed first, as the kernel would at power off.
func (b *bed) powerOff() {
	b.t.Helper()
	m := b.manager()
	names, err := m.metaNames()
	if err != nil {
		b.t.Fatal(err)
	}
	for _, n := range names {
		meta, err := m.loadMeta(n)
		if err != nil {
			b.t.Fatal(err)
		}
		if busy, err := removeKey(meta); err != nil || busy {
			b.t.Fatalf("power off: the key of vault %s: busy %v, %v", n, busy, err)
		}
	}
	b.fs.Unmount(b.t)
}

// reboot powers the device off and on.
func (b *bed) reboot() {
	b.t.Helper()
	b.powerOff()
	b.fs.MountImage(b.t, b.fs.Image)
}

// image reads the whole disk image, as someone who took the disk would.
func (b *bed) image() []byte {
	b.t.Helper()
	unix.Sync()
	data, err := os.ReadFile(b.fs.Image)
	if err != nil {
		b.t.Fatal(err)
	}
	return data
}

// otherSoftware is what extendPCR measures.
const otherSoftware = "other software"

// extendPCR changes a PCR as a boot of other software would.
func (b *bed) extendPCR(pcr int) {
	b.t.Helper()
	ctx, err := tpm.Open(b.cfg.Seal.TPM2.Device)
	if err != nil {
		b.t.Fatal(err)
	}
	defer ctx.Close()
	d := sha256.Sum256([]byte(otherSoftware))
	if err := ctx.PCRExtend(ctx.PCRHandleContext(pcr), tpm2.TaggedHashList{tpm2.MakeTaggedHash(tpm2.HashAlgorithmSHA256, d[:])}, nil); err != nil {
		b.t.Fatal(err)
	}
}

// approveUpdate approves, for every vault, the PCR 16 value extendPCR(16)
// will make (as `edgeseal tpm reseal --pcr` before an update), and says
// what it did.
func (b *bed) approveUpdate() []Change {
	b.t.Helper()
	tc, err := tpm.Open(b.cfg.Seal.TPM2.Device)
	if err != nil {
		b.t.Fatal(err)
	}
	now, err := tpm.ReadPCRs(tc, []int{16})
	tc.Close()
	if err != nil {
		b.t.Fatal(err)
	}
	d := sha256.Sum256([]byte(otherSoftware))
	next := sha256.Sum256(append(now[16], d[:]...))
	got, err := b.manager().ReplaceTPM(nil, func(blob []byte) ([]byte, error) {
		return seal.ApproveTPM2(b.cfg.Seal.TPM2, blob, map[int][]byte{16: next[:]})
	})
	if err != nil {
		b.t.Fatalf("approve: %v, %v", got, err)
	}
	return got
}

// The life of a vault: created empty, written, locked (names and contents
// unreadable, opening fails), unlocked (the data is back).
func TestAVaultLocksAndUnlocksWithItsDataIntact(t *testing.T) {
	b := newBed(t, nil)
	changes := b.apply()
	if len(changes) != 2 { // config and images: created (and so unlocked)
		t.Errorf("first apply did %v; want both default vaults created and unlocked", changes)
	}
	for _, name := range config.DefaultVaultNames {
		if s := b.state(name); s.State != StateUnlocked || s.KeyVersion != 1 || s.UUID == "" {
			t.Errorf("vault %s after the first apply: %+v", name, s)
		}
	}
	b.write("images", "state.txt", marker+"images")

	b.setPolicy("images", config.VaultLock, 0)
	if got := b.apply(); !slices.Equal(got, []Change{{"images", "locked"}}) {
		t.Errorf("apply with policy lock did %v", got)
	}
	if s := b.state("images"); s.State != StateLocked {
		t.Errorf("images after lock: %+v", s)
	}
	if ns := testbed.DirNames(t, b.vaultPath("images")); len(ns) != 1 || ns[0] == "state.txt" {
		t.Errorf("a locked vault shows names %q; want one encrypted name", ns)
	}
	if _, err := os.ReadFile(filepath.Join(b.vaultPath("images"), "state.txt")); err == nil {
		t.Error("a file of a locked vault opened by its plaintext name")
	}
	enc := filepath.Join(b.vaultPath("images"), testbed.DirNames(t, b.vaultPath("images"))[0])
	if _, err := os.ReadFile(enc); !errors.Is(err, syscall.ENOKEY) {
		t.Errorf("reading a locked file: %v; want ENOKEY", err)
	}
	if s := b.state("config"); s.State != StateUnlocked {
		t.Errorf("locking images touched config: %+v", s)
	}

	b.setPolicy("images", config.VaultUnlock, 0)
	if got := b.apply(); !slices.Equal(got, []Change{{"images", "unlocked"}}) {
		t.Errorf("apply with policy unlock did %v", got)
	}
	if data, err := os.ReadFile(filepath.Join(b.vaultPath("images"), "state.txt")); err != nil || string(data) != marker+"images" {
		t.Errorf("after unlock: %q, %v", data, err)
	}
	if bytes.Contains(b.image(), []byte(marker)) {
		t.Error("the plaintext is on the disk")
	}
	// The status file says what list says.
	data, err := os.ReadFile(paths.New(b.fs.Mount).VaultStatus)
	if err != nil || !bytes.Contains(data, []byte(`"state": "unlocked"`)) {
		t.Errorf("status file: %s, %v", data, err)
	}
}

// Applying the same config twice changes nothing: no action, no file
// rewritten.
func TestApplyingTheSameConfigTwiceChangesNothing(t *testing.T) {
	b := newBed(t, func(c *config.Config) {
		c.FileVaults.Vaults = []config.FileVault{{Schema: 1, UUID: "0f9c4a3e-2b7d-4e1a-9c55-3d2f8e6a1b70", Name: "logs", Policy: "lock"}}
	})
	b.apply()
	metaDir := paths.New(b.fs.Mount).VaultMeta
	before := snapshot(t, metaDir)
	if got := b.apply(); len(got) != 0 {
		t.Errorf("the second apply did %v", got)
	}
	if after := snapshot(t, metaDir); !maps(before, after) {
		t.Errorf("the second apply rewrote metadata:\nbefore %v\nafter  %v", before, after)
	}
	if s := b.state("logs"); s.State != StateLocked || s.UUID != "0f9c4a3e-2b7d-4e1a-9c55-3d2f8e6a1b70" {
		t.Errorf("logs: %+v", s)
	}
}

// snapshot maps each file of dir to its content and modification time.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range testbed.DirNames(t, dir) {
		p := filepath.Join(dir, n)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(p)
		out[n] = fmt.Sprintf("%x@%d", sha256.Sum256(data), fi.ModTime().UnixNano())
	}
	return out
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// fiemap returns the physical byte ranges on the disk of path's data.
func fiemap(t *testing.T, path string) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const count = 32
	buf := make([]byte, 32+56*count)
	binary.LittleEndian.PutUint64(buf[8:], ^uint64(0)) // fm_length: all
	binary.LittleEndian.PutUint32(buf[16:], 1)         // FIEMAP_FLAG_SYNC
	binary.LittleEndian.PutUint32(buf[24:], count)     // fm_extent_count
	const fsIocFiemap = 0xC020660B
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		t.Fatalf("FIEMAP %s: %v", path, errno)
	}
	n := int(binary.LittleEndian.Uint32(buf[20:]))
	var out [][2]int64
	for i := range n {
		e := buf[32+56*i:]
		out = append(out, [2]int64{int64(binary.LittleEndian.Uint64(e[8:])), int64(binary.LittleEndian.Uint64(e[16:]))})
	}
	if len(out) == 0 {
		t.Fatalf("%s has no extents", path)
	}
	return out
}

func rawBlocks(t *testing.T, image []byte, ext [][2]int64) []byte {
	var out []byte
	for _, e := range ext {
		out = append(out, image[e[0]:e[0]+e[1]]...)
	}
	return out
}

// Changing the key that protects a vault rewraps its key: not one encrypted
// block of its files changes, and the data reads back the same.
func TestChangingTheKeyRewrapsWithoutReencryptingAFile(t *testing.T) {
	b := newBed(t, nil)
	b.apply()
	content := strings.Repeat(marker, 1<<20/len(marker))
	b.write("images", "big.bin", content)
	file := filepath.Join(b.vaultPath("images"), "big.bin")
	ext := fiemap(t, file)
	before := rawBlocks(t, b.image(), ext)
	if bytes.Contains(before, []byte(marker)) {
		t.Fatal("the file's blocks hold plaintext")
	}
	meta0, _ := b.manager().loadMeta("images")

	b.setPolicy("images", config.VaultChangeKey, 2)
	if got := b.apply(); !slices.Equal(got, []Change{{"images", "key changed (key version 1 to 2; no file re-encrypted)"}}) {
		t.Errorf("change-key did %v", got)
	}
	meta1, _ := b.manager().loadMeta("images")
	if meta1.KeyVersion() != 2 || bytes.Equal(meta0.Protector(ProtectorTPM2).Blob, meta1.Protector(ProtectorTPM2).Blob) || meta1.KeyIdentifier != meta0.KeyIdentifier {
		t.Errorf("after change-key: version %d, same blob %v, identifier %s (was %s)", meta1.KeyVersion(),
			bytes.Equal(meta0.Protector(ProtectorTPM2).Blob, meta1.Protector(ProtectorTPM2).Blob), meta1.KeyIdentifier, meta0.KeyIdentifier)
	}
	if after := fiemap(t, file); !slices.Equal(after, ext) {
		t.Errorf("the file moved: extents %v, were %v", after, ext)
	}
	if after := rawBlocks(t, b.image(), ext); !bytes.Equal(after, before) {
		t.Error("the file's encrypted blocks changed")
	}
	// The new wrapping unlocks: lock, then unlock with key version 2.
	if _, err := b.manager().Lock(context.Background(), "images", 0); err != nil {
		t.Fatal(err)
	}
	if got := b.apply(); !slices.Equal(got, []Change{{"images", "unlocked"}}) {
		t.Errorf("apply after the lock did %v", got)
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != content {
		t.Errorf("after change-key and unlock: %d bytes, %v", len(data), err)
	}
	if got := b.apply(); len(got) != 0 {
		t.Errorf("change-key applied again did %v", got)
	}
	b.setPolicy("images", config.VaultChangeKey, 1)
	if _, _, err := b.manager().Apply(context.Background()); err == nil || !strings.Contains(err.Error(), "key_version 1 is older than the vault's key version 2") {
		t.Errorf("a key version going back: %v", err)
	}
}

// A vault removed from the config is locked and orphaned, kept until it is
// deleted by name with --purge: then its files and key material are gone.
func TestAVaultOutOfConfigIsOrphanedUntilPurged(t *testing.T) {
	b := newBed(t, func(c *config.Config) {
		c.FileVaults.Vaults = []config.FileVault{{Schema: 1, UUID: "5b1c7d2e-8f3a-4c6b-a1d9-0e7f2c4b8a63", Name: "cache"}}
	})
	b.apply()
	b.write("cache", "entry", marker+"cache")
	m := b.manager()
	if _, err := m.Delete(context.Background(), "cache"); err == nil || !strings.Contains(err.Error(), "it is in the config") {
		t.Errorf("delete of a configured vault: %v", err)
	}

	b.cfg.FileVaults.Vaults = nil
	if got := b.apply(); !slices.Equal(got, []Change{{"cache", "locked (orphaned: no longer in config)"}}) {
		t.Errorf("apply without cache did %v", got)
	}
	if s := b.state("cache"); s.State != StateOrphaned || !s.Orphaned {
		t.Errorf("cache out of config: %+v", s)
	}
	if got := b.apply(); len(got) != 0 {
		t.Errorf("apply again did %v", got)
	}
	meta, _ := m.loadMeta("cache")

	got, err := b.manager().Delete(context.Background(), "cache")
	if err != nil || !slices.Equal(got, []Change{{"cache", "purged (files removed, key material erased)"}}) {
		t.Fatalf("delete --purge: %v, %v", got, err)
	}
	if _, err := os.Stat(m.metaPath("cache")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the wrapped key is still there: %v", err)
	}
	if _, err := os.Stat(meta.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the vault's files are still there: %v", err)
	}
	if st, err := fscrypt.Status(b.fs.Mount, meta.Identifier()); err != nil || st != fscrypt.Absent {
		t.Errorf("the kernel still has the key: %v, %v", st, err)
	}
	list, _ := b.manager().List()
	if slices.ContainsFunc(list, func(s Status) bool { return s.Name == "cache" }) {
		t.Errorf("a purged vault is listed: %+v", list)
	}
	if bytes.Contains(b.image(), []byte(marker)) {
		t.Error("the plaintext is on the disk")
	}
	if _, err := b.manager().Delete(context.Background(), "cache"); !errors.Is(err, ErrUnknownVault) {
		t.Errorf("delete of a purged vault: %v", err)
	}
}

// The disk moved to another device (another TPM) does not unlock; back on its
// own device it does, with its data.
func TestTheDiskInAnotherDeviceStaysLocked(t *testing.T) {
	b := newBed(t, nil)
	b.apply()
	b.write("images", "state.txt", marker)
	b.powerOff()

	thief := testbed.StartSWTPM(t)
	own := b.cfg.Seal.TPM2.Device
	b.cfg.Seal.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", thief.Port)
	b.fs.MountImage(t, b.fs.Image)
	if s := b.state("images"); s.State != StateLocked {
		t.Errorf("images on the other device before apply: %+v", s)
	}
	_, err := b.manager().Unlock(context.Background(), "images")
	if !errors.Is(err, seal.ErrWrongDevice) {
		t.Fatalf("unlock on another device: %v; want ErrWrongDevice", err)
	}
	t.Logf("on another device: %v", err)
	if s := b.state("images"); s.State != StateError || !strings.Contains(s.Reason, "another device") {
		t.Errorf("images on the other device: %+v", s)
	}
	if ns := testbed.DirNames(t, b.vaultPath("images")); slices.Contains(ns, "state.txt") {
		t.Error("names readable on another device")
	}

	b.cfg.Seal.TPM2.Device = own
	if _, err := b.manager().Unlock(context.Background(), "images"); err != nil {
		t.Fatalf("unlock back on its own device: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(b.vaultPath("images"), "state.txt")); err != nil || string(data) != marker {
		t.Errorf("data on its own device: %q, %v", data, err)
	}
}

func recoveryPair(t *testing.T) (*recovery.Recipient, *ecdh.PrivateKey) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(k.PublicKey())
	r, err := recovery.ParseRecipient(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return r, k
}

// Booting other software (a PCR the keys are sealed to changes) makes unlock
// fail with the PCR named; the data is intact, and comes back once the
// operator re-approves the state from the recovery copy.
func TestAPCRChangeRefusesUnlockUntilReapproved(t *testing.T) {
	b := newBed(t, func(c *config.Config) { c.Seal.TPM2.PCRs = []int{16} })
	rcpt, priv := recoveryPair(t)
	m := b.manager()
	m.Recovery = rcpt
	if _, _, err := m.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.write("images", "state.txt", marker)
	b.reboot()
	b.extendPCR(16)

	_, _, err := b.manager().Apply(context.Background())
	if !errors.Is(err, seal.ErrPCRMismatch) || !errors.Is(err, ErrNotAsConfigured) || !strings.Contains(err.Error(), "PCR 16") {
		t.Fatalf("apply after a PCR change: %v", err)
	}
	t.Logf("after a PCR change: %v", err)
	s := b.state("images")
	if s.State != StateError || !strings.Contains(s.Reason, "PCR 16") {
		t.Errorf("list after a PCR change: %+v", s)
	}

	got, err := b.manager().Recover(context.Background(), nil, priv)
	if err != nil || len(got) != 2 {
		t.Fatalf("recover: %v, %v", got, err)
	}
	if got := b.apply(); len(got) != 2 {
		t.Errorf("apply after recovery did %v; want both vaults unlocked", got)
	}
	if data, err := os.ReadFile(filepath.Join(b.vaultPath("images"), "state.txt")); err != nil || string(data) != marker {
		t.Errorf("data after re-approval: %q, %v", data, err)
	}
	if s := b.state("images"); s.State != StateUnlocked || s.Reason != "" {
		t.Errorf("list after re-approval: %+v", s)
	}
}

// An update approved in time: the new PCR values, approved before the change
// (edgeseal tpm reseal --pcr), unlock after it.
func TestAnUpdateApprovedBeforehandUnlocksAfterIt(t *testing.T) {
	b := newBed(t, func(c *config.Config) { c.Seal.TPM2.PCRs = []int{16} })
	b.apply()
	if got := b.approveUpdate(); len(got) != 2 {
		t.Fatalf("approve: %v", got)
	}
	b.reboot()
	b.extendPCR(16)
	if got := b.apply(); len(got) != 2 {
		t.Errorf("apply after the approved update did %v", got)
	}
}

// A lock while a file is open: the kernel keeps the key for it, and the vault
// is "lock pending: files busy", naming who holds it, never "locked"; the
// next apply after the close finishes the lock.
func TestALockWithOpenFilesIsPendingUntilTheyClose(t *testing.T) {
	b := newBed(t, nil)
	f := b.openFile("images")
	defer f.Close()

	_, err := b.manager().Lock(context.Background(), "images", 0)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("lock with an open file: %v; want ErrBusy naming pid %d", err, os.Getpid())
	}
	s := b.state("images")
	if s.State != StateLockPending || !strings.HasPrefix(s.Describe(), "lock pending: files busy (pid ") {
		t.Errorf("list while busy: %+v (%s)", s, s.Describe())
	}
	buf := make([]byte, len(marker))
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != marker {
		t.Errorf("the open file stopped reading: %q, %v", buf, err)
	}
	// An apply while the file is still open: not as configured, and still
	// pending (not an error, not locked).
	b.setPolicy("images", config.VaultLock, 0)
	if _, _, err := b.manager().Apply(context.Background()); !errors.Is(err, ErrBusy) || !errors.Is(err, ErrNotAsConfigured) {
		t.Errorf("apply while busy: %v", err)
	}
	if s := b.state("images"); s.State != StateLockPending {
		t.Errorf("list after an apply while busy: %+v", s)
	}
	f.Close()

	if got := b.apply(); !slices.Equal(got, []Change{{"images", "locked"}}) {
		t.Errorf("apply after the close did %v", got)
	}
	if s := b.state("images"); s.State != StateLocked {
		t.Errorf("after the close: %+v", s)
	}
}

// Bad input is refused with what is wrong, and nothing changes on disk.
func TestBadVaultsAreRefusedAndNothingChanges(t *testing.T) {
	b := newBed(t, func(c *config.Config) { c.FileVaults.Defaults = false })
	tmpfs := t.TempDir()
	if err := unix.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(tmpfs, 0) })
	full := filepath.Join(b.fs.Mount, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "keep.txt"), []byte("mine"), 0o644)

	cases := []struct {
		name string
		v    config.FileVault
		want string
	}{
		{"a filesystem that cannot encrypt", config.FileVault{Name: "ram", Path: filepath.Join(tmpfs, "ram")}, "does not support encryption"},
		{"a directory that is not empty", config.FileVault{Name: "full", Path: full}, "is not empty (1 entries)"},
		{"an unknown policy", config.FileVault{Name: "odd", Policy: "shred"}, `unknown policy "shred"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.v.Schema, tc.v.UUID = 1, newUUID()
			b.cfg.FileVaults.Vaults = []config.FileVault{tc.v}
			_, _, err := b.manager().Apply(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("apply: %v; want %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			if _, err := os.Stat(filepath.Join(paths.New(b.fs.Mount).VaultMeta, tc.v.Name+".json")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("metadata written for a refused vault: %v", err)
			}
			if data, _ := os.ReadFile(filepath.Join(full, "keep.txt")); string(data) != "mine" {
				t.Errorf("the non-empty directory changed: %q", data)
			}
			if path := b.cfg.FileVaults.Effective()[0].Path; path != full {
				if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the refused vault's directory %s was made: %v", path, err)
				}
			}
		})
	}
}

// A lock told to wait (what edgeseal-fsvault@NAME.service's stop does)
// finishes as soon as the last open file closes.
func TestALockThatWaitsFinishesWhenTheFilesClose(t *testing.T) {
	b := newBed(t, nil)
	f := b.openFile("images")
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		time.Sleep(400 * time.Millisecond)
		f.Close()
	}()
	got, err := b.manager().Lock(context.Background(), "images", 10*time.Second)
	<-closed
	if err != nil || !slices.Equal(got, []Change{{"images", "locked"}}) {
		t.Fatalf("lock --wait: %v, %v", got, err)
	}
	if s := b.state("images"); s.State != StateLocked {
		t.Errorf("after the wait: %+v", s)
	}
}

// A power cut during a creation, after the wrapped key is written but before
// the directory is encrypted: the next apply finishes it with the same key.
func TestACreationCutShortIsFinishedByTheNextApply(t *testing.T) {
	b := newBed(t, func(c *config.Config) {
		c.FileVaults.Defaults = false
		c.FileVaults.Vaults = []config.FileVault{{Schema: 1, UUID: "5b1c7d2e-8f3a-4c6b-a1d9-0e7f2c4b8a63", Name: "logs"}}
	})
	m := b.manager()
	v := b.cfg.FileVaults.Effective()[0]
	// What create does up to the metadata write, then the power goes.
	key := make([]byte, fscrypt.KeySize)
	rand.Read(key)
	id, _ := fscrypt.Identify(key)
	meta := &Meta{Format: MetaFormat, Version: MetaVersion, UUID: v.UUID, Name: v.Name, Path: v.Path, KeyIdentifier: id.String()}
	src, err := m.protect(context.Background(), meta, config.KeySourceTPM, 1, nil, false, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.setProtectors(meta, src, key); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(v.Path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := m.writeMeta(meta); err != nil {
		t.Fatal(err)
	}
	if s := b.state("logs"); s.State != StateError || !strings.Contains(s.Reason, "creation did not finish") {
		t.Errorf("list after the cut: %+v", s)
	}

	if got := b.apply(); !slices.Equal(got, []Change{{"logs", "creation finished (it was interrupted)"}}) {
		t.Errorf("apply after the cut did %v", got)
	}
	if pid, encrypted, err := fscrypt.Policy(v.Path); err != nil || !encrypted || pid != id {
		t.Errorf("the directory after the apply: %v, %v, %v; want encrypted with %v", pid, encrypted, err, id)
	}
	b.write("logs", "entry", marker)
	if got := b.apply(); len(got) != 0 {
		t.Errorf("apply again did %v", got)
	}
}
