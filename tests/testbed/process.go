//go:build integration

package testbed

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a long-running program a test started (a server): its output goes
// to a log file, and cleanup ends it by pid and waits for it.
type Process struct {
	Name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// StartProcess starts cmd in its own process group (unless cmd.SysProcAttr says
// otherwise, e.g. Setsid) and ends it at cleanup.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("cannot start %s: %v", name, err)
	}
	f.Close()
	p := &Process{Name: name, cmd: cmd, log: f.Name(), done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t, syscall.SIGTERM) })
	return p
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill(t testing.TB) { p.stop(t, syscall.SIGKILL) }

// stop signals the process group, waits up to 10s, then SIGKILLs it.
func (p *Process) stop(t testing.TB, sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.Pid(), sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.Pid(), syscall.SIGKILL)
		<-p.done
	}
	// The group may have had other members; they must be gone too.
	if err := syscall.Kill(-p.Pid(), 0); err == nil {
		syscall.Kill(-p.Pid(), syscall.SIGKILL)
		t.Errorf("%s (pid %d) left processes in its group; killed them", p.Name, p.Pid())
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// LogTail is the last n lines of the process's output.
func (p *Process) LogTail(n int) string {
	data, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var portMu sync.Mutex
var portsGiven = map[int]bool{}

// FreeLoopbackPort returns a TCP port free on 127.0.0.1 (and the next one, for
// servers that take a pair), not handed out before in this test binary.
func FreeLoopbackPort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("cannot find a free loopback port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if portsGiven[port] || portsGiven[port+1] || !portFree(port+1) {
			continue
		}
		portsGiven[port], portsGiven[port+1] = true, true
		return port
	}
	t.Fatal("cannot find a free pair of loopback ports")
	return 0
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// Build builds the command pkg (a path in this module: ./cmd/NAME) into the
// test's temporary directory, statically, and returns the binary.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Dir = repoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cannot build %s: %v\n%s", pkg, err, out)
	}
	return bin
}
