package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestARootFileIsTrustedOnlyWithoutSymlinksOrOthersWriting(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test makes root's files: run it as root (make test does)")
	}
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parents (/tmp) are sticky and root's.
	dir := filepath.Join(base, "system")
	mkdir := func(p string, mode os.FileMode) {
		if err := os.MkdirAll(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, mode os.FileMode) string {
		if err := os.WriteFile(p, []byte("[Service]\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mkdir(dir, 0o755)
	mkdir(filepath.Join(base, "elsewhere"), 0o755)
	mkdir(filepath.Join(base, "open"), 0o777)
	mkdir(filepath.Join(base, "sticky"), os.ModeSticky|0o777)
	good := write(filepath.Join(dir, "app.service"), 0o644)
	target := write(filepath.Join(base, "elsewhere", "app.service"), 0o644)
	link := filepath.Join(dir, "linked.service")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "elsewhere"), filepath.Join(base, "linkdir")); err != nil {
		t.Fatal(err)
	}
	user := write(filepath.Join(dir, "user.service"), 0o644)
	if err := os.Chown(user, 1000, 1000); err != nil {
		t.Fatal(err)
	}

	if err := CheckRootFile(good); err != nil {
		t.Errorf("root's 0644 file in root's 0755 directories: %v", err)
	}
	if err := CheckRootFile(write(filepath.Join(base, "sticky", "app.service"), 0o644)); err != nil {
		t.Errorf("root's file in a sticky directory: %v", err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"a symlink at the path", link, "linked.service is a symlink"},
		{"a symlink on the way", filepath.Join(base, "linkdir", "app.service"), "linkdir is a symlink"},
		{"another user's file", user, "owned by uid 1000"},
		{"a file others may write", write(filepath.Join(dir, "open.service"), 0o666), "writable by others than root (mode 666)"},
		{"a file in a directory others may write", write(filepath.Join(base, "open", "app.service"), 0o644), "open is writable by others than root (mode 777)"},
		{"a directory", dir, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRootFile(tc.path)
			if !errors.Is(err, ErrUnsafePath) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckRootFile(%s) = %v, want ErrUnsafePath saying %q", tc.path, err, tc.want)
			}
		})
	}
	if err := CheckRootFile(filepath.Join(dir, "gone.service")); err == nil || errors.Is(err, ErrUnsafePath) {
		t.Errorf("a missing file: %v, want a plain error", err)
	}
	if err := CheckRootFile("relative/app.service"); err == nil {
		t.Error("a relative path was checked")
	}
}
