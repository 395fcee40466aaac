package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A secret file (a PIN the unseal step reads as root) is read only when
// nobody but its owner, root or the reader, can have read or chosen it.
func TestReadSecretFileRefusesAFileOthersCanReadOrRedirect(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pin")
	if err := os.WriteFile(good, []byte("4711\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := ReadSecretFile(good, 16); err != nil || string(data) != "4711\n" {
		t.Fatalf("a 0600 file of the reader's: %q, %v", data, err)
	}
	readOnly := filepath.Join(dir, "pin-0400")
	if err := os.WriteFile(readOnly, []byte("4711"), 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSecretFile(readOnly, 16); err != nil {
		t.Errorf("a 0400 file: %v", err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o666, 0o610} {
		p := filepath.Join(dir, "pin-"+mode.String())
		if err := os.WriteFile(p, []byte("4711\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, err := ReadSecretFile(p, 16)
		if !errors.Is(err, ErrUnsafeSecret) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "chmod 0600") {
			t.Errorf("a %v file: %v; want ErrUnsafeSecret naming it and chmod 0600", mode, err)
		}
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSecretFile(link, 16); !errors.Is(err, ErrUnsafeSecret) || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("a symlink to a 0600 file: %v; want ErrUnsafeSecret saying symlink", err)
	}
	if _, err := ReadSecretFile(dir, 16); !errors.Is(err, ErrUnsafeSecret) {
		t.Errorf("a directory: %v", err)
	}
	if _, err := ReadSecretFile(good, 4); err == nil || !strings.Contains(err.Error(), good) {
		t.Errorf("a file over the bound: %v", err)
	}
	if _, err := ReadSecretFile(filepath.Join(dir, "missing"), 16); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
}

// A file owned by a user other than root and the reader is refused: that
// user could have chosen or read it.
func TestReadSecretFileRefusesAnotherUsersFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test changes a file's owner: run it as root")
	}
	p := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(p, []byte("4711\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSecretFile(p, 16); !errors.Is(err, ErrUnsafeSecret) || !strings.Contains(err.Error(), "uid 65534") || !strings.Contains(err.Error(), "chown root") {
		t.Errorf("a file of uid 65534: %v; want ErrUnsafeSecret naming the uid and chown root", err)
	}
}
