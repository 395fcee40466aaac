package tokend

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen binds a listener at dir/tokend.sock, as systemd does for the provider.
func listen(t *testing.T, dir string) *net.UnixListener {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "tokend.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestTheKernelSaysWhichFileASocketIsBoundTo(t *testing.T) {
	// Given a listening socket at a path
	ln := listen(t, t.TempDir())
	// When sock_diag is asked which file it is bound to
	got, err := boundFile(ln)
	// Then it is the file at the path
	if err != nil {
		t.Fatalf("sock_diag: %v (the kernel needs CONFIG_UNIX_DIAG)", err)
	}
	at, err := statID(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got.dev != at.dev || got.ino != uint64(uint32(at.ino)) {
		t.Errorf("sock_diag says %+v, the path is %+v", got, at)
	}
}

// replace removes the socket at ln's path and binds another there, as a
// consumer with write access to the directory can.
func replace(t *testing.T, ln *net.UnixListener) {
	t.Helper()
	path := ln.Addr().String()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
}

func TestWatchSocketEndsTheContextWhenThePathIsReplaced(t *testing.T) {
	for _, c := range []struct {
		name   string
		before bool // replaced before the watch begins
		diag   bool // sock_diag answers
	}{
		{"replaced while watched", false, true},
		// The provider started after the replacement (a connection reached
		// its socket some other way): only the kernel can tell.
		{"replaced before the provider started", true, true},
		// Without sock_diag (a snap without network-observe): a change from
		// the file the watch began with.
		{"replaced while watched, without sock_diag", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Given the provider's socket
			ln := listen(t, t.TempDir())
			if c.before {
				replace(t, ln)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
			defer stop()
			w := &sockWatch{path: ln.Addr().String(), bound: func() (fileID, error) { return boundFile(ln) }}
			if !c.diag { // as where seccomp refuses a sock_diag socket
				w.bound = func() (fileID, error) { return fileID{}, errors.New("operation not permitted") }
			}
			watched, cancel := watchSocket(ctx, w, log)
			defer cancel()
			// When another process replaces it
			if !c.before {
				select {
				case <-watched.Done():
					t.Fatalf("the watch ended before the socket was replaced: %v\n%s", context.Cause(watched), logs.String())
				case <-time.After(2 * SocketCheckInterval):
				}
				replace(t, ln)
			}
			// Then the watch ends with ErrSocketReplaced, naming what is there
			select {
			case <-watched.Done():
			case <-ctx.Done():
				t.Fatal("the replacement went unnoticed")
			}
			// The check may fall between the intruder's unlink and its bind:
			// a path that leads nowhere is as much not the provider's socket.
			err := context.Cause(watched)
			if !errors.Is(err, ErrSocketReplaced) || !(strings.Contains(err.Error(), "another socket") || strings.Contains(err.Error(), "no such file")) {
				t.Errorf("cause %v", err)
			}
			if !strings.Contains(logs.String(), "the token socket was replaced") ||
				c.diag == strings.Contains(logs.String(), "cannot ask the kernel") {
				t.Errorf("journal:\n%s", logs.String())
			}
		})
	}
}

func TestWatchSocketLeavesTheProviderAloneWhileThePathIsItsSocket(t *testing.T) {
	ln := listen(t, t.TempDir())
	var logs bytes.Buffer
	watched, cancel := WatchSocket(context.Background(), ln, slog.New(slog.NewTextHandler(&logs, nil)))
	defer cancel()
	// a client connecting changes nothing
	if c, err := net.Dial("unix", ln.Addr().String()); err == nil {
		c.Close()
	}
	select {
	case <-watched.Done():
		t.Fatalf("the watch ended: %v", context.Cause(watched))
	case <-time.After(3 * SocketCheckInterval):
	}
	if logs.Len() != 0 {
		t.Errorf("journal:\n%s", logs.String())
	}
}
