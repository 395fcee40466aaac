// Package fsutil writes files so that a crash at any instant leaves either the old
// content or the new, never a torn file: edgeseal's files hold keys, and a torn
// sealed key is a Vault nobody can unseal.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Owner is a uid/gid pair; -1 keeps the writer's own.
type Owner struct{ UID, GID int }

// Self keeps the file owned by the writing process.
var Self = Owner{-1, -1}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory: create with mode (never wider, whatever the umask), chown, write,
// fsync, rename over path, fsync the directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode, owner Owner) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot create temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", tmp, err)
	}
	if owner != Self {
		if err = f.Chown(owner.UID, owner.GID); err != nil {
			return fmt.Errorf("cannot set owner of %s: %w", tmp, err)
		}
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("cannot write %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("cannot close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot rename %s to %s: %w", tmp, path, err)
	}
	return SyncDir(dir)
}

// SyncDir makes a rename or removal in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot sync directory %s: %w", dir, err)
	}
	return nil
}

// SyncFS makes durable everything written so far to the filesystem that holds
// path, by whatever process: for files another program writes without fsync,
// as Vault's file storage does.
func SyncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("cannot sync the filesystem of %s: %w", path, err)
	}
	return nil
}

// RemoveDurable removes path (absent is fine) and syncs its directory.
func RemoveDurable(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("cannot remove %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// ReadBounded reads the file at path, at most limit bytes: a larger one is
// an error naming it (a mistaken path, /dev/zero or a disk image, is refused
// before it is read whole).
func ReadBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, err
}

// ErrNotRegular: a state file is not a regular file (a FIFO, a device, a
// directory, a symlink), as only someone who wrote the disk behind edgeseal's
// back can have made it.
var ErrNotRegular = errors.New("not a regular file")

// ReadRegular is ReadBounded for edgeseal's own state files, which a thief
// with the disk may have replaced: no symlink is followed, nothing blocks (a
// FIFO is refused, not waited on: a boot must not hang on a file), and only a
// regular file is read.
func ReadRegular(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", path, ErrNotRegular)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, err
}
