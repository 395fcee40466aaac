// Package exeid tells which executable file a process runs, by the SHA-256 of
// its content, for the token provider's executable pins (a service's
// exe_sha256): a service rule may say what must be running, not only where.
//
// # Why a helper of its own
//
// The executable is read through /proc/PID/exe, the kernel's link to the very
// file the process runs (not a path, which may have been replaced since the
// exec). The kernel lets a process follow that link only to processes of its
// own uid, or with CAP_SYS_PTRACE. The token provider serves every local user
// and keeps no capability; so a helper does it, edgeseal-exeid, and does
// nothing else: a dynamic user with CAP_SYS_PTRACE alone (no root: the other
// files of /proc a capability would open, such as /proc/PID/mem, stay closed
// to it by their owner and mode), the ptrace system calls refused by its
// seccomp filter, and a socket only the provider's user may connect to (its
// peer's uid checked again).
//
// # The protocol
//
// One request per connection: one byte and, as SCM_RIGHTS, a pidfd of the
// process (the provider's, taken from the caller's socket). The helper finds
// the pid in the pidfd's fdinfo, opens /proc/PID/exe, then checks that the
// pidfd's process has not exited: a live pidfd pins its pid, so the file
// opened is that process's. The answer is one JSON line (Reply), bounded. The
// digest of a file is kept by its device, inode, size and change times, so a
// file rewritten in place is hashed again.
package exeid

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/naming"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// Errors of Digest the provider acts on.
var (
	// ErrGone: the process exited before its executable could be read.
	ErrGone = errors.New("the process exited before its executable was read")
	// ErrUnreadable: the executable cannot be read (a file only executable,
	// not readable, a deleted file larger than the bound).
	ErrUnreadable = errors.New("the process's executable cannot be read")
	// ErrBusy: the helper could not hash the file in time (others were
	// being hashed); the question may be asked again.
	ErrBusy = errors.New("edgeseal-exeid is busy")
)

// Reply is the helper's answer.
type Reply struct {
	SHA256 string `json:"sha256,omitempty"`
	// Gone: the process exited (ErrGone).
	Gone bool `json:"gone,omitempty"`
	// Busy: the helper could not hash it in time (ErrBusy).
	Busy  bool   `json:"busy,omitempty"`
	Error string `json:"error,omitempty"`
}

// maxReply bounds the answer the provider reads; maxExecutable the file the
// helper hashes.
const (
	maxReply      = 1024
	maxExecutable = 256 << 20
)

// request is the one byte sent along the pidfd.
const request = 'x'

// Digest asks the helper at socket for the SHA-256 (hex) of the executable the
// process of pidfd runs.
func Digest(socket string, pidfd int, timeout time.Duration) (string, error) {
	if pidfd < 0 {
		return "", errors.New("cannot check the caller's executable: this kernel gives no pidfd of it (Linux 5.3 or later is needed)")
	}
	c, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return "", fmt.Errorf("cannot ask edgeseal-exeid for the caller's executable: %w", err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(timeout))
	if _, _, err := uc.WriteMsgUnix([]byte{request}, unix.UnixRights(pidfd), nil); err != nil {
		return "", fmt.Errorf("cannot ask edgeseal-exeid for the caller's executable: %w", err)
	}
	line, err := bufio.NewReader(io.LimitReader(uc, maxReply)).ReadBytes('\n')
	if err != nil {
		return "", fmt.Errorf("cannot read edgeseal-exeid's answer: %w", err)
	}
	var r Reply
	if err := strictjson.Decode(line, maxReply, &r); err != nil {
		return "", fmt.Errorf("cannot read edgeseal-exeid's answer: %w", err)
	}
	switch {
	case r.Gone:
		return "", ErrGone
	case r.Busy:
		return "", ErrBusy
	case r.Error != "":
		return "", fmt.Errorf("%w: %s", ErrUnreadable, r.Error)
	case !naming.ValidSHA256(r.SHA256):
		return "", fmt.Errorf("cannot read edgeseal-exeid's answer: %q is not a SHA-256", r.SHA256)
	}
	return r.SHA256, nil
}

// pidOfPidfd reads the pid of a pidfd from its fdinfo ("Pid:\tN"; -1 once
// the process is reaped). A file descriptor without that line is not a pidfd.
func pidOfPidfd(proc string, fd int) (int, error) {
	data, err := readBounded(fmt.Sprintf("%s/self/fdinfo/%d", proc, fd), 4096)
	if err != nil {
		return 0, fmt.Errorf("cannot read the fdinfo of the passed descriptor: %w", err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil {
				return 0, fmt.Errorf("cannot read the pid of the passed pidfd: %q", strings.TrimSpace(rest))
			}
			if pid <= 0 {
				return 0, ErrGone
			}
			return pid, nil
		}
	}
	return 0, errors.New("the passed descriptor is not a pidfd")
}

// exited reports whether the pidfd's process has exited (it polls readable).
func exited(pidfd int) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("cannot poll the pidfd: %w", err)
		}
		return n > 0, nil
	}
}

// fileKey names one version of a file: a rewrite in place changes its size or
// its change time.
type fileKey struct {
	dev, ino, size   uint64
	mtimeNs, ctimeNs int64
}

func keyOf(st *unix.Stat_t) fileKey {
	return fileKey{dev: st.Dev, ino: st.Ino, size: uint64(st.Size),
		mtimeNs: st.Mtim.Nano(), ctimeNs: st.Ctim.Nano()}
}

// hashFile hashes the open file fd, at most maxExecutable bytes, giving up at
// deadline.
func hashFile(fd int, deadline time.Time) (string, error) {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var total int64
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("cannot read the executable: %w", err)
		}
		if n == 0 {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		total += int64(n)
		if total > maxExecutable {
			return "", fmt.Errorf("the executable is larger than %d bytes", maxExecutable)
		}
		if time.Now().After(deadline) {
			return "", errors.New("the question timed out while the executable was read")
		}
		h.Write(buf[:n])
	}
}

func readBounded(name string, limit int) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, limit+1)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	if n > limit {
		return nil, fmt.Errorf("%s: longer than %d bytes", name, limit)
	}
	return buf[:n], nil
}

// encodeReply is the answer line.
func encodeReply(r Reply) []byte {
	data, _ := json.Marshal(r)
	return append(data, '\n')
}
