package exeid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Server answers the token provider on its socket. Fields are inputs.
type Server struct {
	// AllowUID is the only uid whose requests are answered (the provider's
	// user); any other peer is closed on, with a journal line at most every
	// refusalEvery.
	AllowUID uint32
	// Proc is the procfs root; "" means /proc.
	Proc string
	Log  *slog.Logger
	// IdleExit ends Serve after this long without a connection (systemd's
	// socket starts the helper again); 0 never.
	IdleExit time.Duration

	mu          sync.Mutex
	cache       map[fileKey]string
	hashing     map[fileKey]chan struct{} // closed when that file's hash is done
	lastRefusal atomic.Int64              // unix nanoseconds of the last refusal logged
	served      atomic.Int64
	hashSlots   chan struct{}
}

// maxCache bounds the digests kept; past it the cache starts again.
const maxCache = 512

// maxConns bounds the connections served at once (more are closed at once:
// the provider asks one question per pinned caller, within its own bounds);
// maxHashes the files hashed at once (each reads through a 256 KiB buffer).
const (
	maxConns  = 64
	maxHashes = 2
)

// racyWindow: a file changed this recently is hashed but its digest not kept:
// a rewrite within a file system's time granularity (a kernel tick, vfat's 2 s)
// could leave its size and times as they were (git's "racy" rule).
const racyWindow = 2 * time.Second

// refusalEvery rate-limits the journal lines of refused peers.
const refusalEvery = time.Second

// requestTimeout bounds one connection.
const requestTimeout = 10 * time.Second

// Serve answers connections on ln until ctx ends or, with IdleExit, the
// helper has been idle that long.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	var active atomic.Int64
	go func() {
		<-ctx.Done()
		ln.SetDeadline(time.Unix(1, 0))
	}()
	for {
		if s.IdleExit > 0 {
			ln.SetDeadline(time.Now().Add(s.IdleExit))
		}
		// After the deadline is set: a stop that came before it would have
		// been overwritten by it.
		if ctx.Err() != nil {
			return nil
		}
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if active.Load() == 0 {
					s.Log.Info("idle: exiting", "answered", s.served.Load())
					return nil
				}
				continue
			}
			return fmt.Errorf("cannot accept a connection: %w", err)
		}
		if active.Load() >= maxConns {
			c.Close()
			s.refuse(nil, errors.New("too many connections at once"))
			continue
		}
		active.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer active.Add(-1)
			defer c.Close()
			s.serveConn(c)
		}()
	}
}

func (s *Server) serveConn(c *net.UnixConn) {
	c.SetDeadline(time.Now().Add(requestTimeout))
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	var cred *unix.Ucred
	var credErr error
	raw.Control(func(fd uintptr) { cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if credErr != nil || cred.Uid != s.AllowUID {
		s.refuse(cred, credErr)
		return
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return
	}
	fds, err := rights(oob[:oobn])
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	switch {
	case err != nil:
		s.answer(c, Reply{Error: err.Error()})
		return
	case n != 1 || buf[0] != request || flags&unix.MSG_CTRUNC != 0 || len(fds) != 1:
		s.answer(c, Reply{Error: "not a request: one byte and one pidfd"})
		return
	}
	sum, err := s.digest(fds[0], time.Now().Add(requestTimeout))
	switch {
	case errors.Is(err, ErrGone):
		s.answer(c, Reply{Gone: true})
	case errors.Is(err, ErrBusy):
		s.answer(c, Reply{Busy: true})
	case err != nil:
		s.answer(c, Reply{Error: err.Error()})
	default:
		s.served.Add(1)
		s.answer(c, Reply{SHA256: sum})
	}
}

// rights returns the file descriptors of the SCM_RIGHTS messages in oob.
func rights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("cannot parse the request's control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		f, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, f...)
	}
	return fds, nil
}

// digest is the SHA-256 of the executable the pidfd's process runs, given up
// at deadline (the provider has stopped waiting by then).
func (s *Server) digest(pidfd int, deadline time.Time) (string, error) {
	proc := s.Proc
	if proc == "" {
		proc = "/proc"
	}
	pid, err := pidOfPidfd(proc, pidfd)
	if err != nil {
		return "", err
	}
	fd, err := unix.Open(fmt.Sprintf("%s/%d/exe", proc, pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return "", ErrGone
	}
	if err != nil {
		return "", fmt.Errorf("cannot open the executable of pid %d: %w", pid, err)
	}
	defer unix.Close(fd)
	// The pid was the pidfd's process when its exe was opened only if that
	// process still runs now: a live pidfd pins its pid.
	if gone, err := exited(pidfd); err != nil || gone {
		if err == nil {
			err = ErrGone
		}
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("cannot stat the executable of pid %d: %w", pid, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("the executable of pid %d is not a regular file", pid)
	}
	if st.Size > maxExecutable {
		return "", fmt.Errorf("the executable of pid %d is larger than %d bytes", pid, maxExecutable)
	}
	key := keyOf(&st)
	// One hash of a file at a time: a request for a file being hashed waits
	// for that hash, then for a slot of its own if the digest was not kept.
	for {
		s.mu.Lock()
		sum, ok := s.cache[key]
		wait, busy := s.hashing[key]
		if !ok && !busy {
			if s.hashing == nil {
				s.hashing = map[fileKey]chan struct{}{}
			}
			wait = make(chan struct{})
			s.hashing[key] = wait
		}
		s.mu.Unlock()
		if ok {
			return sum, nil
		}
		if !busy {
			defer func() {
				s.mu.Lock()
				delete(s.hashing, key)
				s.mu.Unlock()
				close(wait)
			}()
			break
		}
		select {
		case <-wait:
		case <-time.After(time.Until(deadline)):
			return "", ErrBusy
		}
	}
	select {
	case s.slots() <- struct{}{}:
		defer func() { <-s.slots() }()
	case <-time.After(time.Until(deadline)):
		return "", fmt.Errorf("cannot hash the executable of pid %d: the helper is busy", pid)
	}
	sum, err := hashFile(fd, deadline)
	if err != nil {
		return "", fmt.Errorf("cannot hash the executable of pid %d: %w", pid, err)
	}
	// A file rewritten while it was read would be hashed half old, half new:
	// keep the digest only if the file did not change meanwhile.
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil || keyOf(&after) != key {
		return "", fmt.Errorf("the executable of pid %d changed while it was read", pid)
	}
	if racy(&after, time.Now()) {
		return sum, nil
	}
	s.mu.Lock()
	if s.cache == nil || len(s.cache) >= maxCache {
		s.cache = map[fileKey]string{}
	}
	s.cache[key] = sum
	s.mu.Unlock()
	return sum, nil
}

// slots is the semaphore of the hashes under way.
func (s *Server) slots() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hashSlots == nil {
		s.hashSlots = make(chan struct{}, maxHashes)
	}
	return s.hashSlots
}

// racy reports whether the file was changed within racyWindow of now: its
// digest is then not kept.
func racy(st *unix.Stat_t, now time.Time) bool {
	for _, t := range []unix.Timespec{st.Mtim, st.Ctim} {
		if now.Sub(time.Unix(t.Unix())) < racyWindow {
			return true
		}
	}
	return false
}

func (s *Server) answer(c *net.UnixConn, r Reply) {
	c.Write(encodeReply(r))
}

// refuse logs a refused peer, at most once every refusalEvery; the peer gets
// nothing but the closed connection.
func (s *Server) refuse(cred *unix.Ucred, err error) {
	now := time.Now().UnixNano()
	last := s.lastRefusal.Load()
	if now-last < int64(refusalEvery) || !s.lastRefusal.CompareAndSwap(last, now) {
		return
	}
	if err != nil {
		s.Log.Warn("refused a connection", "error", err)
		return
	}
	s.Log.Warn("refused a connection: only the token provider's user may ask", "pid", cred.Pid, "uid", cred.Uid, "allowed_uid", s.AllowUID)
}

// Run is edgeseal-exeid: it serves the socket systemd passed
// (edgeseal-exeid.socket) to allowUser, the provider's user, until ctx ends or
// it has been idle for idle.
func Run(ctx context.Context, log *slog.Logger, allowUser string, idle time.Duration) error {
	u, err := user.Lookup(allowUser)
	if err != nil {
		return fmt.Errorf("cannot look up the user allowed to ask (--allow-user %s): %w", allowUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return fmt.Errorf("cannot use user %s's uid %q", allowUser, u.Uid)
	}
	lns, err := activation.Listeners()
	if err != nil {
		return fmt.Errorf("cannot take the socket from systemd: %w", err)
	}
	if len(lns) != 1 {
		for _, l := range lns {
			if l != nil {
				l.Close()
			}
		}
		return fmt.Errorf("cannot serve: systemd passed %d sockets, want edgeseal-exeid.socket's one (start the socket, not the service)", len(lns))
	}
	ln, ok := lns[0].(*net.UnixListener)
	if !ok {
		lns[0].Close()
		return fmt.Errorf("cannot serve: the socket systemd passed is %T, not a Unix stream socket", lns[0])
	}
	defer ln.Close()
	log.Info("answering the token provider", "socket", ln.Addr().String(), "allowed_user", allowUser, "allowed_uid", uid, "pid", os.Getpid())
	s := &Server{AllowUID: uint32(uid), Log: log, IdleExit: idle}
	return s.Serve(ctx, ln)
}
