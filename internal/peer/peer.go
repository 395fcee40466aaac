// Package peer tells who is on the other end of a Unix socket, from what the
// kernel and systemd say and never from what the caller says.
//
// The kernel gives the caller's pid, uid and gid as they were at connect()
// (SO_PEERCRED) and, on Linux 6.5 and later, a pidfd of that very process
// (SO_PEERPIDFD). A pid alone is a weak name: the caller can exit and its pid be
// given to another process before we ask systemd which unit it is in. So a Peer
// holds the process by pidfd and by start time from the moment of accept, and
// Resolve checks both again after every lookup made by pid: if the process is
// gone, a zombie, or not the same process any more, the caller is refused
// (ErrGone). A live pidfd pins the pid: while the process lives no other
// process can have its pid, so lookups by pid in between are about it.
//
// # What each kernel guarantees
//
// The pidfd comes from the socket, never from the pid number where the socket
// can give one:
//
//   - Linux 6.16 and later: SO_PEERPIDFD gives a pidfd of the process that
//     connected even after it exited and was reaped (the kernel keeps its pidfs
//     entry from connect()). That pidfd polls readable, so the caller is
//     ErrGone. Which process is asked about is exact.
//   - Linux 6.5 to 6.15: SO_PEERPIDFD gives a pidfd while the caller lives or
//     is a zombie; once it is reaped the kernel answers EINVAL (pidfd_prepare
//     finds no task; where pidfd_prepare says ESRCH, sock.c turns it back
//     into EINVAL for dbus-broker; a kernel that passes ESRCH on is treated
//     alike). Either is ErrGone: the pid number may name another process by
//     then, and it is not opened. Exact.
//   - Before Linux 6.5 there is no SO_PEERPIDFD (ENOPROTOOPT), and only there
//     is the pid opened by number (pidfd_open, Linux 5.3), with its start
//     time read next. A process that takes the pid after that is caught; one
//     that took it between the caller's exit and this point is not: it is
//     taken for the caller. Getting a pid back needs the pid space to wrap
//     around (up to kernel.pid_max, 4194304 where systemd sets it) in that
//     window. pidfd_open failing with ESRCH is ErrGone. Before Linux 5.3
//     (ENOSYS), or where a seccomp filter refuses pidfd_open (EPERM: an
//     older snapd's), the start time alone tells, with the same window.
//
// Any other answer of SO_PEERPIDFD is an error: the caller is not identified.
package peer

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrGone: the calling process exited, or its pid now names another process,
// before it could be identified. Such a caller is refused: its pid says nothing
// about who holds the socket now.
var ErrGone = errors.New("the calling process is gone (it exited or its pid was reused)")

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5), not yet in x/sys/unix.
const soPeerPidfd = 77

// Peer is the process at the other end of an accepted connection, as the
// kernel reported it.
type Peer struct {
	PID  int32
	UID  uint32
	GID  uint32
	Addr string // the caller's socket address; abstract names start with "@"

	pidfd int    // -1 when neither SO_PEERPIDFD nor pidfd_open gave one
	start uint64 // start time of PID in clock ticks after boot (/proc/PID/stat field 22)
	proc  string // procfs root, "/proc" but for tests
}

// FromConn reads the peer of c. The caller must Close the Peer.
func FromConn(c *net.UnixConn) (*Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("cannot get the socket of a connection: %w", err)
	}
	p := &Peer{pidfd: -1, proc: "/proc"}
	var cred *unix.Ucred
	var credErr error
	peerPidfd, peerPidfdErr := -1, error(nil)
	raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr != nil {
			return
		}
		peerPidfd, peerPidfdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, soPeerPidfd)
		if sa, err := unix.Getpeername(int(fd)); err == nil {
			if u, ok := sa.(*unix.SockaddrUnix); ok {
				p.Addr = u.Name
			}
		}
	})
	if credErr != nil {
		return nil, fmt.Errorf("cannot read the caller's credentials (SO_PEERCRED): %w", credErr)
	}
	p.PID, p.UID, p.GID = cred.Pid, cred.Uid, cred.Gid
	if p.PID <= 0 {
		// The caller is in another pid namespace, which the kernel cannot name.
		if peerPidfdErr == nil {
			unix.Close(peerPidfd)
		}
		return nil, fmt.Errorf("cannot identify the caller: its pid is not visible from here (it runs in another pid namespace)")
	}
	p.pidfd, err = pidfdOf(peerPidfd, peerPidfdErr, func() (int, error) { return unix.PidfdOpen(int(p.PID), 0) })
	if errors.Is(err, ErrGone) {
		// Not an error of FromConn: the caller is told it was refused as
		// gone when it is resolved (Same and Resolve report ErrGone).
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	if st, err := readStat(p.proc, p.PID); err == nil {
		p.start = st.start
	} // else p.start stays 0: Same and Resolve report the caller as gone
	return p, nil
}

// pidfdOf returns a pidfd of the caller from SO_PEERPIDFD's answer (fd, or
// the error err), opening the caller's pid with open only where the kernel has
// no SO_PEERPIDFD. It returns -1 and no error where the kernel has no pidfds at
// all (before Linux 5.3), and ErrGone where the kernel says the caller is gone.
func pidfdOf(fd int, err error, open func() (int, error)) (int, error) {
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ESRCH):
		// The caller was reaped (Linux 6.5 to 6.15). Its pid may name another
		// process by now: never open it by number.
		return -1, ErrGone
	case !errors.Is(err, unix.ENOPROTOOPT):
		return -1, fmt.Errorf("cannot get a pidfd of the caller (SO_PEERPIDFD): %w", err)
	}
	// Before Linux 6.5. The pid may already name another process; the start
	// time read next, and checked again in Same, catches only a reuse after
	// this point (see the package doc).
	pfd, err := open()
	switch {
	case err == nil:
		return pfd, nil
	case errors.Is(err, unix.ESRCH), errors.Is(err, unix.EINVAL):
		// No process has the pid (or only a thread of one does): the
		// caller is gone.
		return -1, ErrGone
	case errors.Is(err, unix.ENOSYS):
		return -1, nil // before Linux 5.3: the start time alone tells
	case errors.Is(err, unix.EPERM):
		// A seccomp filter without pidfd_open, which answers EPERM
		// (snapd 2.57's template for a strict snap): as before Linux
		// 5.3, the start time alone tells, with the window the package
		// doc says every kernel before 6.5 has.
		return -1, nil
	}
	return -1, fmt.Errorf("cannot open a pidfd of the caller by its pid: %w", err)
}

// PidFD is the caller's pidfd, -1 where the kernel gives none; it stays the
// Peer's (Close closes it).
func (p *Peer) PidFD() int { return p.pidfd }

// Close releases the pidfd.
func (p *Peer) Close() error {
	if p.pidfd >= 0 {
		err := unix.Close(p.pidfd)
		p.pidfd = -1
		return err
	}
	return nil
}

// Same reports whether the process that connected still runs, under the same
// uid, and is not a zombie; nil if so, ErrGone (or a uid change) if not.
func (p *Peer) Same() error {
	if p.start == 0 {
		return ErrGone
	}
	if p.pidfd >= 0 {
		// A pidfd polls readable once its process has exited (zombie or
		// reaped), even if the pid has been given to another process since.
		fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		for errors.Is(err, unix.EINTR) {
			n, err = unix.Poll(fds, 0)
		}
		if err != nil {
			return fmt.Errorf("cannot check that the caller still runs: %w", err)
		}
		if n > 0 {
			return ErrGone
		}
	} else {
		// No pidfd: the start time tells a reused pid from the caller.
		st, err := readStat(p.proc, p.PID)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return ErrGone
			}
			return err
		}
		if st.start != p.start || st.state == 'Z' || st.state == 'X' {
			return ErrGone
		}
	}
	uid, state, err := readStatus(p.proc, p.PID)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ErrGone
		}
		return err
	}
	if state == 'Z' || state == 'X' {
		// Its leader exited; its other threads are on their way.
		return ErrGone
	}
	if uid != p.UID {
		return fmt.Errorf("the calling process changed its uid from %d to %d after it connected", p.UID, uid)
	}
	return nil
}

type stat struct {
	state byte
	start uint64
}

// readStat reads the state and start time of pid from /proc/PID/stat.
func readStat(proc string, pid int32) (stat, error) {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", proc, pid))
	if err != nil {
		return stat{}, err
	}
	return parseStat(data)
}

// parseStat parses /proc/PID/stat. The command name (field 2) is in
// parentheses and may itself hold spaces and parentheses, so fields are
// counted from the last ")".
func parseStat(data []byte) (stat, error) {
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("cannot parse /proc stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); start time is field 22, f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("cannot parse /proc stat: %d fields after the command name", len(f))
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil || start == 0 {
		return stat{}, fmt.Errorf("cannot parse /proc stat: start time %q", f[19])
	}
	return stat{state: f[0][0], start: start}, nil
}

// readStatus reads the effective uid and the state of pid from
// /proc/PID/status.
func readStatus(proc string, pid int32) (uid uint32, state byte, err error) {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/status", proc, pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStatus(data)
}

func parseStatus(data []byte) (uid uint32, state byte, err error) {
	var haveUID bool
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "State:"); ok {
			if f := strings.Fields(rest); len(f) > 0 && len(f[0]) == 1 {
				state = f[0][0]
			}
			continue
		}
		rest, ok := strings.CutPrefix(line, "Uid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			break
		}
		u, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil {
			break
		}
		uid, haveUID = uint32(u), true
	}
	if !haveUID || state == 0 {
		return 0, 0, fmt.Errorf("cannot parse /proc status: no State or Uid line")
	}
	return uid, state, nil
}
