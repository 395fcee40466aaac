//go:build integration

package testbed

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// SWTPM is a software TPM 2.0 (swtpm) on loopback: commands on Port, control on
// CtrlPort. Two of them are two different TPMs.
type SWTPM struct {
	Port, CtrlPort int
	StateDir       string
	proc           *Process
}

// StartSWTPM starts a fresh TPM (startup already done) and stops it at cleanup.
func StartSWTPM(t testing.TB) *SWTPM {
	t.Helper()
	Require(t, "swtpm", "swtpm_ioctl")
	s := &SWTPM{StateDir: t.TempDir()}
	s.Port = FreeLoopbackPort(t)
	s.CtrlPort = s.Port + 1
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+s.StateDir,
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.Port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.CtrlPort),
		"--flags", "not-need-init,startup-clear")
	s.proc = StartProcess(t, "swtpm", cmd)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(s.Port))
		if err == nil {
			c.Close()
			return s
		}
		if s.proc.Exited() || time.Now().After(deadline) {
			t.Fatalf("swtpm did not listen on 127.0.0.1:%d:\n%s", s.Port, s.proc.LogTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid is swtpm's process id.
func (s *SWTPM) Pid() int { return s.proc.Pid() }

// TCTI is the tpm2-tools transport string for this TPM.
func (s *SWTPM) TCTI() string { return fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", s.Port) }

// Stop ends swtpm and waits for it.
func (s *SWTPM) Stop(t testing.TB) {
	t.Helper()
	s.proc.stop(t, syscall.SIGTERM)
}

// Reset is a simulated reboot: the TPM is re-initialised (PCRs reset); the caller
// must send TPM2_Startup(Clear) before other commands.
func (s *SWTPM) Reset(t testing.TB) {
	t.Helper()
	out, err := exec.Command("swtpm_ioctl", "-i", "--tcp", "127.0.0.1:"+strconv.Itoa(s.CtrlPort)).CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_ioctl -i: %v: %s", err, out)
	}
}
