package fsutil

import (
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CheckRootFile checks that the file at path (absolute, clean) is one only
// root can have written or put there: no symlink on the way or at the end,
// the file and every directory above it owned by root, the file writable by
// root alone, each directory too unless it is sticky (where others may add
// names but not take or replace root's). Otherwise ErrUnsafePath, naming the
// component at fault. Each component is opened with O_PATH relative to the
// one before (O_NOFOLLOW): what is checked is what the path leads to, with no
// read of any file or directory on the way.
//
// The token provider asks it of the files systemd loaded a pinned unit from
// (unit_files): a pin names paths, and a symlink at one, or a directory
// someone else may write, would let an unlisted file define the unit.
func CheckRootFile(path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("cannot check %q: not an absolute, clean path", path)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("cannot trust %s: %w: "+format, append([]any{path, ErrUnsafePath}, args...)...)
	}
	cur, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot open directory /: %w", err)
	}
	defer func() { unix.Close(cur) }()
	where := "/"
	comps := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := -1; i < len(comps); i++ {
		if i >= 0 {
			// O_NOFOLLOW on an O_PATH open opens a symlink itself, which
			// Fstat then shows: it is refused, never followed.
			fd, err := unix.Openat(cur, comps[i], unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("cannot check %s: %s: %w", path, filepath.Join(where, comps[i]), err)
			}
			unix.Close(cur)
			cur, where = fd, filepath.Join(where, comps[i])
		}
		var st unix.Stat_t
		if err := unix.Fstat(cur, &st); err != nil {
			return fmt.Errorf("cannot check %s: %s: %w", path, where, err)
		}
		last := i == len(comps)-1
		switch mode := st.Mode & unix.S_IFMT; {
		case mode == unix.S_IFLNK:
			return fail("%s is a symlink", where)
		case st.Uid != 0:
			return fail("%s is owned by uid %d, not root", where, st.Uid)
		case last && mode != unix.S_IFREG:
			return fail("it is not a regular file")
		case !last && mode != unix.S_IFDIR:
			return fail("%s is not a directory", where)
		case st.Mode&0o022 != 0 && (last || st.Mode&unix.S_ISVTX == 0):
			return fail("%s is writable by others than root (mode %o)", where, st.Mode&0o7777)
		}
	}
	return nil
}
