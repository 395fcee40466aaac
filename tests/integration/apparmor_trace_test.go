//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/refctl"
	"github.com/edgeseal/edgeseal/tests/apparmorrules"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// tracedSteps are the confined steps, their units and profiles.
var tracedSteps = []struct{ unit, profile string }{
	{"edgeseal-pki.service", "edgeseal-pki"},
	{"edgeseal-vault.service", "edgeseal-vault"},
	{"edgeseal-unseal.service", "edgeseal-unseal"},
	{"edgeseal-tokend.service", "edgeseal-tokend"},
	{"edgeseal-fsvault.service", "edgeseal-fsvault"},
	{"edgeseal-fsvault@.service", "edgeseal-fsvault"},
}

// traceSyscalls are the calls AppArmor mediates by path or socket family.
const traceSyscalls = "open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat," +
	"rmdir,chmod,fchmodat,execve,socket,connect,bind"

// This test bed's kernel has no AppArmor, so the profiles cannot be enforced
// here (a spread task does that on a VM). The next best thing: boot the chain
// with every step traced (strace, successful calls only), then check each file
// a step opened, made, renamed or removed, each socket it made or reached by
// path, and each program it ran against that step's profile. A profile that
// would stop a step on a device with AppArmor fails here, with the access.
func TestEveryStepStaysWithinItsAppArmorProfileOnABoot(t *testing.T) {
	testbed.Require(t, "strace", "tpm2_startup")
	// On each server: the pki and unseal steps run the server's binary
	// (`BIN version`) in their own profiles, and each server's start differs.
	onEachServer(t, func(t *testing.T, srv testbed.Server) {
		root := installRoots[srv.Name] // its units and profiles, rendered for srv
		sw := testbed.StartSWTPM(t)
		disk := testbed.NewEncryptFS(t, "64M")
		d := newDevice(t, false, func(c *config.Config) {
			c.Seal.Method = "tpm2"
			c.Seal.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", sw.Port)
			c.Services = []config.Service{{Name: "collector", UIDs: []uint32{1001}}}
		}, withServer(srv), func(_ *device, opts *testbed.MachineOptions) {
			opts.Binds = append(opts.Binds, testbed.Bind{Host: disk.Mount, Container: "/var/lib/edgeseal/vaults"})
		})
		d.writeConfig()
		d.run("install", "-d", "-m", "1777", "/run/edgeseal-trace")
		for _, s := range tracedSteps {
			dir := filepath.Join(d.units, s.unit+".d")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "trace.conf"), []byte(traceDropIn(t, root, s.unit, s.profile)), 0o644)
		}
		d.run("systemctl", "daemon-reload")

		t.Log("Given a device booting with its steps traced: first boot, a token, a Vault reload and restart")
		d.start()
		ctx := context.Background()
		if out, stderr, err := d.m.RunAs(ctx, 1001, 1001, "edgeseal", "token", "fetch", "--out", "/tmp/collector/token.json"); err != nil {
			t.Fatalf("token fetch: %v\n%s%s", err, out, stderr)
		}
		// A reload (SIGHUP: Vault reads its config and certificate again), then a
		// restart (edgeseal-unseal unseals it again).
		d.run("systemctl", "reload", "edgeseal-vault.service")
		d.run("systemctl", "restart", "edgeseal-vault.service")
		d.waitUnsealed(30 * time.Second)
		if out, stderr, err := d.m.RunAs(ctx, 1001, 1001, "edgeseal", "token", "fetch", "--out", "/tmp/collector/token.json"); err != nil {
			t.Fatalf("token fetch after the Vault restart: %v\n%s%s", err, out, stderr)
		}

		t.Log("And its file vaults: made at boot, a vault unlocked for an app, a lock pending while the app and")
		t.Log("  a shell hold the vault, a reload, and every vault locked at shutdown")
		d.run("systemctl", "start", "edgeseal-fsvault.service")
		d.run("systemctl", "start", "edgeseal-fsvault@images.service")
		d.run("systemd-run", "--unit=trace-app", "-p", "ProtectSystem=strict", "-p", "ReadWritePaths=/var/lib/edgeseal/vaults/images",
			"sh", "-c", "echo state > /var/lib/edgeseal/vaults/images/state && exec sleep 300")
		d.run("systemd-run", "--unit=trace-shell", "-p", "WorkingDirectory=/var/lib/edgeseal/vaults/images", "sleep", "300")
		// Its stop waits 1s for them, then fails: lock pending, holders named.
		if _, _, err := d.m.Run(ctx, "systemctl", "stop", "edgeseal-fsvault@images.service"); err != nil {
			t.Logf("stop of edgeseal-fsvault@images.service with the vault held: %v (expected: lock pending)", err)
		}
		if j := d.m.Journal(t, "edgeseal-fsvault@images.service"); !strings.Contains(j, "lock pending: files busy (pid ") {
			t.Errorf("the traced lock did not name the vault's holders:\n%s", j)
		}
		d.run("systemctl", "stop", "trace-app.service", "trace-shell.service")
		d.run("systemctl", "reload", "edgeseal-fsvault.service")

		t.Log("And a controller: the device enrolled, the vault images switched to tpm+controller with")
		t.Log("  attestation, and the reload that rewraps it through the controller (a challenge, a quote, the keys)")
		ctlDir := filepath.Join(t.TempDir(), "controller")
		if err := refctl.Init(ctlDir, []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
		token, err := refctl.OpenDir(ctlDir).AddDevice(context.Background(), "trace-device", []int{7}, map[string]string{"location": "plant-7"})
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", testbed.FreeLoopbackPort(t))
		serveCtx, stopServe := context.WithCancel(ctx)
		served, ready := make(chan error, 1), make(chan struct{})
		go func() {
			served <- refctl.OpenDir(ctlDir).Serve(serveCtx, addr, refctl.Options{Log: io.Discard, Ready: func(string) { close(ready) }})
		}()
		t.Cleanup(func() { stopServe(); <-served })
		select {
		case <-ready:
		case err := <-served:
			t.Fatalf("the controller did not start: %v", err)
		}
		ca, err := os.ReadFile(refctl.CACertPath(ctlDir))
		if err != nil {
			t.Fatal(err)
		}
		enrol(t, d, "https://"+addr, ca, token)
		switchToController(t, d, "images")
		d.run("systemctl", "reload", "edgeseal-fsvault.service")
		if s := vaults(d)["images"]; s.KeySource != config.KeySourceTPMController {
			t.Fatalf("the traced reload did not rewrap the vault images through the controller: %+v\n%s", s, d.m.Journal(t, "edgeseal-fsvault.service"))
		}

		// Stopping ends each strace, which then writes out what it saw.
		d.run("systemctl", "stop", "edgeseal.target", "edgeseal-tokend.service", "edgeseal-tokend.socket",
			"edgeseal-unseal.service", "edgeseal-vault.service", "edgeseal-pki.service", "edgeseal-fsvault.service")
		if j := d.m.Journal(t, "edgeseal-fsvault.service"); !strings.Contains(j, "vault config: locked") || !strings.Contains(j, "vault images: locked") {
			t.Errorf("the traced stop of edgeseal-fsvault.service did not lock every vault:\n%s", j)
		}

		policy := installedProfiles(t, root)
		for _, s := range tracedSteps {
			if s.unit == "edgeseal-fsvault@.service" {
				continue // the same profile and trace files as edgeseal-fsvault.service
			}
			t.Run(s.profile, func(t *testing.T) {
				checkTrace(t, d, root, policy, s.unit, s.profile)
			})
		}
	})
}

// traceDropIn is the drop-in that runs the step of unit under strace, writing
// /run/edgeseal-trace/PROFILE.PID (/run/edgeseal-trace: 1777, made by the test).
func traceDropIn(t *testing.T, root, unit, profile string) string {
	t.Helper()
	var execs strings.Builder
	for _, e := range stepExecs(t, root, unit) {
		// The lock of a vault with files open waits 1s, not 10s, here.
		cmd := strings.Replace(e.cmd, "--wait 10s", "--wait 1s", 1)
		fmt.Fprintf(&execs, "%s=\n%s=/usr/bin/strace -D -f -ff -qq -y -s 4096 -e status=successful -e trace=%s -o /run/edgeseal-trace/%s %s\n",
			e.key, e.key, traceSyscalls, profile, cmd)
	}
	return fmt.Sprintf(`[Service]
# Traced (apparmor_trace_test.go): strace runs as a grandchild (-D), so the
# step keeps its pid (socket activation, sd_notify); it needs ptrace, which
# the unit's system-call filter would refuse, and CAP_SYS_PTRACE to read the
# memory of steps that make themselves non-dumpable.
%sSystemCallFilter=
CapabilityBoundingSet=CAP_SYS_PTRACE
AmbientCapabilities=CAP_SYS_PTRACE
ReadWritePaths=/run/edgeseal-trace
`, execs.String())
}

// checkTrace checks every access the traced step of unit made (its traces
// ended: the unit stopped) against its installed profile.
func checkTrace(t *testing.T, d *device, root string, policy map[string]*apparmorrules.Profile, unit, profile string) {
	t.Helper()
	p := policy[profile]
	if p == nil {
		t.Fatalf("no profile %s", profile)
	}
	traces := d.run("sh", "-c", fmt.Sprintf(`for f in /run/edgeseal-trace/%s.*; do echo "== ${f##*.}"; cat "$f"; done`, profile))
	if os.Getenv("EDGESEAL_TRACE_DUMP") != "" {
		t.Logf("%s", traces)
	}
	accesses := parseTrace(traces, strings.Fields(execStart(t, root, unit))[0])
	if len(accesses) < 5 {
		t.Fatalf("only %d accesses traced for %s: is strace working?\n%s", len(accesses), unit, traces)
	}
	var outside []string
	for _, a := range accesses {
		if !a.allowedBy(p) {
			outside = append(outside, a.String())
		}
	}
	slices.Sort(outside)
	outside = slices.Compact(outside)
	t.Logf("%s: %d accesses traced, %d outside the profile", unit, len(accesses), len(outside))
	if len(outside) > 0 {
		t.Errorf("%s did what profile %s does not allow (it would be denied on a device with AppArmor):\n  %s",
			unit, profile, strings.Join(outside, "\n  "))
	}
}

// stepExecs are the commands an installed unit runs as its step, by key
// (ExecStart=, and ExecStop= or ExecReload= when they run the step's program
// too, not a helper outside the sandbox such as +/bin/kill).
func stepExecs(t *testing.T, root, unit string) []struct{ key, cmd string } {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", unit))
	if err != nil {
		t.Fatal(err)
	}
	bin := strings.Fields(execStart(t, root, unit))[0]
	var out []struct{ key, cmd string }
	for _, line := range strings.Split(string(data), "\n") {
		key, cmd, ok := strings.Cut(line, "=")
		if ok && (key == "ExecStart" || key == "ExecStop" || key == "ExecReload") && (strings.HasPrefix(cmd, bin+" ") || cmd == bin) {
			out = append(out, struct{ key, cmd string }{key, cmd})
		}
	}
	return out
}

// execStart is the ExecStart= command of an installed unit.
func execStart(t *testing.T, root, unit string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", unit))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if cmd, ok := strings.CutPrefix(line, "ExecStart="); ok {
			return cmd
		}
	}
	t.Fatalf("%s has no ExecStart=", unit)
	return ""
}

// installedProfiles are the profiles `make install` rendered.
func installedProfiles(t *testing.T, root string) map[string]*apparmorrules.Profile {
	t.Helper()
	out := map[string]*apparmorrules.Profile{}
	for _, s := range tracedSteps {
		data, err := os.ReadFile(filepath.Join(root, "etc", "apparmor.d", s.profile))
		if err != nil {
			t.Fatal(err)
		}
		pol, err := apparmorrules.Parse(string(data))
		if err != nil {
			t.Fatalf("%s: %v", s.profile, err)
		}
		out[s.profile] = pol.Profile(s.profile)
	}
	return out
}

// access is one traced call: a path and the permission AppArmor checks for it,
// or a socket family and type.
type access struct {
	pid    string
	call   string
	path   string // for file calls
	perm   string // "r", "w", "x"
	domain string // for socket: inet, inet6, netlink, ...
	typ    string // stream, dgram, raw
}

func (a access) String() string {
	if a.domain != "" {
		return fmt.Sprintf("%s: network %s %s", a.call, a.domain, a.typ)
	}
	return fmt.Sprintf("%s: %s %s", a.call, a.path, a.perm)
}

// allowedBy tells whether p lets the access through. A directory opened by
// name is "/dir/" to AppArmor; the trace does not say which paths are
// directories, so either form passes. A process's own /proc entries are owner
// accesses; for other files the owner is not known here, so either kind of rule
// passes. AF_UNIX sockets are mediated by unix rules, checked by the tests of
// tests/apparmorrules; their paths (connect, bind) are checked here as file
// writes.
func (a access) allowedBy(p *apparmorrules.Profile) bool {
	if a.domain != "" {
		return a.domain == "unix" || p.AllowsNetwork(a.domain, a.typ)
	}
	if strings.HasPrefix(a.path, "/proc/"+a.pid+"/") {
		return p.Allows(a.path, a.perm, true) || p.Allows(a.path+"/", a.perm, true)
	}
	return p.MayAccess(a.path, a.perm) || p.MayAccess(a.path+"/", a.perm)
}

var (
	// 123 openat(AT_FDCWD</>, "/etc/x", O_RDONLY|O_CLOEXEC) = 3</etc/x>; -ff
	// files carry no pid, the runner's "== PID" header does.
	// -y prints the file a call opened after its descriptor, its path resolved.
	traceCall = regexp.MustCompile(`^([a-z0-9_]+)\((.*)\) += (\d+)(?:<([^>]*)>)?`)
	traceStr  = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
	traceDir  = regexp.MustCompile(`^(?:AT_FDCWD|\d+)<([^>]*)>`)
	sunPath   = regexp.MustCompile(`sun_path="((?:[^"\\]|\\.)*)"`)
)

// parseTrace turns strace -ff output, each file after a "== PID" line, into
// accesses. The execve of self (the step, started by strace) is not one.
func parseTrace(out, self string) []access {
	var res []access
	pid := ""
	for _, line := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(line, "== "); ok {
			pid = p
			continue
		}
		m := traceCall.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		call, args := m[1], m[2]
		strs := traceStr.FindAllStringSubmatch(args, -1)
		base := "/"
		if d := traceDir.FindStringSubmatch(args); d != nil {
			base = d[1]
		}
		abs := func(p string) string {
			if !strings.HasPrefix(p, "/") {
				p = filepath.Join(base, p)
			}
			// AppArmor sees the path with symlinks resolved: /var/run is /run.
			if rest, ok := strings.CutPrefix(p, "/var/run/"); ok {
				p = "/run/" + rest
			}
			p = strings.Replace(p, "/proc/self/", "/proc/"+pid+"/", 1)
			p = strings.Replace(p, "/proc/thread-self/", "/proc/"+pid+"/task/"+pid+"/", 1)
			return p
		}
		add := func(path, perm string) {
			res = append(res, access{pid: pid, call: call, path: abs(path), perm: perm})
		}
		if call != "socket" && call != "connect" && call != "bind" && len(strs) == 0 {
			// strace could not read the path from the process: an access
			// nobody can check, which no profile allows.
			res = append(res, access{pid: pid, call: call, path: "(undecoded: " + args + ")", perm: "?"})
			continue
		}
		switch call {
		case "open", "openat", "creat":
			if len(strs) == 0 {
				continue
			}
			perm := "r"
			switch {
			case call == "creat" || strings.Contains(args, "O_WRONLY") || strings.Contains(args, "O_CREAT") || strings.Contains(args, "O_TRUNC"):
				perm = "w"
			case strings.Contains(args, "O_RDWR"):
				perm = "rw"
			}
			// AppArmor sees the file opened, symlinks resolved (/lib is
			// /usr/lib; /usr/lib/ssl/openssl.cnf is /etc/ssl/openssl.cnf): the
			// path -y prints, where there is one.
			if opened := m[4]; strings.HasPrefix(opened, "/") {
				add(opened, perm)
				continue
			}
			add(strs[0][1], perm)
		case "mkdir", "mkdirat", "unlink", "unlinkat", "rmdir", "chmod", "fchmodat":
			if len(strs) > 0 {
				add(strs[0][1], "w")
			}
		case "rename", "renameat", "renameat2":
			for _, s := range strs {
				add(s[1], "w")
			}
		case "execve":
			if len(strs) > 0 && strs[0][1] != self {
				add(strs[0][1], "x")
			}
		case "socket":
			f := strings.Split(args, ", ")
			if len(f) < 2 {
				continue
			}
			domain := strings.ToLower(strings.TrimPrefix(f[0], "AF_"))
			typ := strings.ToLower(strings.TrimPrefix(strings.Split(f[1], "|")[0], "SOCK_"))
			res = append(res, access{pid: pid, call: call, domain: domain, typ: typ})
		case "connect", "bind":
			if s := sunPath.FindStringSubmatch(args); s != nil && s[1] != "" && !strings.HasPrefix(s[1], "@") {
				add(s[1], "w")
			}
		}
	}
	return res
}

func TestTraceParsingFindsEachKindOfAccess(t *testing.T) {
	out := `== 812
execve("/usr/libexec/edgeseal/edgeseal-unseal", ["edgeseal-unseal"], 0x7ffd /* 9 vars */) = 0
openat(AT_FDCWD</>, "/etc/edgeseal/edgeseal.yaml", O_RDONLY|O_CLOEXEC) = 3</etc/edgeseal/edgeseal.yaml>
openat(AT_FDCWD</>, "/proc/self/cgroup", O_RDONLY|O_CLOEXEC) = 4</proc/812/cgroup>
openat(AT_FDCWD</>, "/run/edgeseal/.status.json.tmp-1", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 5</run/edgeseal/.status.json.tmp-1>
renameat(AT_FDCWD</>, "/run/edgeseal/.status.json.tmp-1", AT_FDCWD</>, "/run/edgeseal/status.json") = 0
socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK, IPPROTO_IP) = 6<TCP:[123]>
connect(7<UNIX:[99]>, {sa_family=AF_UNIX, sun_path="/var/run/dbus/system_bus_socket"}, 29) = 0
openat(AT_FDCWD, 0x3430781444e0, O_RDONLY|O_CLOEXEC) = 6
openat(AT_FDCWD</>, "/lib/x86_64-linux-gnu/libc.so.6", O_RDONLY|O_CLOEXEC) = 3</usr/lib/x86_64-linux-gnu/libc.so.6>
== 813
execve("/etc/edgeseal/ikm-hook", ["/etc/edgeseal/ikm-hook"], 0x7ffd /* 9 vars */) = 0
execve("/bin/cat", ["cat"], 0x7ffd /* 9 vars */) = 0
`
	got := parseTrace(out, "/usr/libexec/edgeseal/edgeseal-unseal")
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	want := []string{
		"openat: /etc/edgeseal/edgeseal.yaml r",
		"openat: /proc/812/cgroup r",
		"openat: /run/edgeseal/.status.json.tmp-1 w",
		"renameat: /run/edgeseal/.status.json.tmp-1 w",
		"renameat: /run/edgeseal/status.json w",
		"socket: network inet stream",
		"connect: /run/dbus/system_bus_socket w",
		"openat: (undecoded: AT_FDCWD, 0x3430781444e0, O_RDONLY|O_CLOEXEC) ?",
		"openat: /usr/lib/x86_64-linux-gnu/libc.so.6 r",
		"execve: /etc/edgeseal/ikm-hook x",
		"execve: /bin/cat x",
	}
	if strings.Join(s, "\n") != strings.Join(want, "\n") {
		t.Errorf("parsed:\n%s\nwant:\n%s", strings.Join(s, "\n"), strings.Join(want, "\n"))
	}
}
