//go:build integration

package fscrypt

import (
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgeseal/edgeseal/tests/testbed"
)

// encryptFS mounts a fresh ext4 made with the encrypt feature on a loop
// device, in a directory of the test, and unmounts it at cleanup.
func encryptFS(t *testing.T) string {
	return testbed.NewEncryptFS(t, "32M").Mount
}

func newKey(t *testing.T) []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

// The lifecycle of an encrypted directory: a key added and a policy set on an
// empty directory; files written; the key removed (names and contents
// unreadable); the key added again (all back); a lock while a file is open
// (reported busy, finished once it closes).
func TestAnEncryptedDirectoryLocksAndUnlocksWithItsKey(t *testing.T) {
	mnt := encryptFS(t)
	key := newKey(t)
	id, err := AddKey(mnt, key)
	if err != nil {
		t.Fatal(err)
	}
	if id == (Identifier{}) {
		t.Fatal("the kernel gave no key identifier")
	}
	if want, err := Identify(key); err != nil || want != id {
		t.Fatalf("Identify = %v, %v; the kernel says %v", want, err, id)
	}
	vault := filepath.Join(mnt, "vault")
	if err := os.Mkdir(vault, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := SetPolicy(vault, id); err != nil {
		t.Fatal(err)
	}
	if got, enc, err := Policy(vault); err != nil || !enc || got != id {
		t.Fatalf("Policy = %s, %v, %v; want %s", got, enc, err, id)
	}
	if _, enc, err := Policy(mnt); err != nil || enc {
		t.Fatalf("the mount point reads as encrypted (%v, %v)", enc, err)
	}
	secret := []byte("the device's database password")
	if err := os.WriteFile(filepath.Join(vault, "db.conf"), secret, 0o600); err != nil {
		t.Fatal(err)
	}

	t.Log("When its key is removed, Then names and contents are out of reach")
	if busy, err := RemoveKey(mnt, id); err != nil || busy {
		t.Fatalf("RemoveKey = %v, %v", busy, err)
	}
	if st, err := Status(mnt, id); err != nil || st != Absent {
		t.Fatalf("status after removal: %v, %v", st, err)
	}
	if n := testbed.DirNames(t, vault); len(n) != 1 || n[0] == "db.conf" {
		t.Errorf("locked directory lists %v: want one name, not in clear", n)
	}
	if _, err := os.ReadFile(filepath.Join(vault, "db.conf")); err == nil {
		t.Error("a file of the locked directory opened by its name")
	}
	if err := os.WriteFile(filepath.Join(vault, "new"), []byte("x"), 0o600); err == nil {
		t.Error("a file was created in the locked directory")
	}

	t.Log("When the key is added again, Then everything is back")
	if again, err := AddKey(mnt, key); err != nil || again != id {
		t.Fatalf("AddKey again = %s, %v; want %s", again, err, id)
	}
	if got, err := os.ReadFile(filepath.Join(vault, "db.conf")); err != nil || string(got) != string(secret) {
		t.Fatalf("after unlock: %q, %v", got, err)
	}

	t.Log("When a file is open while the key is removed, Then the lock is reported busy and finishes when it closes")
	f, err := os.Open(filepath.Join(vault, "db.conf"))
	if err != nil {
		t.Fatal(err)
	}
	busy, err := RemoveKey(mnt, id)
	if err != nil || !busy {
		f.Close()
		t.Fatalf("RemoveKey with an open file = %v, %v; want busy", busy, err)
	}
	if st, _ := Status(mnt, id); st != IncompletelyRemoved {
		t.Errorf("status with an open file: %v, want %v", st, IncompletelyRemoved)
	}
	f.Close()
	if busy, err := RemoveKey(mnt, id); err != nil || busy {
		t.Fatalf("RemoveKey after the close = %v, %v", busy, err)
	}
	if st, _ := Status(mnt, id); st != Absent {
		t.Errorf("status after the close: %v, want absent", st)
	}
}

func TestBadTargetsAreRefusedWithWhatIsWrong(t *testing.T) {
	mnt := encryptFS(t)
	id, err := AddKey(mnt, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RemoveKey(mnt, id) })

	full := filepath.Join(mnt, "full")
	os.Mkdir(full, 0o700)
	os.WriteFile(filepath.Join(full, "x"), []byte("x"), 0o600)
	if err := SetPolicy(full, id); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("a non-empty directory: %v, want ErrNotEmpty", err)
	}
	if n := testbed.DirNames(t, full); !slices.Equal(n, []string{"x"}) {
		t.Errorf("the refused directory changed: %v", n)
	}

	other, err := AddKey(mnt, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RemoveKey(mnt, other) })
	vault := filepath.Join(mnt, "vault")
	os.Mkdir(vault, 0o700)
	if err := SetPolicy(vault, id); err != nil {
		t.Fatal(err)
	}
	if err := SetPolicy(vault, id); err != nil {
		t.Errorf("setting the same policy again: %v", err)
	}
	if err := SetPolicy(vault, other); !errors.Is(err, ErrOtherPolicy) {
		t.Errorf("another key on an encrypted directory: %v, want ErrOtherPolicy", err)
	}

	if _, err := AddKey(mnt, []byte("short")); err == nil {
		t.Error("a short key was added")
	}
	if _, err := RemoveKey(mnt, Identifier{1, 2, 3}); !errors.Is(err, ErrKeyAbsent) {
		t.Errorf("removing a key never added: %v, want ErrKeyAbsent", err)
	}

	// A filesystem without encryption: a tmpfs of the test's own.
	plain := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", plain).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", plain).Run() })
	if _, err := AddKey(plain, newKey(t)); !errors.Is(err, ErrNotSupported) {
		t.Errorf("a key added to a tmpfs: %v, want ErrNotSupported", err)
	}
	os.Mkdir(filepath.Join(plain, "d"), 0o700)
	if err := SetPolicy(filepath.Join(plain, "d"), id); !errors.Is(err, ErrNotSupported) {
		t.Errorf("a policy on a tmpfs: %v, want ErrNotSupported", err)
	}
}
