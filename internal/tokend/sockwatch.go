package tokend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The socket's path can stop being the provider's socket while the provider
// holds the socket: whoever may write the directory may remove the file and
// bind a socket of its own there, and clients then talk to that. In the snap,
// every consumer connected to the tokend content slot may write the directory
// (snapd gives a writable share "rwklix" on everything in it; AppArmor needs
// write on a socket's path to connect to it). Clients defend themselves
// (tokenclient checks each token with Vault); the provider notices, says so
// in the journal and stops serving that socket; when it serves none any more it
// exits, so that the unit shows failed and an operator restarts the socket
// (systemd removes whatever is at the path when it binds). In the snap each
// consumer slot has a socket of its own: a consumer that replaces its own
// socket costs only itself, and the provider serves the others on.

// ErrSocketReplaced: the provider's socket path leads to another file than the
// socket systemd handed it.
var ErrSocketReplaced = errors.New("the token socket's path no longer leads to this provider's socket")

// diagWarned: the journal has been told that sock_diag is refused here.
var diagWarned atomic.Bool

// SocketCheckInterval is how often WatchSocket looks at the socket's path.
const SocketCheckInterval = time.Second

// WatchSocket checks now, and every SocketCheckInterval until ctx ends, that
// the path ln is bound to still is ln's socket. The context it returns ends
// when it is not, with an error wrapping ErrSocketReplaced as its cause
// (context.Cause), after an error line in the journal. Serve with that
// context, and return the cause.
func WatchSocket(ctx context.Context, ln *net.UnixListener, log *slog.Logger) (context.Context, context.CancelFunc) {
	path := ln.Addr().String()
	if path == "" || path[0] == '@' {
		return context.WithCancel(ctx)
	}
	return watchSocket(ctx, &sockWatch{path: path, bound: func() (fileID, error) { return boundFile(ln) }}, log)
}

func watchSocket(ctx context.Context, w *sockWatch, log *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	path := w.path
	check := func() bool {
		err := w.check()
		if err == nil {
			return true
		}
		log.Error("the token socket was replaced: another process answers on its path, and clients that do not check "+
			"their token (tokenclient does) may take that process's answers; no longer serving it (the provider exits "+
			"when it serves no socket). Find who wrote the path, then restart the socket: "+
			"systemctl restart edgeseal-tokend.socket, or snap restart edgeseal.tokend",
			"socket", path, "error", err)
		cancel(err)
		return false
	}
	if !check() {
		return ctx, func() { cancel(nil) }
	}
	if w.baseline != nil && diagWarned.CompareAndSwap(false, true) {
		// Once per process: the snap's provider has a socket per slot, and
		// the sandbox refuses sock_diag for every one alike.
		log.Warn("cannot ask the kernel which file a token socket is bound to (sock_diag); "+
			"watching each socket's path for a change from now on", "socket", path, "error", w.diagErr)
	}
	go func() {
		t := time.NewTicker(SocketCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !check() {
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}

// fileID is a file's device and inode as stat(2) gives them.
type fileID struct{ dev, ino uint64 }

type sockWatch struct {
	path  string
	bound func() (fileID, error) // the file the socket is bound to

	// When the kernel will not say which file the socket is bound to, the
	// file at the path when watching began stands for it.
	baseline *fileID
	diagErr  error
}

func (w *sockWatch) check() error {
	at, err := statID(w.path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrSocketReplaced, w.path, err)
	}
	if w.baseline == nil {
		bound, err := w.bound()
		if err == nil {
			if bound.dev != at.dev || bound.ino != uint64(uint32(at.ino)) { // sock_diag's inode is 32 bits
				return fmt.Errorf("%w: %s is %s, this provider's socket is inode %d", ErrSocketReplaced, w.path, describe(w.path, at), bound.ino)
			}
			return nil
		}
		w.baseline, w.diagErr = &at, err
		return nil
	}
	if *w.baseline != at {
		return fmt.Errorf("%w: %s is %s since the provider started", ErrSocketReplaced, w.path, describe(w.path, at))
	}
	return nil
}

func statID(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fileID{}, err
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// describe says what is at path, for the journal.
func describe(path string, id fileID) string {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return "gone"
	}
	kind := "a file"
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		kind = "another socket"
	case unix.S_IFLNK:
		kind = "a symbolic link"
	case unix.S_IFDIR:
		kind = "a directory"
	}
	return fmt.Sprintf("%s (inode %d, owner uid %d)", kind, id.ino, st.Uid)
}

// boundFile asks the kernel (NETLINK_SOCK_DIAG, UDIAG_SHOW_VFS) which file
// ln's socket is bound to.
func boundFile(ln *net.UnixListener) (fileID, error) {
	var sockIno uint64
	rc, err := ln.SyscallConn()
	if err != nil {
		return fileID{}, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		serr = unix.Fstat(int(fd), &st)
		sockIno = st.Ino
	}); err != nil {
		return fileID{}, err
	}
	if serr != nil {
		return fileID{}, fmt.Errorf("cannot stat the listening socket: %w", serr)
	}
	return unixDiagVFS(uint32(sockIno))
}

// From linux/unix_diag.h and linux/sock_diag.h (x/sys/unix lacks them).
const (
	udiagShowVFS = 0x2
	attrVFS      = 1  // UNIX_DIAG_VFS
	diagReqLen   = 24 // struct unix_diag_req
	diagMsgLen   = 16 // struct unix_diag_msg
)

// unixDiagVFS returns the device and inode of the file the Unix socket of
// sockfs inode ino is bound to.
func unixDiagVFS(ino uint32) (fileID, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fileID{}, fmt.Errorf("cannot open a sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	req := make([]byte, unix.NLMSG_HDRLEN+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1) // sequence
	b := req[unix.NLMSG_HDRLEN:]
	b[0] = unix.AF_UNIX
	ne.PutUint32(b[4:], ^uint32(0)) // every state
	ne.PutUint32(b[8:], ino)
	ne.PutUint32(b[12:], udiagShowVFS)
	ne.PutUint32(b[16:], ^uint32(0)) // no cookie
	ne.PutUint32(b[20:], ^uint32(0))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fileID{}, fmt.Errorf("cannot ask sock_diag: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fileID{}, fmt.Errorf("cannot read the answer of sock_diag: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return fileID{}, fmt.Errorf("cannot parse the answer of sock_diag: %w", err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if code := int32(ne.Uint32(m.Data)); code != 0 {
					return fileID{}, fmt.Errorf("sock_diag: %w", syscall.Errno(-code))
				}
			}
			return fileID{}, errors.New("sock_diag answered with an error")
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(m.Data) < diagMsgLen || ne.Uint32(m.Data[4:]) != ino {
				continue
			}
			// Attributes follow: struct rtattr {u16 len; u16 type}, value, 4-aligned.
			for a := m.Data[diagMsgLen:]; len(a) >= 4; {
				l := int(ne.Uint16(a[0:]))
				if l < 4 || l > len(a) {
					break
				}
				if ne.Uint16(a[2:]) == attrVFS && l >= 4+8 {
					kdev := ne.Uint32(a[8:]) // the kernel's dev_t: major << 20 | minor
					return fileID{ino: uint64(ne.Uint32(a[4:])), dev: unix.Mkdev(kdev>>20, kdev&0xfffff)}, nil
				}
				a = a[min((l+3)&^3, len(a)):]
			}
			return fileID{}, errors.New("the socket is bound to no file")
		}
	}
	return fileID{}, errors.New("sock_diag did not answer about the socket")
}
