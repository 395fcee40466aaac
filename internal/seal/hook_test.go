package seal

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
)

// hookIKM is printed by the hooks of these tests; no error may quote it.
const hookIKM = "hookikm-5f1e0c7a9b2d4e6f"

func TestHookFailuresWrapErrHook(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		argv    func(t *testing.T) []string
		timeout time.Duration
		want    []string // in the error message, besides the hook's path
	}{{
		name: "a hook exiting 1 is reported with its status and stderr",
		argv: func(t *testing.T) []string {
			return []string{writeHook(t, "printf '%s' '"+hookIKM+"'; echo 'TPM not ready' >&2; exit 1")}
		},
		want: []string{"exited with status 1", `its stderr: "TPM not ready"`},
	}, {
		name: "a hook printing nothing is refused",
		argv: func(t *testing.T) []string { return []string{writeHook(t, "exit 0")} },
		want: []string{"printed 0 bytes; at least 16 are needed"},
	}, {
		name: "a hook printing 10 bytes is refused",
		argv: func(t *testing.T) []string { return []string{writeHook(t, "printf 0123456789")} },
		want: []string{"printed 10 bytes; at least 16 are needed"},
	}, {
		name: "a hook printing 15 bytes and a newline is refused",
		argv: func(t *testing.T) []string { return []string{writeHook(t, "echo 0123456789abcde")} },
		want: []string{"printed 15 bytes; at least 16 are needed"},
	}, {
		name: "a hook printing 5000 bytes is refused",
		argv: func(t *testing.T) []string {
			return []string{writeHook(t, "yes '"+hookIKM+"' | head -c 5000")}
		},
		want: []string{"printed more than 4096 bytes; at most 4096 are allowed"},
	}, {
		name: "a hook printing endlessly is stopped",
		argv: func(t *testing.T) []string { return []string{writeHook(t, "yes '"+hookIKM+"'")} },
		want: []string{"printed more than 4096 bytes"},
	}, {
		name: "a hook sleeping past its timeout is killed",
		argv: func(t *testing.T) []string {
			return []string{writeHook(t, "printf '%s' '"+hookIKM+"'; echo waiting for TPM >&2; sleep 30")}
		},
		timeout: 200 * time.Millisecond,
		want:    []string{"did not finish within 200ms (seal.ikm_hook.timeout)", `its stderr: "waiting for TPM"`},
	}, {
		name: "a hook killed by a signal is reported with the signal",
		argv: func(t *testing.T) []string { return []string{writeHook(t, "kill -KILL $$")} },
		want: []string{"was killed by signal 9 (killed)"},
	}, {
		name: "a hook that is not executable is reported",
		argv: func(t *testing.T) []string { return []string{writeScript(t, "echo 0123456789abcdef0123", 0o644)} },
		want: []string{"cannot be executed (permission denied)"},
	}, {
		name: "a missing hook is reported",
		argv: func(t *testing.T) []string { return []string{filepath.Join(dir, "no-such-hook")} },
		want: []string{"does not exist"},
	}, {
		name: "a hook with a missing interpreter is reported",
		argv: func(t *testing.T) []string {
			path := filepath.Join(t.TempDir(), "hook")
			if err := os.WriteFile(path, []byte("#!/no/such/interpreter\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			return []string{path}
		},
		want: []string{"does not exist (or the interpreter"},
	}, {
		name: "a relative hook path is refused",
		argv: func(t *testing.T) []string { return []string{"ikm-hook"} },
		want: []string{`hook path "ikm-hook" is not absolute`},
	}, {
		name: "a dot-relative hook path is refused",
		argv: func(t *testing.T) []string { return []string{"./bin/ikm-hook"} },
		want: []string{`hook path "./bin/ikm-hook" is not absolute`},
	}, {
		name: "an empty command is refused",
		argv: func(t *testing.T) []string { return nil },
		want: []string{"no hook command is configured"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			argv := tc.argv(t)
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			s := NewIKMHook(config.IKMHook{Command: argv, Timeout: config.Duration(timeout)})
			start := time.Now()
			_, err := s.Seal(t.Context(), []byte("the Vault unseal key"))
			if took := time.Since(start); took > timeout+3*time.Second {
				t.Errorf("took %s", took)
			}
			if !errors.Is(err, ErrHook) {
				t.Fatalf("got %v, want ErrHook", err)
			}
			msg := err.Error()
			t.Log(msg)
			if len(argv) > 0 && !strings.Contains(msg, argv[0]) {
				t.Errorf("error %q does not name the hook %s", msg, argv[0])
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if strings.Contains(msg, hookIKM) || strings.Contains(msg, "0123456789") {
				t.Errorf("error %q quotes the hook's stdout", msg)
			}
		})
	}
}

func TestHookTimeoutKillsWhatTheHookStarted(t *testing.T) {
	// A background child keeps stdout open; the whole process group must die.
	pidFile := filepath.Join(t.TempDir(), "pid")
	hook := writeHook(t, `sleep 60 & echo $! > "$1"; wait`)
	s := NewIKMHook(config.IKMHook{Command: []string{hook, pidFile}, Timeout: config.Duration(200 * time.Millisecond)})
	start := time.Now()
	_, err := s.Seal(t.Context(), []byte("k"))
	if !errors.Is(err, ErrHook) || !strings.Contains(err.Error(), "did not finish within") {
		t.Fatalf("got %v, want a timeout", err)
	}
	if took := time.Since(start); took > hookWaitDelay {
		t.Errorf("took %s: the hook's child held the run open", took)
	}
	requireGone(t, pidFile)
}

// requireGone waits up to 2s for the process whose pid is in pidFile to end.
func requireGone(t *testing.T, pidFile string) {
	t.Helper()
	pid, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		// A zombie still has /proc/<pid>; its state is Z.
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child %s still runs", strings.TrimSpace(string(pid)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHookRunsWithoutShellEnvironmentOrStdin(t *testing.T) {
	t.Setenv("EDGESEAL_TEST_LEAK", "leaked")
	out := filepath.Join(t.TempDir(), "out")
	// Records its arguments, environment and stdin (which must be empty at once),
	// then prints key material.
	hook := writeHook(t, `out=$1; shift
for a in "$@"; do echo "arg=$a"; done > "$out"
env | sed 's/^/env=/' >> "$out"
echo "stdin=$(cat | wc -c)" >> "$out"
echo "cwd=$(pwd)" >> "$out"
echo 0123456789abcdef0123`)
	s := NewIKMHook(config.IKMHook{Command: []string{hook, out, "two words", "$HOME", "*"}, Timeout: config.Duration(5 * time.Second)})
	if _, err := s.Seal(t.Context(), []byte("k")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	requireSawExactly(t, "hook", got, "arg=two words", "arg=$HOME", "arg=*", "env="+hookPath, "stdin=0", "cwd=/")
}

// requireSawExactly checks that a child's record, lines of what it saw
// (env=NAME=VALUE for its environment), holds the lines of want and nothing
// else but the variables a shell sets itself.
func requireSawExactly(t *testing.T, who string, record []byte, want ...string) {
	t.Helper()
	missing := map[string]bool{}
	for _, l := range want {
		missing[l] = true
	}
	for _, l := range strings.Split(strings.TrimSpace(string(record)), "\n") {
		switch {
		case missing[l]:
			delete(missing, l)
		case strings.HasPrefix(l, "env=PWD=") || strings.HasPrefix(l, "env=SHLVL=") || strings.HasPrefix(l, "env=_="):
			// set by the shell itself
		default:
			t.Errorf("%s saw unexpected %q", who, l)
		}
	}
	for l := range missing {
		t.Errorf("%s did not see %q", who, l)
	}
}

func TestHookStderrIsBounded(t *testing.T) {
	hook := writeHook(t, "yes 'diagnostic line' | head -c 100000 >&2; exit 3")
	_, err := hookSealer(hook).Seal(t.Context(), []byte("k"))
	if !errors.Is(err, ErrHook) || !strings.Contains(err.Error(), "exited with status 3") {
		t.Fatalf("got %v", err)
	}
	if n := len(err.Error()); n > hookStderrLimit*2+500 {
		t.Errorf("error is %d bytes long", n)
	}
	if !strings.Contains(err.Error(), "(cut at 4096 bytes)") {
		t.Errorf("error does not say stderr was cut: %.200s", err)
	}
}

func TestHookInterruptedByCallerIsNotAHookFailure(t *testing.T) {
	hook := writeHook(t, "sleep 30")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := hookSealer(hook).Seal(ctx, []byte("k"))
	if err == nil || errors.Is(err, ErrHook) || !strings.Contains(err.Error(), "was interrupted") {
		t.Fatalf("got %v, want an interruption that is not ErrHook", err)
	}
}
