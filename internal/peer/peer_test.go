package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/naming"
)

// The test binary doubles as a client that connects and exits at once, so a
// test can hold a connection whose caller is gone.
func TestMain(m *testing.M) {
	if sock := os.Getenv("PEER_TEST_CONNECT_AND_EXIT"); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			os.Exit(3)
		}
		c.Write([]byte("x"))
		// Leave the connection open in the kernel by exiting without closing:
		// the server reads the peer after this process is gone.
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func listen(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, sock
}

func accept(t *testing.T, ln *net.UnixListener) *net.UnixConn {
	t.Helper()
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type units map[int32]string

func (u units) GetUnitNameByPID(_ context.Context, pid uint32) (string, error) {
	if n, ok := u[int32(pid)]; ok {
		return n, nil
	}
	return "", fmt.Errorf("no unit for pid %d", pid)
}

func TestFromConnSeesTheCallingProcess(t *testing.T) {
	ln, sock := listen(t)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := FromConn(accept(t, ln))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.PID != int32(os.Getpid()) || p.UID != uint32(os.Geteuid()) || p.GID != uint32(os.Getegid()) {
		t.Errorf("peer %+v, want pid %d uid %d gid %d", p, os.Getpid(), os.Geteuid(), os.Getegid())
	}
	if p.start == 0 || p.pidfd < 0 {
		t.Errorf("start time %d, pidfd %d: want both (Linux 5.3 or later)", p.start, p.pidfd)
	}
	if err := p.Same(); err != nil {
		t.Errorf("Same on a live caller: %v", err)
	}
	id, err := (&Resolver{Units: units{p.PID: "app-one.service"}}).Resolve(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if id.Unit != "app-one.service" || id.Credential != nil || id.PID != p.PID {
		t.Errorf("identity %+v", id)
	}
	if got := id.String(); !strings.Contains(got, "unit app-one.service") || !strings.Contains(got, fmt.Sprintf("uid %d", p.UID)) {
		t.Errorf("String() = %q", got)
	}
}

func TestACallerThatExitedBeforeResolutionIsGone(t *testing.T) {
	ln, sock := listen(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PEER_TEST_CONNECT_AND_EXIT="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := accept(t, ln)
	p, err := FromConn(c)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.PID != int32(cmd.Process.Pid) {
		t.Fatalf("peer pid %d, want the child's %d", p.PID, cmd.Process.Pid)
	}
	// Exited but not reaped: a zombie is gone too.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := readStat("/proc", p.PID)
		if err != nil || st.state == 'Z' || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Same(); !errors.Is(err, ErrGone) {
		t.Errorf("Same on a zombie caller: %v, want ErrGone", err)
	}
	cmd.Wait()
	if err := p.Same(); !errors.Is(err, ErrGone) {
		t.Errorf("Same on a reaped caller: %v, want ErrGone", err)
	}
	_, err = (&Resolver{Units: units{p.PID: "app-one.service"}}).Resolve(context.Background(), p)
	if !errors.Is(err, ErrGone) {
		t.Errorf("Resolve of a gone caller: %v, want ErrGone", err)
	}
}

func TestAProcessThatReusedThePidIsNotTheCaller(t *testing.T) {
	// A pid reused by another process has another start time; with no pidfd
	// (before Linux 6.5) that is what tells them apart.
	ln, sock := listen(t)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := FromConn(accept(t, ln))
	if err != nil {
		t.Fatal(err)
	}
	p.Close() // as if no pidfd
	p.start++
	if err := p.Same(); !errors.Is(err, ErrGone) {
		t.Errorf("Same with another start time: %v, want ErrGone", err)
	}
}

// Only root (systemd) may use the LoadCredential= form: run as root, the test
// sees the request; run as another user, it sees that the address is ignored.
func TestOnlyRootBoundToACredentialAddressAsksForALoadCredential(t *testing.T) {
	ln, sock := listen(t)
	laddr := &net.UnixAddr{Name: "@" + fmt.Sprintf("%x", time.Now().UnixNano()) + "/unit/reporter.service/vault-token", Net: "unix"}
	c, err := net.DialUnix("unix", laddr, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := FromConn(accept(t, ln))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Addr != laddr.Name {
		t.Errorf("peer address %q, want %q", p.Addr, laddr.Name)
	}
	id, err := (&Resolver{Units: units{}}).Resolve(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if id.Credential != nil {
			t.Errorf("uid %d got the LoadCredential= form: %+v", os.Geteuid(), id.Credential)
		}
		return
	}
	if id.Credential == nil || id.Credential.Unit != "reporter.service" || id.Credential.ID != "vault-token" || id.Unit != "" {
		t.Errorf("identity %+v (credential %+v)", id, id.Credential)
	}
}

func TestParseStatCountsFieldsFromTheLastParenthesis(t *testing.T) {
	line := "4242 (a) b (c) d) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.state != 'S' || st.start != 987654 {
		t.Errorf("got %+v", st)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 nope"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
}

func TestParseCredentialAddr(t *testing.T) {
	good := map[string]CredentialRequest{
		"@f00dfeed/unit/reporter.service/vault-token": {"reporter.service", "vault-token"},
		"@0/unit/app@1.service/t":                     {"app@1.service", "t"},
		"@ffffffffffffffff/unit/snap.a.b.service/x.y": {"snap.a.b.service", "x.y"},
	}
	for addr, want := range good {
		got, err := ParseCredentialAddr(addr)
		if err != nil || got != want {
			t.Errorf("ParseCredentialAddr(%q) = %+v, %v; want %+v", addr, got, err, want)
		}
	}
	for _, addr := range []string{
		"", "@", "/run/x.sock", "f00d/unit/a.service/t", "@/unit/a.service/t",
		"@xyz/unit/a.service/t", "@1ffffffffffffffff/unit/a.service/t", "@1/units/a.service/t",
		"@1/unit/a.service", "@1/unit/a.service/", "@1/unit/a/t", "@1/unit/a.service/t/u",
		"@1/unit/a.service/..", "@1/unit/../t", "@1/unit/a@.service/t", "@1/unit/a.service/t\n",
	} {
		if got, err := ParseCredentialAddr(addr); err == nil {
			t.Errorf("ParseCredentialAddr(%q) = %+v, want an error", addr, got)
		}
	}
}

func FuzzParseCredentialAddr(f *testing.F) {
	for _, s := range []string{"@f00dfeed/unit/reporter.service/vault-token", "@1/unit/a@b.service/c", "@/unit//", "@1/unit/a.service/t/u"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		cr, err := ParseCredentialAddr(addr)
		if err != nil {
			if cr != (CredentialRequest{}) {
				t.Fatalf("error %v with a result %+v", err, cr)
			}
			return
		}
		if naming.ValidUnitName(cr.Unit) != nil || cr.ID == "" || strings.ContainsAny(cr.ID, "/\x00\n") || cr.ID == "." || cr.ID == ".." {
			t.Fatalf("accepted %q as %+v", addr, cr)
		}
		if !strings.HasSuffix(addr, "/unit/"+cr.Unit+"/"+cr.ID) {
			t.Fatalf("%q parsed as %+v, which is not its tail", addr, cr)
		}
	})
}

// resolveAs resolves this test process as connected to a socket, with systemd
// reporting unit for it and /proc/PID/cgroup holding cgroup.
func resolveAs(t *testing.T, unit, cgroup string) Identity {
	t.Helper()
	ln, sock := listen(t)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := FromConn(accept(t, ln))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	proc := t.TempDir()
	dir := filepath.Join(proc, fmt.Sprint(p.PID))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"stat", "status"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", p.PID, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	var lookup UnitLookup
	if unit == fromCgroup {
		lookup = CgroupUnits{Proc: proc}
	} else {
		u := units{}
		if unit != "" {
			u[p.PID] = unit
		}
		lookup = u
	}
	id, err := (&Resolver{Units: lookup, Proc: proc}).Resolve(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fromCgroup, as resolveAs's unit, resolves with CgroupUnits (the unit read
// from the cgroup file) instead of a fake of systemd's D-Bus lookup.
const fromCgroup = "\x00cgroup"

func TestTheUnitReadFromTheCgroupIsTheOneSystemdReports(t *testing.T) {
	cases := []struct{ cgroup, unit string }{
		{"0::/system.slice/app-one.service\n", "app-one.service"},
		{"0::/system.slice/system-getty.slice/getty@tty1.service\n", "getty@tty1.service"},
		{"0::/init.scope\n", "init.scope"},
		{"0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope"},
		// A unit's own subgroups (Delegate=yes) are the unit's.
		{"0::/system.slice/delegated.service/snap.cam.daemon.service\n", "delegated.service"},
		{"0::/system.slice/delegated.service/payload/x.slice/y.service\n", "delegated.service"},
		// A user's manager names its cgroups freely; the system sees user@UID.service.
		{"0::/user.slice/user-1000.slice/user@1000.service/app.slice/snap.cam.daemon.service\n", "user@1000.service"},
		// cg_escape's "_" before a name that could clash with the kernel's files.
		{"0::/system.slice/_cpu.service\n", "cpu.service"},
		{"12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/cron.service\n0::/\n", "cron.service"},
		{"9:name=systemd:/..\n0::/system.slice/cron.service\n", "cron.service"},
		// No unit: the root, a slice alone, another cgroup namespace's view,
		// a container's payload outside systemd's names, nothing.
		{"0::/\n", ""},
		{"0::/system.slice\n", ""},
		{"0::/../system.slice/cron.service\n", ""},
		{"0::/lxc.payload.c1/system.slice/snap.cam.daemon.service\n", ""},
		{"0::/system.slice/bad name.service\n", ""},
		{"garbage", ""},
		{"", ""},
	}
	for _, c := range cases {
		if got := UnitOfCgroup(c.cgroup); got != c.unit {
			t.Errorf("cgroup %q: unit %q, want %q", c.cgroup, got, c.unit)
		}
	}
}

func TestResolveFromTheCgroupFindsSnapAppsAndRefusesForgedNames(t *testing.T) {
	cases := []struct{ name, cgroup, unit, app string }{
		{"a snap daemon", "0::/system.slice/snap.cam.daemon.service\n", "snap.cam.daemon.service", "cam.daemon"},
		{"a system app scope", "0::/system.slice/snap.cam.tool-" + uuid + ".scope\n", "snap.cam.tool-" + uuid + ".scope", "cam.tool"},
		{"a snap-like cgroup inside a unit with Delegate=yes",
			"0::/system.slice/delegated.service/snap.cam.daemon.service\n", "delegated.service", ""},
		{"a subgroup of the snap daemon's own cgroup",
			"0::/system.slice/snap.cam.daemon.service/sub\n", "snap.cam.daemon.service", ""},
		{"a user's manager's scope", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/snap.cam.tool-" + uuid + ".scope\n",
			"user@1000.service", ""},
		{"a container's subtree", "0::/lxc.payload.c1/system.slice/snap.cam.daemon.service\n", "", ""},
		{"a snap daemon in a quota group's slice", "0::/snap.grp.slice/snap.cam.daemon.service\n", "snap.cam.daemon.service", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := resolveAs(t, fromCgroup, c.cgroup)
			if id.Unit != c.unit || id.SnapApp != c.app {
				t.Errorf("cgroup %q: unit %q, snap app %q; want %q, %q", c.cgroup, id.Unit, id.SnapApp, c.unit, c.app)
			}
		})
	}
}

func FuzzUnitOfCgroup(f *testing.F) {
	f.Add("0::/system.slice/app-one.service\n")
	f.Add("0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n")
	f.Add("1:name=systemd:/system.slice/_cpu.service\n0::/\n")
	f.Fuzz(func(t *testing.T, cgroup string) {
		unit := UnitOfCgroup(cgroup)
		if unit == "" {
			return
		}
		if err := naming.ValidUnitName(unit); err != nil || strings.HasSuffix(unit, ".slice") {
			t.Fatalf("cgroup %q: unit %q is no unit a process runs in (%v)", cgroup, unit, err)
		}
		path := cgroupPath(cgroup)
		before, _, ok := strings.Cut(path, "/"+unit)
		if !ok {
			before, _, ok = strings.Cut(path, "/_"+unit)
		}
		if !ok {
			t.Fatalf("cgroup %q: unit %q is not in its path %q", cgroup, unit, path)
		}
		for comp := range strings.SplitSeq(strings.TrimPrefix(before, "/"), "/") {
			if comp != "" && !strings.HasSuffix(comp, ".slice") {
				t.Fatalf("cgroup %q: unit %q found below %q, which is no slice", cgroup, unit, comp)
			}
		}
	})
}

const uuid = "0b4983ca-d58a-4eba-b6dc-6eab780ec021"

func TestResolveTakesTheSnapAppFromTheUnitSystemdReports(t *testing.T) {
	cases := []struct {
		name, unit, cgroup, want string
	}{
		{"a snap daemon's service at the top of system.slice",
			"snap.cam.daemon.service", "0::/system.slice/snap.cam.daemon.service\n", "cam.daemon"},
		{"a daemon of a snap installed with an instance key",
			"snap.cam_k1.daemon.service", "0::/system.slice/snap.cam_k1.daemon.service\n", "cam_k1.daemon"},
		{"an app run by root outside a session: a system scope as snapd 2.60 and later names it",
			"snap.cam.tool-" + uuid + ".scope", "0::/system.slice/snap.cam.tool-" + uuid + ".scope\n", "cam.tool"},
		{"an app run by root outside a session: a system scope as snapd before 2.60 names it",
			"snap.cam.tool." + uuid + ".scope", "0::/system.slice/snap.cam.tool." + uuid + ".scope\n", "cam.tool"},
		{"an app whose name ends in a hyphenated word, new scope form",
			"snap.cam.my-tool-" + uuid + ".scope", "0::/system.slice/snap.cam.my-tool-" + uuid + ".scope\n", "cam.my-tool"},
		{"a legacy cgroup v1 system, where the unified line is /",
			"snap.cam.daemon.service", "12:pids:/system.slice/snap.cam.daemon.service\n1:name=systemd:/system.slice/snap.cam.daemon.service\n0::/\n", "cam.daemon"},
		{"inside systemd-nspawn, a stale v1 line beside the unified tree",
			"snap.cam.daemon.service", "9:name=systemd:/..\n0::/system.slice/snap.cam.daemon.service\n", "cam.daemon"},

		// Forgeries: a cgroup named like a snap's where systemd says otherwise.
		{"a cgroup named like a snap daemon's inside a unit with Delegate=yes",
			"delegated.service", "0::/system.slice/delegated.service/snap.cam.daemon.service\n", ""},
		{"a container's subtree with its own system.slice",
			"-.slice", "0::/lxc.payload.c1/system.slice/snap.cam.daemon.service\n", ""},
		{"the snap daemon's unit, but the process in a container's subtree",
			"snap.cam.daemon.service", "0::/lxc.payload.c1/system.slice/snap.cam.daemon.service\n", ""},
		{"another unit whose process sits in a cgroup named like a snap daemon's",
			"app-one.service", "0::/system.slice/snap.cam.daemon.service\n", ""},
		{"the snap daemon's unit, but the process in another snap's cgroup",
			"snap.cam.daemon.service", "0::/system.slice/snap.other.daemon.service\n", ""},
		{"a subgroup of the snap daemon's own cgroup",
			"snap.cam.daemon.service", "0::/system.slice/snap.cam.daemon.service/sub\n", ""},
		{"a scope named like a snap app's below a session scope",
			"session-3.scope", "0::/user.slice/user-0.slice/session-3.scope/snap.cam.tool-" + uuid + ".scope\n", ""},
		{"an app scope under a user's manager, which the user names freely",
			"user@1000.service", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/snap.cam.tool-" + uuid + ".scope\n", ""},
		{"a snap's user daemon (daemon-scope: user), run by the user's manager",
			"user@1000.service", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/snap.cam.daemon.service\n", ""},
		{"a unit of the user's manager that a system lookup could never report",
			"snap.cam.daemon.service", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/snap.cam.daemon.service\n", ""},
		{"a legacy v1 line naming a delegated subgroup",
			"delegated.service", "1:name=systemd:/system.slice/delegated.service/snap.cam.daemon.service\n0::/\n", ""},

		// Names snapd does not make for an app.
		{"a hook's scope is no app",
			"snap.cam.hook.configure-" + uuid + ".scope", "0::/system.slice/snap.cam.hook.configure-" + uuid + ".scope\n", ""},
		{"a scope with the UUID first",
			"snap." + uuid + ".cam.tool.scope", "0::/system.slice/snap." + uuid + ".cam.tool.scope\n", ""},
		{"a scope with an upper-case UUID, which snapd never writes",
			"snap.cam.tool-" + strings.ToUpper(uuid) + ".scope", "0::/system.slice/snap.cam.tool-" + strings.ToUpper(uuid) + ".scope\n", ""},
		{"a scope without a UUID",
			"snap.cam.tool.scope", "0::/system.slice/snap.cam.tool.scope\n", ""},
		{"snapd itself",
			"snapd.service", "0::/system.slice/snapd.service\n", ""},
		{"a snap-wide name without an app",
			"snap.cam.service", "0::/system.slice/snap.cam.service\n", ""},
		{"a snap daemon in a snapd quota group's slice (not recognised; see SnapAppOf)",
			"snap.cam.daemon.service", "0::/snap.grp.slice/snap.cam.daemon.service\n", ""},
		{"no unit from systemd", "", "0::/system.slice/snap.cam.daemon.service\n", ""},
		{"a cgroup file that says nothing", "snap.cam.daemon.service", "garbage", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := resolveAs(t, c.unit, c.cgroup)
			if id.SnapApp != c.want {
				t.Errorf("unit %q, cgroup %q: snap app %q, want %q", c.unit, c.cgroup, id.SnapApp, c.want)
			}
			if id.Unit != c.unit {
				t.Errorf("unit %q, want systemd's %q", id.Unit, c.unit)
			}
		})
	}
}

func FuzzSnapAppOf(f *testing.F) {
	f.Add("snap.cam.daemon.service", "0::/system.slice/snap.cam.daemon.service\n")
	f.Add("delegated.service", "0::/system.slice/delegated.service/snap.cam.daemon.service\n")
	f.Add("snap.cam.daemon.service", "0::/lxc.payload.c1/system.slice/snap.cam.daemon.service\n")
	f.Add("snap.cam.tool-"+uuid+".scope", "9:name=systemd:/..\n0::/system.slice/snap.cam.tool-"+uuid+".scope\n")
	f.Add("snap.cam_k1.tool."+uuid+".scope", "1:name=systemd:/system.slice/snap.cam_k1.tool."+uuid+".scope\n0::/\n")
	f.Add("user@1000.service", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/snap.x.y.service\n")
	f.Fuzz(func(t *testing.T, unit, cgroup string) {
		path := cgroupPath(cgroup)
		if path != "" && !strings.Contains(cgroup, ":"+path) {
			t.Fatalf("cgroup path %q is on no line of %q", path, cgroup)
		}
		app := SnapAppOf(unit, cgroup)
		if app == "" {
			return
		}
		if err := naming.ValidSnapApp(app); err != nil {
			t.Fatalf("unit %q, cgroup %q: invalid snap app %q: %v", unit, cgroup, app, err)
		}
		if path != "/system.slice/"+unit || strings.Count(path, "/") != 2 {
			t.Fatalf("unit %q, cgroup %q: snap app %q from the cgroup %q, which is not the unit's at the top of system.slice", unit, cgroup, app, path)
		}
		if !strings.HasPrefix(unit, "snap."+app) || (unit != "snap."+app+".service" && !strings.HasSuffix(unit, ".scope")) {
			t.Fatalf("unit %q gave snap app %q", unit, app)
		}
		if got := SnapAppOfUnit("snap." + app + ".service"); got != app {
			t.Fatalf("snap app %q: its daemon's unit gives %q", app, got)
		}
	})
}

// A caller that connected, exited and was reaped before its connection was
// read is gone, whatever the kernel: from Linux 6.16 SO_PEERPIDFD gives a pidfd
// of the reaped process, which polls readable; from 6.5 to 6.15 it fails with
// EINVAL; before 6.5 the pid names no process (or another, which only a pid
// wrap-around in between could make).
func TestACallerReapedBeforeItIsReadIsGone(t *testing.T) {
	ln, sock := listen(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PEER_TEST_CONNECT_AND_EXIT="+sock)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	p, err := FromConn(accept(t, ln))
	if err != nil {
		t.Fatalf("FromConn of a reaped caller: %v, want a Peer that Resolve refuses as gone", err)
	}
	defer p.Close()
	if p.PID != int32(cmd.Process.Pid) {
		t.Fatalf("peer pid %d, want the child's %d", p.PID, cmd.Process.Pid)
	}
	_, err = (&Resolver{Units: units{p.PID: "app-one.service"}}).Resolve(context.Background(), p)
	if !errors.Is(err, ErrGone) {
		t.Errorf("Resolve of a reaped caller: %v, want ErrGone", err)
	}
}

func TestParseStatusReadsStateAndEffectiveUID(t *testing.T) {
	uid, state, err := parseStatus([]byte("Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t7\nUid:\t1000\t1001\t1000\t1000\nGid:\t5\t5\t5\t5\n"))
	if err != nil || uid != 1001 || state != 'S' {
		t.Errorf("got uid %d state %c err %v; want the effective uid 1001, S", uid, state, err)
	}
	for _, bad := range []string{"", "State:\tZ (zombie)\n", "Uid:\t1\t2\t3\t4\n", "State:\tR\nUid:\tx\ty\n"} {
		if _, _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) succeeded", bad)
		}
	}
}

// The kernel's answers to SO_PEERPIDFD, faked: a reaped caller cannot be
// produced on demand on every kernel (Linux 6.16 and later answer with a pidfd
// of the reaped process, before 6.5 the option does not exist), so each case
// gives the error a kernel range gives and checks what FromConn makes of it.
func TestAPidfdIsTakenFromTheSocketAndByPidOnlyWhereTheKernelHasNoSoPeerPidfd(t *testing.T) {
	const peerFD, openedFD = 101, 202
	cases := []struct {
		name      string
		fd        int
		err       error
		open      error // what pidfd_open of the pid gives
		wantFD    int
		wantErr   error // nil, ErrGone, or any other error (errOther)
		wantOpens bool  // whether the pid is opened by number
	}{
		{"Linux 6.5 and later: the socket gives a pidfd of the caller", peerFD, nil, nil, peerFD, nil, false},
		{"Linux 6.5 to 6.14: EINVAL once the caller is reaped, whoever has its pid now", -1, unix.EINVAL, nil, -1, ErrGone, false},
		{"Linux 6.15: ESRCH once the caller is reaped", -1, unix.ESRCH, nil, -1, ErrGone, false},
		{"before Linux 6.5: ENOPROTOOPT, so the pid is opened", -1, unix.ENOPROTOOPT, nil, openedFD, nil, true},
		{"before Linux 6.5, and the pid names no process any more", -1, unix.ENOPROTOOPT, unix.ESRCH, -1, ErrGone, true},
		{"before Linux 5.3: no pidfd at all, the start time alone tells", -1, unix.ENOPROTOOPT, unix.ENOSYS, -1, nil, true},
		{"before Linux 6.5 in a snap whose seccomp filter lacks pidfd_open (EPERM): the start time alone tells",
			-1, unix.ENOPROTOOPT, unix.EPERM, -1, nil, true},
		{"any other answer of the socket is an error, not a reason to open the pid", -1, unix.ENODATA, nil, -1, errOther, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opened := false
			fd, err := pidfdOf(c.fd, c.err, func() (int, error) {
				opened = true
				if c.open != nil {
					return -1, c.open
				}
				return openedFD, nil
			})
			switch {
			case c.wantErr == errOther:
				if err == nil || errors.Is(err, ErrGone) {
					t.Errorf("error %v, want an error other than ErrGone", err)
				}
			case !errors.Is(err, c.wantErr):
				t.Errorf("error %v, want %v", err, c.wantErr)
			}
			if fd != c.wantFD {
				t.Errorf("pidfd %d, want %d", fd, c.wantFD)
			}
			if opened != c.wantOpens {
				t.Errorf("opened the pid by number: %v, want %v", opened, c.wantOpens)
			}
		})
	}
}

var errOther = errors.New("any error but ErrGone")

// Issue 18: the provider reads the unit from the caller's cgroup, and asks
// systemd only when the cgroup names none.
func TestCgroupFirstAsksSystemdOnlyWhenTheCgroupNamesNoUnit(t *testing.T) {
	proc := t.TempDir()
	for pid, cg := range map[int]string{10: "0::/system.slice/app-one.service\n", 11: "0::/\n"} {
		dir := filepath.Join(proc, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bus := units{10: "not-asked.service", 11: "-.slice"}
	c := CgroupFirst{Cgroup: CgroupUnits{Proc: proc}, Fallback: bus}
	for pid, want := range map[uint32]string{10: "app-one.service", 11: "-.slice"} {
		if got, err := c.GetUnitNameByPID(context.Background(), pid); err != nil || got != want {
			t.Errorf("pid %d: %q, %v; want %q", pid, got, err, want)
		}
	}
	if _, err := c.GetUnitNameByPID(context.Background(), 12); err == nil || errors.Is(err, ErrNoUnit) {
		t.Errorf("a process gone: %v; want the read's error, not a fallback", err)
	}
}
