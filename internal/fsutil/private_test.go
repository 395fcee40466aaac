package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenPrivateDirMakesTheMissingDirectoriesAndWriteFileAtomicAtWrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "edgeseal")
	d, err := OpenPrivateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, content := range []string{"first", "second"} {
		if err := WriteFileAtomicAt(d, "token.json", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "token.json"))
	fi, _ := os.Stat(filepath.Join(dir, "token.json"))
	di, _ := os.Stat(dir)
	if string(data) != "second" || fi.Mode().Perm() != 0o600 || di.Mode().Perm()&0o077 != 0 {
		t.Errorf("content %q mode %v, directory mode %v", data, fi.Mode().Perm(), di.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestOpenPrivateDirFollowsTheCallersOwnSymlinks(t *testing.T) {
	base := t.TempDir()
	os.Mkdir(filepath.Join(base, "real"), 0o700)
	os.Symlink("real", filepath.Join(base, "link"))
	os.Symlink(filepath.Join(base, "real"), filepath.Join(base, "abs"))
	for _, p := range []string{"link", "abs", "real/../link"} {
		d, err := OpenPrivateDir(filepath.Join(base, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if err := WriteFileAtomicAt(d, "f", []byte(p), 0o600); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		d.Close()
		if data, _ := os.ReadFile(filepath.Join(base, "real", "f")); string(data) != p {
			t.Errorf("%s: the file is not in the directory the symlink names: %q", p, data)
		}
	}
}

func TestOpenPrivateDirRefusesADirectoryOthersCanWriteIn(t *testing.T) {
	base := t.TempDir()
	shared := filepath.Join(base, "shared")
	os.Mkdir(shared, 0o700)
	os.Chmod(shared, 0o777) // not sticky: anyone may swap what is inside
	for _, p := range []string{shared, filepath.Join(shared, "edgeseal")} {
		if _, err := OpenPrivateDir(p); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("OpenPrivateDir(%s) = %v, want ErrUnsafePath", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(shared, "edgeseal")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a directory was made below the refused one: %v", err)
	}
}

func TestWriteFileAtomicAtRefusesASymlinkedFile(t *testing.T) {
	base := t.TempDir()
	elsewhere := filepath.Join(base, "elsewhere")
	os.WriteFile(elsewhere, []byte("untouched"), 0o644)
	dir := filepath.Join(base, "edgeseal")
	os.Mkdir(dir, 0o700)
	os.Symlink(elsewhere, filepath.Join(dir, "token.json"))
	d, err := OpenPrivateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := WriteFileAtomicAt(d, "token.json", []byte("token"), 0o600); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("WriteFileAtomicAt over a symlink = %v, want ErrUnsafePath", err)
	}
	if data, _ := os.ReadFile(elsewhere); string(data) != "untouched" {
		t.Errorf("the symlink's target was written: %q", data)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "token.json")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}
