//go:build integration

package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/vaultbin"
)

func TestMachineBootsRunsCommandsAndKeepsBoundStateAcrossReboot(t *testing.T) {
	host := t.TempDir()
	usr := t.TempDir()
	unitDir := filepath.Join(usr, "lib/systemd/system")
	os.MkdirAll(unitDir, 0o755)
	os.WriteFile(filepath.Join(unitDir, "testbed-probe.service"), []byte(
		"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo from-unit > /srv/state/unit-ran'\n"), 0o644)
	ro := t.TempDir()
	os.WriteFile(filepath.Join(ro, "hello"), []byte("hi"), 0o644)

	m := Boot(t, MachineOptions{
		UsrOverlay: usr,
		Binds: []Bind{
			{Host: host, Container: "/srv/state"},
			{Host: ro, Container: "/srv/ro", ReadOnly: true},
		},
	})
	if comm := m.MustRun(t, "cat", "/proc/1/comm"); strings.TrimSpace(comm) != "systemd" {
		t.Errorf("PID 1 inside is %q", comm)
	}
	if got := m.MustRun(t, "cat", "/srv/ro/hello"); got != "hi" {
		t.Errorf("read-only bind: %q", got)
	}
	if _, _, err := m.Run(context.Background(), "touch", "/srv/ro/x"); err == nil {
		t.Error("a read-only bind is writable")
	}
	m.MustRun(t, "systemctl", "start", "testbed-probe.service")
	if data, _ := os.ReadFile(filepath.Join(host, "unit-ran")); string(data) != "from-unit\n" {
		t.Errorf("a unit from the /usr overlay did not run: %q", data)
	}
	if id := m.MustRun(t, "sh", "-c", "id -u"); strings.TrimSpace(id) != "0" {
		t.Errorf("id -u = %q", id)
	}
	out, _, err := m.RunAs(context.Background(), 1234, 4321, "sh", "-c", "id -u; id -g")
	if err != nil || out != "1234\n4321\n" {
		t.Errorf("RunAs: %q %v", out, err)
	}
	m.MustRun(t, "sh", "-c", "echo kept > /srv/state/file; echo lost > /var/tmp-file")
	oldLeader := m.Leader()
	m.Reboot(t)
	if m.Leader() == oldLeader {
		t.Error("the reboot did not start a new PID 1")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/comm", oldLeader)); err == nil {
		if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", oldLeader)); strings.TrimSpace(string(c)) == "systemd" {
			t.Error("the old PID 1 is still running")
		}
	}
	if got := m.MustRun(t, "cat", "/srv/state/file"); got != "kept\n" {
		t.Errorf("bound state after reboot: %q", got)
	}
	if _, _, err := m.Run(context.Background(), "cat", "/var/tmp-file"); err == nil {
		t.Error("tmpfs state survived the reboot")
	}
	nspawn := m.proc.Pid()
	m.Stop(t)
	if err := syscall.Kill(nspawn, 0); err == nil {
		t.Errorf("systemd-nspawn (pid %d) still runs after Stop", nspawn)
	}
}

func TestSWTPMStartsAnswersResetsAndStopsCleanly(t *testing.T) {
	Require(t, "tpm2_getrandom", "tpm2_startup")
	s := StartSWTPM(t)
	tpm := func(args ...string) string {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+s.TCTI())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := tpm("tpm2_getrandom", "8", "--hex"); len(strings.TrimSpace(out)) != 16 {
		t.Errorf("tpm2_getrandom: %q", out)
	}
	s.Reset(t)
	tpm("tpm2_startup", "-c")
	tpm("tpm2_getrandom", "8", "--hex")
	pid := s.Pid()
	s.Stop(t)
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("swtpm (pid %d) still runs", pid)
	}
	if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(s.Port)); err != nil {
		t.Errorf("swtpm's port is still taken: %v", err)
	} else {
		l.Close()
	}
}

func TestOneVariablePicksTheServerAndOpenBaoIsTheDefault(t *testing.T) {
	t.Setenv("EDGESEAL_VAULT", "")
	t.Setenv(ServerVar, "") // restored at the end, whatever the cases do
	for _, tc := range []struct {
		value string // EDGESEAL_SERVER; "-" for unset
		want  string // the server's name, or "" for an error
	}{
		{"-", "openbao"}, // unset: OpenBao, the server make install and the snap ship
		{"", "openbao"},  // set but empty: the same
		{"openbao", "openbao"},
		{"vault", "vault"},
		{"bao", ""},   // a binary's name is not a server's
		{"Vault", ""}, // names are exact
		{"hashicorp", ""},
	} {
		if tc.value == "-" {
			os.Unsetenv(ServerVar)
		} else {
			t.Setenv(ServerVar, tc.value)
		}
		srv, err := DefaultServer()
		if tc.want == "" {
			if err == nil || !strings.Contains(err.Error(), "openbao (the default) or vault") || !strings.Contains(err.Error(), ServerVar) {
				t.Errorf("%s=%q: err %v, want one naming the variable and the accepted values", ServerVar, tc.value, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s=%q: %v", ServerVar, tc.value, err)
		}
		if srv.Name != tc.want {
			t.Errorf("%s=%q: %s, want %s", ServerVar, tc.value, srv.Name, tc.want)
		}
	}

	t.Setenv(ServerVar, "")
	t.Setenv("EDGESEAL_VAULT", "/opt/vault")
	if _, err := DefaultServer(); err == nil || !strings.Contains(err.Error(), "EDGESEAL_VAULT=/opt/vault is no longer read") {
		t.Errorf("with EDGESEAL_VAULT set: err %v, want a refusal naming it", err)
	}
	if _, err := Servers(); err == nil || !strings.Contains(err.Error(), "EDGESEAL_VAULT") {
		t.Errorf("Servers with EDGESEAL_VAULT set: err %v, want a refusal naming it", err)
	}
}

func TestServersAreOpenBaoThenVaultEachItsPinnedBuild(t *testing.T) {
	t.Setenv("EDGESEAL_VAULT", "")
	srvs, err := Servers()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, release, install string }{
		{"openbao", "OpenBao v2.4.1", "/usr/bin/bao"},
		{"vault", "Vault v1.21.0", "/usr/bin/vault"},
	}
	if len(srvs) != len(want) {
		t.Fatalf("Servers() = %v, want %d", srvs, len(want))
	}
	for i, w := range want {
		s := srvs[i]
		if s.Name != w.name || string(s.Kind) != w.name || s.String() != w.release || s.InstallPath != w.install {
			t.Errorf("server %d: %+v (%s), want %s, %s at %s", i, s, s, w.name, w.release, w.install)
		}
		// The build is the one its script makes (and make deps, and make snap's default).
		script := filepath.Join(repoRoot(), pins[i].script)
		out, err := exec.Command(script, "--path").Output()
		if err != nil {
			t.Fatal(err)
		}
		if p := strings.TrimSpace(string(out)); p != s.Bin || !strings.Contains(p, "-v"+s.Version+"/") {
			t.Errorf("%s: Bin %s; %s --path says %s, which should name v%s", s.Name, s.Bin, pins[i].script, p, s.Version)
		}
		got, _ := exec.Command(s.Bin, "version").Output()
		if info, err := vaultbin.Parse(got); err != nil || info.String() != s.String() {
			t.Errorf("%s version: %q (%v), want %s", s.Bin, got, err, s)
		}
	}
	named, err := ServerNamed("openbao")
	if err != nil || named != srvs[0] {
		t.Errorf("ServerNamed(openbao) = %+v, %v", named, err)
	}
	if _, err := ServerNamed("consul"); err == nil || !strings.Contains(err.Error(), "openbao (the default) or vault") {
		t.Errorf("ServerNamed(consul): err %v, want one naming the servers", err)
	}
}

func TestAMissingServerBuildSaysWhatToRun(t *testing.T) {
	// A cache without builds: identify (not memoised) says what to run.
	t.Setenv("EDGESEAL_CACHE", t.TempDir())
	for _, p := range pins {
		_, err := p.identify()
		if err == nil || !strings.Contains(err.Error(), "run `make deps` (or "+p.script+") first") {
			t.Errorf("%s: err %v, want one saying to run make deps or %s", p.kind, err, p.script)
		}
	}
}

func TestARaftClusterElectsANewLeaderWhenItsLeaderIsKilled(t *testing.T) {
	srv, err := ServerNamed("openbao")
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	cl := StartRaftCluster(t, srv, 3)
	t.Logf("three nodes initialised, unsealed and voting in %v", time.Since(started).Round(time.Millisecond))
	ctx := context.Background()
	root := cl.RootClient(t, 0)
	if err := root.Sys().Mount("kv", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatal(err)
	}
	// A new KV v2 mount answers 400 "Upgrading from non-versioned to
	// versioned data" for a moment while it sets itself up (as
	// internal/refctl's set-up waits for it).
	for ready := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := root.KVv2("kv").Put(ctx, "before", map[string]any{"n": 1})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "Upgrading from non-versioned to versioned data") || time.Now().After(ready) {
			t.Fatal(err)
		}
	}

	for round := 1; round <= 3; round++ {
		leader, err := cl.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("When the leader, node%d, is killed (round %d)", leader, round)
		killed := time.Now()
		cl.Kill(t, leader)
		next, err := cl.WaitForLeader(ctx, leader)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Then node%d leads after %v, and what was written before is there", next, time.Since(killed).Round(time.Millisecond))
		c := cl.RootClient(t, next)
		if s, err := c.KVv2("kv").Get(ctx, "before"); err != nil || s.Data["n"] != json.Number("1") {
			t.Fatalf("after the leader's loss: %v %v", s, err)
		}
		if _, err := c.KVv2("kv").Put(ctx, "after", map[string]any{"n": round}); err != nil {
			t.Fatalf("two of three nodes cannot write: %v", err)
		}

		t.Log("When the killed node is restarted, Then it rejoins and reads what was written without it")
		cl.Restart(t, leader)
		back := cl.RootClient(t, leader)
		deadline := time.Now().Add(30 * time.Second)
		for {
			s, err := back.KVv2("kv").Get(ctx, "after")
			if err == nil && s.Data["n"] == json.Number(fmt.Sprint(round)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the restarted node does not serve what was written without it: %v %v\n%s", s, err, cl.LogTail(leader, 30))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
