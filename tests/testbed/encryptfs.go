//go:build integration

package testbed

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// EncryptFS is an ext4 made with the encrypt feature (fscrypt) in a disk image
// of the test, mounted on a loop device at Mount: a device's disk, which a
// test may unmount and mount again (or mount a copy of) like a disk moved to
// another machine.
type EncryptFS struct {
	Image, Mount string
	mounted      bool
}

// NewEncryptFS makes and mounts a fresh filesystem of size (e.g. "64M"); it is
// unmounted at cleanup.
func NewEncryptFS(t testing.TB, size string) *EncryptFS {
	t.Helper()
	Require(t, "mkfs.ext4", "mount")
	dir := t.TempDir()
	e := &EncryptFS{Image: filepath.Join(dir, "disk.img"), Mount: filepath.Join(dir, "mnt")}
	if err := os.Mkdir(e.Mount, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{{"truncate", "-s", size, e.Image}, {"mkfs.ext4", "-q", "-O", "encrypt", "-F", e.Image}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	e.MountImage(t, e.Image)
	t.Cleanup(func() {
		if e.mounted {
			e.Unmount(t)
		}
	})
	return e
}

// MountImage mounts image (this filesystem's or a copy) at Mount.
func (e *EncryptFS) MountImage(t testing.TB, image string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "loop", image, e.Mount).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", image, err, out)
	}
	e.mounted = true
}

// Unmount unmounts it (every key added for it goes with it).
func (e *EncryptFS) Unmount(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("umount", e.Mount).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v\n%s", e.Mount, err, out)
	}
	e.mounted = false
}

// DirNames lists the names in dir, as the kernel gives them (ciphertext in a
// locked vault).
func DirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
