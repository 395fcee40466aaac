package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestWriteFileAtomicReplacesWholeFileWithExactMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := WriteFileAtomic(p, []byte("first"), 0o600, Self); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("second"), 0o400, Self); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(data) != "second" || fi.Mode().Perm() != 0o400 {
		t.Errorf("content %q mode %v", data, fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestFailedWriteLeavesWhatWasThereAndNoTemporary(t *testing.T) {
	dir := t.TempDir()
	// The rename, the only step that changes the target, fails: a non-empty
	// directory stands where the file would go.
	p := filepath.Join(dir, "key")
	if err := os.MkdirAll(filepath.Join(p, "inside"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("new"), 0o600, Self); err == nil {
		t.Fatal("a write over a directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(p, "inside")); err != nil {
		t.Errorf("what was there is gone: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestRemoveDurableAcceptsAMissingFile(t *testing.T) {
	if err := RemoveDurable(filepath.Join(t.TempDir(), "absent")); err != nil {
		t.Error(err)
	}
}

// A file larger than the bound is refused, naming it; one at the bound reads.
func TestReadBoundedRefusesALargerFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := ReadBounded(p, 5); err != nil || string(data) != "12345" {
		t.Errorf("at the bound: %q, %v", data, err)
	}
	if _, err := ReadBounded(p, 4); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("over the bound: %v; want an error naming %s", err, p)
	}
}

func TestSyncFSNamesAPathItCannotOpen(t *testing.T) {
	if err := SyncFS(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "gone")
	if err := SyncFS(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("SyncFS of a missing path: %v", err)
	}
}

func TestReadRegularRefusesWhatOnlyATamperedDiskHolds(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "state.json")
	if err := os.WriteFile(good, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := ReadRegular(good, 16); err != nil || string(data) != "{}" {
		t.Fatalf("a regular file: %q, %v", data, err)
	}
	fifo := filepath.Join(dir, "fifo.json")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadRegular(fifo, 16); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("a FIFO: %v, want ErrNotRegular", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO blocked")
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRegular(link, 16); err == nil {
		t.Error("a symlink was followed")
	}
	if _, err := ReadRegular(dir, 16); !errors.Is(err, ErrNotRegular) {
		t.Errorf("a directory: %v", err)
	}
	if _, err := ReadRegular(good, 1); err == nil {
		t.Error("a file over the bound was read")
	}
}
