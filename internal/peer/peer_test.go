package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		if ValidUnitName(cr.Unit) != nil || cr.ID == "" || strings.ContainsAny(cr.ID, "/\x00\n") || cr.ID == "." || cr.ID == ".." {
			t.Fatalf("accepted %q as %+v", addr, cr)
		}
		if !strings.HasSuffix(addr, "/unit/"+cr.Unit+"/"+cr.ID) {
			t.Fatalf("%q parsed as %+v, which is not its tail", addr, cr)
		}
	})
}

func TestValidUnitName(t *testing.T) {
	for _, s := range []string{"app-one.service", "snap.collector.daemon.service", "getty@tty1.service", "session-1.scope", `sys-devices-x\x2d1.device`} {
		if err := ValidUnitName(s); err != nil {
			t.Errorf("ValidUnitName(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "app", ".service", "app.servic", "a b.service", "a/b.service", "foo@.service", "@x.service", "a@b@c.service", strings.Repeat("a", 250) + ".service"} {
		if err := ValidUnitName(s); err == nil {
			t.Errorf("ValidUnitName(%q) accepted", s)
		}
	}
}

func TestValidSnapApp(t *testing.T) {
	for _, s := range []string{"collector.daemon", "edgex-ui.edgex-ui", "a1.B-2", "foo_bar1.app"} {
		if err := ValidSnapApp(s); err != nil {
			t.Errorf("ValidSnapApp(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "collector", "c.daemon", "Collector.daemon", "-ab.x", "a--b.x", "123.x", "ab.", "ab.-x", "ab.x.y", "ab_.x", "ab_TOOLONGKEYX.x", "ab.x_y"} {
		if err := ValidSnapApp(s); err == nil {
			t.Errorf("ValidSnapApp(%q) accepted", s)
		}
	}
}

func TestSnapAppOfCgroup(t *testing.T) {
	cases := []struct{ content, want string }{
		{"0::/system.slice/snap.collector.daemon.service\n", "collector.daemon"},
		{"0::/system.slice/snap.collector.daemon.service/sub\n", "collector.daemon"},
		// `snap run` (seen with snapd 2.57): snap.<snap>.<app>.<uuid>.scope.
		{"0::/user.slice/user-0.slice/session-3.scope/snap.tool.sh.d854bd35-2457-4ac8-b494-06061d74df33.scope\n", "tool.sh"},
		{"0::/system.slice/snap.es-consumer.fetch.0b4983ca-d58a-4eba-b6dc-6eab780ec021.scope\n", "es-consumer.fetch"},
		{"12:pids:/x\n1:name=systemd:/system.slice/snap.foo_k1.bar.service\n0::/\n", "foo_k1.bar"},
		// A scope a user made under their own manager, named like a snap's.
		{"0::/user.slice/user-1000.slice/user@1000.service/app.slice/snap.collector.daemon.d854bd35-2457-4ac8-b494-06061d74df33.scope\n", ""},
		// Inside systemd-nspawn: a stale v1 name=systemd line beside the unified tree.
		{"9:name=systemd:/..\n8:pids:/\n0::/system.slice/snap.foo.bar.0a59f0cf-27c1-40de-887f-f1aa94e1d2f8.scope\n", "foo.bar"},
		// Legacy v1 only: the unified line is "/".
		{"1:name=systemd:/system.slice/snap.foo.bar.service\n0::/\n", "foo.bar"},
		// Hooks are no app.
		{"0::/system.slice/snap.foo.hook.configure.d854bd35-2457-4ac8-b494-06061d74df33.scope\n", ""},
		// The UUID first is no name snapd makes.
		{"0::/system.slice/snap.d854bd35-2457-4ac8-b494-06061d74df33.tool.sh.scope\n", ""},
		{"0::/system.slice/snapd.service\n", ""},
		{"0::/system.slice/snap.foo.service\n", ""},
		{"0::/system.slice/snap.nouuid.foo.bar.scope\n", ""},
		{"0::/system.slice/app-one.service\n", ""},
		{"garbage", ""},
		{"", ""},
	}
	for _, c := range cases {
		if got := SnapAppOfCgroup(c.content); got != c.want {
			t.Errorf("SnapAppOfCgroup(%q) = %q, want %q", c.content, got, c.want)
		}
	}
}

func FuzzSnapAppOfCgroup(f *testing.F) {
	f.Add("0::/system.slice/snap.collector.daemon.service\n")
	f.Add("1:name=systemd:/user.slice/user@1000.service/snap.x.y.service\n")
	f.Fuzz(func(t *testing.T, content string) {
		if app := SnapAppOfCgroup(content); app != "" && ValidSnapApp(app) != nil {
			t.Fatalf("%q gave an invalid snap app %q", content, app)
		}
	})
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
