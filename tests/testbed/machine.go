//go:build integration

package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bind is a host directory bound into the container.
type Bind struct {
	Host, Container string
	ReadOnly        bool
}

// MachineOptions describe a container. The same options boot it again on Reboot,
// so its bound directories are its persistent disk.
type MachineOptions struct {
	Name        string        // machine name; default derived from the test's name
	UsrOverlay  string        // host dir overlaid read-only on /usr (a `make install DESTDIR=X` tree's X/usr)
	Binds       []Bind        // host directories bound in
	Args        []string      // arguments for systemd inside, kernel-command-line style
	BootTimeout time.Duration // default 60s
	// CPU, when not empty, pins the container (systemd-nspawn and everything in
	// it) to these CPUs ("0"). snap-confine needs it on this test bed: kernel
	// 6.18 numbers mount namespaces from per-CPU ranges, so a namespace made on
	// one CPU can carry a lower number than an older one made on the other, and
	// the kernel then refuses to bind it into /run/snapd/ns as a possible loop
	// ("cannot preserve mount namespace ...: Invalid argument"; seen: always on
	// one CPU, never on the other). On one CPU the numbers only grow. Commands
	// run inside with Run and RunAs are pinned too.
	CPU string
}

// Machine is systemd as PID 1 in a systemd-nspawn container over the host's root:
// /usr is the host's (plus UsrOverlay), /etc and /var start empty (tmpfs).
type Machine struct {
	owner  testing.TB // the test that booted it: the container lives as long as it
	opts   MachineOptions
	proc   *Process
	leader int
	loops  string
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// Boot starts the container and waits until systemd inside says it is running
// (or degraded). Cleanup stops it and checks nothing is left behind.
func Boot(t testing.TB, opts MachineOptions) *Machine {
	t.Helper()
	Require(t, "systemd-nspawn", "nsenter", "setpriv")
	if opts.Name == "" {
		base := strings.Trim(unsafeName.ReplaceAllString(t.Name(), "-"), "-")
		if len(base) > 40 {
			base = base[len(base)-40:]
		}
		suffix := make([]byte, 3)
		rand.Read(suffix)
		opts.Name = strings.Trim("es-"+base, "-") + "-" + hex.EncodeToString(suffix)
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = 60 * time.Second
	}
	m := &Machine{owner: t, opts: opts, loops: loopDevices()}
	m.boot(t)
	t.Cleanup(func() { m.Stop(t) })
	return m
}

// bootAttempts bounds how often a container that came up broken is booted again.
const bootAttempts = 3

// earlyUnits must have started for a boot to count: without users (sysusers) there
// is no D-Bus, and without D-Bus no logind and nothing edgeseal asks systemd.
// Rebooting a container in place can lose them to a cgroup race on this test bed
// ("Failed at step CGROUP"), which a real device does not have.
var earlyUnits = []string{"systemd-sysusers.service", "dbus.service"}

// boot starts the container and waits until it has booted, booting it again (up
// to bootAttempts times) if it came up broken.
func (m *Machine) boot(t testing.TB) {
	t.Helper()
	var why string
	for attempt := 1; attempt <= bootAttempts; attempt++ {
		if why = m.bootOnce(t); why == "" {
			return
		}
		t.Logf("container %s came up broken (attempt %d of %d): %s", m.opts.Name, attempt, bootAttempts, why)
		m.Stop(t)
		m.leader = 0
	}
	t.Fatalf("container %s did not boot in %d attempts; last:\n%s", m.opts.Name, bootAttempts, why)
}

// bootOnce starts the container and returns "" once systemd inside is running or
// degraded with its early units up, or why not.
func (m *Machine) bootOnce(t testing.TB) string {
	t.Helper()
	args := []string{
		"--directory=/", "--volatile=yes", "--boot", "--register=no", "--keep-unit",
		"--console=pipe", "--machine=" + m.opts.Name,
		// nspawn's own syscall filter refuses mlock without this capability, which
		// a real device's services have: the unseal key must stay out of swap.
		"--capability=CAP_IPC_LOCK",
	}
	if m.opts.UsrOverlay != "" {
		args = append(args, "--overlay-ro=/usr:"+m.opts.UsrOverlay+":/usr")
	}
	for _, b := range m.opts.Binds {
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		args = append(args, flag+b.Host+":"+b.Container)
	}
	// systemd-firstboot would ask questions on an empty /etc; this skips it.
	args = append(args, "systemd.condition-first-boot=false")
	args = append(args, m.opts.Args...)
	cmd := exec.Command("systemd-nspawn", args...)
	if m.opts.CPU != "" {
		cmd = exec.Command("taskset", append([]string{"--cpu-list", m.opts.CPU, "systemd-nspawn"}, args...)...)
	}
	cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Owned by the booting test, not by t: a subtest that reboots the machine
	// must not take it down when it ends.
	m.proc = StartProcess(m.owner, "nspawn-"+m.opts.Name, cmd)

	deadline := time.Now().Add(m.opts.BootTimeout)
	m.findLeader(t, deadline)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, _, _ := m.Run(ctx, "systemctl", "is-system-running", "--wait")
		cancel()
		state := strings.TrimSpace(out)
		// systemctl reaches PID 1 over its private socket even without D-Bus.
		failed, _, _ := m.Run(context.Background(), append([]string{"systemctl", "is-failed"}, earlyUnits...)...)
		if strings.Contains(failed, "failed") {
			return fmt.Sprintf("early units failed (%s): %s", strings.Join(earlyUnits, ", "), strings.Fields(failed))
		}
		if state == "running" || state == "degraded" {
			return ""
		}
		if state == "" {
			m.findLeader(t, deadline) // nsenter failed: the leader may have been a helper
		}
		if m.proc.Exited() || time.Now().After(deadline) {
			failed, _, _ := m.Run(context.Background(), "systemctl", "--failed", "--no-legend")
			return fmt.Sprintf("not booted after %s (state %q)\n%s\nfailed units:\n%s", m.opts.BootTimeout, state, m.proc.LogTail(40), failed)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// findLeader finds the container's PID 1: the child of systemd-nspawn that runs
// systemd (nspawn may fork short-lived helpers first).
func (m *Machine) findLeader(t testing.TB, deadline time.Time) {
	t.Helper()
	for {
		if c := childOf(m.proc.Pid()); c != 0 {
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(c) + "/comm")
			if strings.TrimSpace(string(comm)) == "systemd" {
				m.leader = c
				return
			}
		}
		if m.proc.Exited() || time.Now().After(deadline) {
			t.Fatalf("container %s did not start:\n%s", m.opts.Name, m.proc.LogTail(40))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// childOf returns the first child of pid.
func childOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	c, _ := strconv.Atoi(f[0])
	return c
}

// Leader is the host pid of the container's PID 1.
func (m *Machine) Leader() int { return m.leader }

// Name is the machine name.
func (m *Machine) Name() string { return m.opts.Name }

// Run runs a command inside the container (all its namespaces).
func (m *Machine) Run(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	return m.run(ctx, append([]string{"-t", strconv.Itoa(m.leader), "-a"}, args...))
}

// RunAs runs a command inside as another uid/gid, with no supplementary groups.
func (m *Machine) RunAs(ctx context.Context, uid, gid int, args ...string) (stdout, stderr string, err error) {
	return m.run(ctx, append([]string{"-t", strconv.Itoa(m.leader), "-a",
		"setpriv", "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups"}, args...))
}

func (m *Machine) run(ctx context.Context, args []string) (string, string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	if m.opts.CPU != "" {
		// Commands from outside run where the container runs (see CPU).
		cmd = exec.CommandContext(ctx, "taskset", append([]string{"--cpu-list", m.opts.CPU, "nsenter"}, args...)...)
	}
	// When ctx ends, nsenter is killed, but a process inside may still hold its
	// output pipes: stop waiting for them soon after.
	cmd.WaitDelay = 2 * time.Second
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
		"SYSTEMD_PAGER=cat", "SYSTEMD_COLORS=0", "HOME=/root"}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

// MustRun runs a command inside and fails the test if it fails.
func (m *Machine) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, errOut, err := m.Run(ctx, args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v\nstdout:\n%s\nstderr:\n%s", m.opts.Name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// Journal is the journal of a unit inside (the whole journal for "").
func (m *Machine) Journal(t testing.TB, unit string) string {
	t.Helper()
	args := []string{"journalctl", "--no-pager", "-o", "short-monotonic"}
	if unit != "" {
		args = append(args, "-u", unit)
	}
	out, _, _ := m.Run(context.Background(), args...)
	return out
}

// Reboot stops the container and boots it again with the same disks.
func (m *Machine) Reboot(t testing.TB) {
	t.Helper()
	m.Stop(t)
	m.leader = 0
	m.boot(t)
}

// Stop halts the container (SIGTERM to systemd-nspawn: a clean shutdown), kills it
// if it takes more than 15s, and checks nothing is left behind.
func (m *Machine) Stop(t testing.TB) {
	t.Helper()
	if m.proc == nil || m.proc.Exited() {
		return
	}
	m.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.proc.done:
	case <-time.After(15 * time.Second):
		t.Errorf("container %s did not halt within 15s; killing it", m.opts.Name)
		m.proc.Kill(t)
	}
	m.checkClean(t)
}

// checkClean reports what a stopped container left behind.
func (m *Machine) checkClean(t testing.TB) {
	t.Helper()
	if m.leader != 0 {
		if _, err := os.Stat("/proc/" + strconv.Itoa(m.leader)); err == nil {
			if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(m.leader) + "/comm"); strings.TrimSpace(string(comm)) == "systemd" {
				t.Errorf("container %s: its PID 1 (%d) is still running", m.opts.Name, m.leader)
			}
		}
	}
	// nspawn cannot remove this directory itself (it says so at every exit).
	prop := "/run/systemd/nspawn/propagate/" + m.opts.Name
	os.Remove(prop)
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && bytes.Contains(mi, []byte(m.opts.Name)) {
		t.Errorf("container %s left mounts behind:\n%s", m.opts.Name, GrepLines(string(mi), m.opts.Name))
	}
	if now := loopDevices(); now != m.loops {
		t.Errorf("container %s changed the loop devices:\nbefore:\n%s\nafter:\n%s", m.opts.Name, m.loops, now)
	}
}

// GrepLines returns the lines of s that contain sub (for failure messages).
func GrepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// loopDevices lists attached loop devices ("" without losetup), but for those
// of disk images in the temporary directory: tests of other packages attach
// those (fscrypt on a loop-mounted ext4) and may run at the same time. A
// device listed without a backing file is left out too: it is one such
// test's, caught between being claimed and being given its file, or as it is
// let go.
func loopDevices() string {
	out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").Output()
	if err != nil {
		return ""
	}
	var keep []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[1], os.TempDir()+"/") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}
