package exeid

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// serve runs a Server for uid on a socket of its own and returns its path.
func serve(t testing.TB, uid uint32) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "exeid.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := &Server{AllowUID: uid, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		ln.Close()
	})
	return sock
}

// child starts the executable exe (a copy of sleep), and returns its pidfd.
func child(t testing.TB, exe string) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command(exe, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return cmd, fd
}

// copyOf copies the system's sleep to a file of the test's, with extra bytes
// appended (another executable that runs the same).
func copyOf(t testing.TB, extra string) (path, sum string) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, extra...)
	path = filepath.Join(t.TempDir(), "sleep")
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	return path, hex.EncodeToString(h[:])
}

func TestTheHelperAnswersTheDigestOfTheFileAProcessRuns(t *testing.T) {
	sock := serve(t, uint32(os.Getuid()))
	a, sumA := copyOf(t, "")
	b, sumB := copyOf(t, "another build")
	_, fdA := child(t, a)
	_, fdB := child(t, b)
	for _, tc := range []struct {
		fd   int
		want string
	}{{fdA, sumA}, {fdB, sumB}, {fdA, sumA}} {
		got, err := Digest(sock, tc.fd, 5*time.Second)
		if err != nil || got != tc.want {
			t.Errorf("Digest = %q, %v; want %s", got, err, tc.want)
		}
	}
}

func TestAFileReplacedAtItsPathIsNotWhatTheProcessRuns(t *testing.T) {
	sock := serve(t, uint32(os.Getuid()))
	path, sum := copyOf(t, "")
	_, fd := child(t, path)
	t.Log("the path now names another file (rename over it, as a package update or an attacker does)")
	other, _ := copyOf(t, "the replacement")
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	got, err := Digest(sock, fd, 5*time.Second)
	if err != nil || got != sum {
		t.Errorf("Digest = %q, %v; want the digest of the file the process started from, %s", got, err, sum)
	}
}

func TestAProcessThatExitedIsGone(t *testing.T) {
	sock := serve(t, uint32(os.Getuid()))
	path, _ := copyOf(t, "")
	cmd, fd := child(t, path)
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := Digest(sock, fd, 5*time.Second); !errors.Is(err, ErrGone) {
		t.Errorf("err = %v, want ErrGone", err)
	}
}

func TestADescriptorThatIsNotAPidfdIsRefused(t *testing.T) {
	sock := serve(t, uint32(os.Getuid()))
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Digest(sock, int(f.Fd()), 5*time.Second); !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), "not a pidfd") {
		t.Errorf("err = %v, want a refusal naming the descriptor", err)
	}
}

func TestAPeerOfAnotherUserGetsNoAnswer(t *testing.T) {
	sock := serve(t, uint32(os.Getuid())+1)
	path, _ := copyOf(t, "")
	_, fd := child(t, path)
	if sum, err := Digest(sock, fd, 5*time.Second); err == nil {
		t.Fatalf("another user's request was answered: %s", sum)
	}
}

func TestARequestWithoutOneByteAndOnePidfdIsRefused(t *testing.T) {
	sock := serve(t, uint32(os.Getuid()))
	path, _ := copyOf(t, "")
	_, fd1 := child(t, path)
	_, fd2 := child(t, path)
	for name, send := range map[string]func(*net.UnixConn) error{
		"no descriptor": func(c *net.UnixConn) error { _, err := c.Write([]byte{request}); return err },
		"two descriptors": func(c *net.UnixConn) error {
			_, _, err := c.WriteMsgUnix([]byte{request}, unix.UnixRights(fd1, fd2), nil)
			return err
		},
		"another byte": func(c *net.UnixConn) error {
			_, _, err := c.WriteMsgUnix([]byte{'?'}, unix.UnixRights(fd1), nil)
			return err
		},
	} {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := send(c); err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(io.LimitReader(c, maxReply))
		c.Close()
		if !strings.Contains(string(data), `"error"`) || strings.Contains(string(data), "sha256") {
			t.Errorf("%s: answered %q, want a refusal", name, data)
		}
	}
}

func TestTheHelperExitsWhenIdle(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "exeid.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Server{AllowUID: uint32(os.Getuid()), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), IdleExit: 200 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), ln) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the helper did not exit when idle")
	}
}

func TestManyQuestionsAtOnceAboutALargeExecutableHashItOnceInBoundedMemory(t *testing.T) {
	sock := serve(t, uint32(os.Getuid()))
	path, _ := copyOf(t, "")
	// Sparse: 200 MiB read, no disk used.
	if err := os.Truncate(path, 200<<20); err != nil {
		t.Fatal(err)
	}
	_, fd := child(t, path)
	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > peak.Load() {
					peak.Store(ms.HeapAlloc)
				}
			}
		}
	}()
	var wg sync.WaitGroup
	sums := make([]string, 64)
	errs := make([]error, 64)
	for i := range sums {
		wg.Add(1)
		go func() { defer wg.Done(); sums[i], errs[i] = Digest(sock, fd, 10*time.Second) }()
	}
	wg.Wait()
	close(stop)
	for i := range sums {
		if errs[i] != nil || sums[i] != sums[0] {
			t.Fatalf("answer %d: %q, %v; want %q", i, sums[i], errs[i], sums[0])
		}
	}
	if p := peak.Load(); p > 8<<20 {
		t.Errorf("64 questions at once took the heap to %d MiB", p>>20)
	}

	t.Log("an executable over the bound is refused before it is read")
	big, _ := copyOf(t, "")
	if err := os.Truncate(big, maxExecutable+1); err != nil {
		t.Fatal(err)
	}
	_, bfd := child(t, big)
	t0 := time.Now()
	if _, err := Digest(sock, bfd, 10*time.Second); !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("err = %v, want a refusal naming the bound", err)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("the refusal took %v: the file was read", took)
	}
}
