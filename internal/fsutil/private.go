package fsutil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnsafePath: a directory on the way to a private file could be changed by
// someone other than the caller and root (it is owned by another user, or
// writable by others without the sticky bit), a symlink on the way belongs to
// another user, or the file itself is a symlink.
var ErrUnsafePath = errors.New("unsafe path")

// maxSymlinks bounds the symlinks OpenPrivateDir follows (Linux's own limit).
const maxSymlinks = 40

// OpenPrivateDir opens the directory at path, making the missing directories
// with mode 0700, so that nobody but the caller and root can have chosen where
// it leads: each component is opened relative to the one before with
// O_NOFOLLOW; every directory passed must be owned by root or the effective
// uid and, if writable by group or others, sticky; a symlink is followed only
// when root or the effective uid owns it; the directory itself must be owned
// by the effective uid. What `edgeseal token fetch` run as root in a user's
// $XDG_RUNTIME_DIR would otherwise follow (edgeseal -> /etc) is refused.
func OpenPrivateDir(path string) (*os.File, error) {
	if !filepath.IsAbs(path) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("cannot open directory %s: %w", path, err)
		}
		path = abs
	}
	euid := os.Geteuid()
	fail := func(format string, args ...any) error {
		return fmt.Errorf("cannot open directory %s: %w: "+format, append([]any{path, ErrUnsafePath}, args...)...)
	}
	trusted := func(uid uint32) bool { return uid == 0 || int(uid) == euid }

	// The directories on the way are opened with O_PATH: enough to stat
	// them and to go on from them, and no read of them, which a confined
	// process (a snap's AppArmor profile: /var/snap/ is not readable) may
	// not have. Only the directory itself is opened for reading, at the end.
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot open directory /: %w", err)
	}
	// stack holds the open directories from / down to the current one, so that
	// ".." in a symlink's target goes back up without asking the kernel.
	stack, names := []int{root}, []string{""}
	defer func() {
		for _, fd := range stack {
			unix.Close(fd)
		}
	}()
	comps, links := strings.Split(path, "/"), 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		cur, where := stack[len(stack)-1], strings.Join(names, "/")+"/"
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				unix.Close(cur)
				stack, names = stack[:len(stack)-1], names[:len(names)-1]
			}
			continue
		}
		var st unix.Stat_t
		err := unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(cur, c, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("cannot make directory %s%s: %w", where, c, err)
			}
			err = unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return nil, fmt.Errorf("cannot open directory %s: %s%s: %w", path, where, c, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if !trusted(st.Uid) {
				return nil, fail("%s%s is a symlink owned by uid %d", where, c, st.Uid)
			}
			if links++; links > maxSymlinks {
				return nil, fail("more than %d symlinks", maxSymlinks)
			}
			target, err := readlinkat(cur, c)
			if err != nil {
				return nil, fmt.Errorf("cannot open directory %s: %s%s: %w", path, where, c, err)
			}
			if strings.HasPrefix(target, "/") {
				for _, fd := range stack[1:] {
					unix.Close(fd)
				}
				stack, names = stack[:1], names[:1]
			}
			comps = append(strings.Split(target, "/"), comps...)
			continue
		}
		fd, err := unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			// A symlink put there since the Fstatat is refused (ELOOP), not followed.
			return nil, fmt.Errorf("cannot open directory %s: %s%s: %w", path, where, c, err)
		}
		stack, names = append(stack, fd), append(names, c)
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("cannot open directory %s: %s%s: %w", path, where, c, err)
		}
		switch {
		case !trusted(st.Uid):
			return nil, fail("%s%s is owned by uid %d, not by root or uid %d", where, c, st.Uid, euid)
		case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
			return nil, fail("%s%s is writable by others (mode %o) and not sticky", where, c, st.Mode&0o7777)
		}
	}
	fd := stack[len(stack)-1]
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("cannot open directory %s: %w", path, err)
	}
	if int(st.Uid) != euid {
		return nil, fail("it is owned by uid %d, not by uid %d who writes in it", st.Uid, euid)
	}
	if st.Mode&0o022 != 0 {
		return nil, fail("it is writable by others (mode %o)", st.Mode&0o7777)
	}
	// The same directory (".": no name to swap), opened for reading and
	// fsync.
	dirfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot open directory %s: %w", path, err)
	}
	return os.NewFile(uintptr(dirfd), path), nil
}

func readlinkat(dir int, name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dir, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// CheckWritableAt tells whether WriteFileAtomicAt would write name in dir: a
// symlink standing at name is ErrUnsafePath. A caller checks before work that
// a refusal would waste (a token fetched, and its predecessor revoked, for a
// file that cannot be written).
func CheckWritableAt(dir *os.File, name string) error {
	where := filepath.Join(dir.Name(), name)
	if name != filepath.Base(name) || name == "." || name == ".." {
		return fmt.Errorf("internal error: %q is not a file name", name)
	}
	var st unix.Stat_t
	switch err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("cannot write %s: %w: it is a symlink", where, ErrUnsafePath)
	case err != nil && !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("cannot write %s: %w", where, err)
	}
	return nil
}

// WriteFileAtomicAt writes name in the directory dir as WriteFileAtomic does
// (a temporary file, synced, renamed over name, the directory synced), without
// ever following a symlink: the temporary file is created with O_EXCL and
// O_NOFOLLOW, and a symlink standing at name is refused (ErrUnsafePath) rather
// than replaced.
func WriteFileAtomicAt(dir *os.File, name string, data []byte, mode os.FileMode) (err error) {
	where := filepath.Join(dir.Name(), name)
	if err := CheckWritableAt(dir, name); err != nil {
		return err
	}
	dfd := int(dir.Fd())
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := "." + name + ".tmp-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create temporary file for %s: %w", where, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir.Name(), tmp))
	defer func() {
		if err != nil {
			f.Close()
			unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", f.Name(), err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("cannot write %s: %w", f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %w", f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("cannot close %s: %w", f.Name(), err)
	}
	if err = unix.Renameat(dfd, tmp, dfd, name); err != nil {
		return fmt.Errorf("cannot rename %s to %s: %w", f.Name(), where, err)
	}
	if err = dir.Sync(); err != nil {
		return fmt.Errorf("cannot sync directory %s: %w", dir.Name(), err)
	}
	return nil
}
