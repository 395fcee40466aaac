package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ErrUnsafeSecret: a secret file (a PIN file) that someone other than its
// reader and root may have read or chosen: a symlink, not a regular file,
// owned by another user, or with a group or other permission bit.
var ErrUnsafeSecret = errors.New("unsafe secret file")

// ReadSecretFile reads the secret file at path, at most limit bytes. The file
// is opened without following a symlink and without blocking, and read only
// if it is a regular file owned by root or the effective uid with no group or
// other permission (mode&0o077 == 0). Errors name the file, what is wrong and
// the fix, and wrap ErrUnsafeSecret for an unsafe file. The caller must clear
// the returned slice.
func ReadSecretFile(path string, limit int64) ([]byte, error) {
	unsafe := func(format string, args ...any) error {
		return fmt.Errorf("cannot read %s: %w: "+format, append([]any{path, ErrUnsafeSecret}, args...)...)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, unsafe("it is a symlink: put the file itself there (mode 0600, owned by root)")
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	euid := os.Geteuid()
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, unsafe("it is not a regular file: put a file there (mode 0600, owned by root)")
	case st.Uid != 0 && int(st.Uid) != euid:
		return nil, unsafe("it is owned by uid %d, not by root or uid %d: chown root %s", st.Uid, euid, path)
	case st.Mode&0o077 != 0:
		return nil, unsafe("its mode %04o lets others than its owner use it: chmod 0600 %s", st.Mode&0o7777, path)
	}
	// One buffer, never grown, so that clearing it wipes every copy read.
	buf := make([]byte, limit+1)
	n, err := io.ReadFull(f, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
	case err != nil:
		clear(buf)
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	default:
		clear(buf)
		return nil, fmt.Errorf("cannot read %s: it is larger than %d bytes", path, limit)
	}
	data := buf[:n:n]
	return data, nil
}
