package seal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Limits and environment of one run of the key material hook.
const (
	// hookStdoutLimit bounds the key material: a hook printing more is broken.
	hookStdoutLimit = 4 << 10
	// hookStderrLimit bounds the diagnostics kept for the error message; the rest
	// is read and dropped so a chatty hook is not killed by a full pipe.
	hookStderrLimit = 4 << 10
	// minIKMSize is the least key material accepted: 128 bits.
	minIKMSize = 16
	// defaultHookTimeout applies when the configured timeout is not positive.
	defaultHookTimeout = 10 * time.Second
	// hookWaitDelay bounds how long output pipes held open by a stray child of
	// the hook may delay the run once the hook has exited or been killed.
	hookWaitDelay = 2 * time.Second
	// hookPath is the whole environment of the hook, and the PATH of the
	// PKCS#11 helper's.
	hookPath = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
)

// checkHookCommand reports a command that cannot be run, wrapping ErrHook.
func checkHookCommand(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return fmt.Errorf("%w: no hook command is configured; set seal.ikm_hook.command", ErrHook)
	}
	if !filepath.IsAbs(argv[0]) {
		return fmt.Errorf("%w: hook path %q is not absolute; set seal.ikm_hook.command to an absolute path", ErrHook, argv[0])
	}
	return nil
}

// runHook runs the hook of argv once and returns its key material: stdout with one
// trailing newline removed. The caller must clear the returned slice. No error
// quotes stdout; stderr, which is diagnostics, is quoted (bounded).
func runHook(ctx context.Context, argv []string, timeout time.Duration) ([]byte, error) {
	if err := checkHookCommand(argv); err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = defaultHookTimeout
	}
	path := argv[0]
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	stdout := &limitedBuffer{buf: make([]byte, 0, hookStdoutLimit), failOnOverflow: true}
	stderr := &limitedBuffer{buf: make([]byte, 0, hookStderrLimit)}
	cmd := childCommand(hctx, []string{hookPath}, path, argv[1:]...)
	cmd.Stdin = nil // the null device
	cmd.Stdout = stdout
	cmd.Stderr = stderr

	fail := func(format string, args ...any) ([]byte, error) {
		clear(stdout.buf[:cap(stdout.buf)])
		msg := fmt.Sprintf(format, args...)
		if d := stderr.diagnostics(); d != "" {
			msg += "; its stderr: " + d
		}
		return nil, fmt.Errorf("%w: %s %s", ErrHook, path, msg)
	}

	if err := cmd.Start(); err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fail("does not exist (or the interpreter its #! line names does not)")
		case errors.Is(err, fs.ErrPermission):
			return fail("cannot be executed (permission denied): is it executable?")
		}
		return fail("cannot be started: %v", err)
	}
	err := cmd.Wait()
	var exitErr *exec.ExitError
	switch {
	case stdout.overflow:
		return fail("printed more than %d bytes; at most %d are allowed", hookStdoutLimit, hookStdoutLimit)
	case err == nil:
		// Exited 0 with all its output read, even if just at the deadline.
	case ctx.Err() != nil:
		// The caller gave up (edgeseal is stopping): not the hook's fault.
		clear(stdout.buf[:cap(stdout.buf)])
		return nil, fmt.Errorf("key material hook %s was interrupted: %w", path, ctx.Err())
	case hctx.Err() != nil:
		return fail("did not finish within %s (seal.ikm_hook.timeout)", timeout)
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fail("was killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
		}
		return fail("exited with status %d", exitErr.ExitCode())
	case errors.Is(err, exec.ErrWaitDelay):
		return fail("exited but left a process holding its output open")
	default:
		return fail("failed: %v", err)
	}

	ikm := stdout.buf
	if n := len(ikm); n > 0 && ikm[n-1] == '\n' {
		ikm = ikm[:n-1]
	}
	if len(ikm) < minIKMSize {
		return fail("printed %d bytes; at least %d are needed (a final newline does not count)", len(ikm), minIKMSize)
	}
	return ikm, nil
}

// limitedBuffer keeps at most cap(buf) bytes in place, never reallocating, so
// that clearing buf wipes every copy this package made of what it held.
type limitedBuffer struct {
	buf []byte
	// failOnOverflow makes a write past the limit fail, so the writer stops
	// (the hook then gets EPIPE); otherwise the excess is dropped.
	failOnOverflow bool
	overflow       bool
}

var errOutputTooLarge = errors.New("output exceeds its limit")

func (b *limitedBuffer) Write(p []byte) (int, error) {
	room := cap(b.buf) - len(b.buf)
	if len(p) <= room {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	b.buf = append(b.buf, p[:room]...)
	b.overflow = true
	if b.failOnOverflow {
		return room, errOutputTooLarge
	}
	return len(p), nil
}

// diagnostics returns the captured text quoted on one line, marked if cut short.
func (b *limitedBuffer) diagnostics() string {
	s := strings.TrimSpace(string(b.buf))
	if s == "" {
		return ""
	}
	q := fmt.Sprintf("%q", s)
	if b.overflow {
		q += " (cut at " + fmt.Sprint(hookStderrLimit) + " bytes)"
	}
	return q
}
