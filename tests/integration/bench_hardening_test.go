//go:build integration

package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/tests/testbed"
)

// hardenedUnits are the boot chain's units whose process starts lie on a warm
// reboot's path, by their template in systemd/.
var hardenedUnits = []string{"edgeseal-pki", "edgeseal-unseal", "edgeseal-ready"}

// notHardening are the [Service] settings that say what runs and when, not
// where: everything else in the section is the unit's sandbox.
var notHardening = []string{"Type", "ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecReload", "ExecCondition",
	"RemainAfterExit", "Restart", "RestartSec", "RestartPreventExitStatus", "RestartMode", "TimeoutStartSec", "TimeoutStopSec",
	"Environment", "EnvironmentFile", "NotifyAccess", "KillMode", "KillSignal", "SuccessExitStatus", "LoadCredential",
	"LoadCredentialEncrypted", "SetCredential", "OOMScoreAdjust", "Nice", "FileDescriptorStoreMax", "WatchdogSec",
	// Who it runs as, not where: edgeseal-pki's group tss, which only an
	// installed edgeseal's sysusers.d makes.
	"SupplementaryGroups"}

// placeholder is a word `make install` substitutes in a unit template.
var placeholder = regexp.MustCompile(`@[A-Z_]+@`)

// unitHardening reads the sandbox settings of systemd/<unit>.service.in, as
// systemd-run -p arguments.
func unitHardening(b testing.TB, unit string) []string {
	f, err := os.Open(filepath.Join(repoRoot(), "systemd", unit+".service.in"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var props []string
	inService := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		// A setting continued on the next lines (a trailing \) is one.
		for !strings.HasPrefix(line, "#") && strings.HasSuffix(line, "\\") && sc.Scan() {
			line = strings.TrimSuffix(line, "\\") + " " + strings.TrimSpace(sc.Text())
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			inService = line == "[Service]"
			continue
		case !inService:
			continue
		}
		key, _, ok := strings.Cut(line, "=")
		if !ok || placeholder.MatchString(line) || slices.Contains(notHardening, key) {
			continue
		}
		props = append(props, "-p", line)
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	if len(props) == 0 {
		b.Fatalf("systemd/%s.service.in has no sandbox settings", unit)
	}
	return props
}

// processStart starts /bin/true as a transient oneshot unit with props and
// returns systemd's fork of it to its exit, in ms: the child's setup of the
// sandbox props ask for, the exec, and /bin/true's run (the same for every
// props). What systemd does before the fork (the unit's cgroup and its BPF
// programs for IPAddressDeny= and DeviceAllow=, a DynamicUser='s user) is not
// in it: the figure is a floor of what the sandbox costs.
func processStart(b testing.TB, m *testbed.Machine, name string, props []string) float64 {
	ctx := context.Background()
	// A oneshot's start job ends when its process has: systemd-run returns
	// then, and the unit stays (RemainAfterExit=) to be asked.
	args := append([]string{"systemd-run", "--quiet", "--unit=" + name, "-p", "Type=oneshot", "-p", "RemainAfterExit=yes"}, props...)
	if out, stderr, err := m.Run(ctx, append(args, "/bin/true")...); err != nil {
		b.Fatalf("%s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	out, stderr, err := m.Run(ctx, "systemctl", "show", "-P", "ExecMainStartTimestampMonotonic", "-P", "ExecMainExitTimestampMonotonic", name)
	if err != nil {
		b.Fatalf("systemctl show %s: %v\n%s", name, err, stderr)
	}
	f := strings.Fields(out)
	if _, _, err := m.Run(ctx, "systemctl", "stop", name); err != nil {
		b.Fatalf("systemctl stop %s: %v", name, err)
	}
	if len(f) != 2 {
		b.Fatalf("systemctl show %s: %q", name, out)
	}
	start, err1 := strconv.ParseFloat(f[0], 64)
	exit, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || exit <= start {
		b.Fatalf("systemctl show %s: %q", name, out)
	}
	return (exit - start) / 1000
}

// BenchmarkUnitHardening: what the sandbox of each boot-chain unit costs a
// process start, side by side with the same start bare. Per run and unit,
// /bin/true is started 10 times as a transient unit with the unit's [Service]
// sandbox settings (systemd/<unit>.service.in less what says what runs and
// when), interleaved with 10 starts without them; a run's figure is the
// median of its 10, from systemd's own timestamps (fork to exit), in a
// container of the test bed with nothing else running in it.
func BenchmarkUnitHardening(b *testing.B) {
	m := testbed.Boot(b, testbed.MachineOptions{})
	// What the units' ReadWritePaths= and BindPaths= name, as a device has it.
	if _, stderr, err := m.Run(context.Background(), "mkdir", "-p", "/run/edgeseal", "/var/lib/edgeseal-vault"); err != nil {
		b.Fatalf("mkdir: %v\n%s", err, stderr)
	}
	bare := newSeries("bare", "ms")
	type figs struct{ hardened, cost, seccomp *series }
	perUnit := map[string]figs{}
	props, noFilter := map[string][]string{}, map[string][]string{}
	for _, u := range hardenedUnits {
		props[u] = unitHardening(b, u)
		noFilter[u] = withoutSyscallFilter(props[u])
		perUnit[u] = figs{newSeries(u+"-hardened", "ms"), newSeries(u+"-hardening-cost", "ms"), newSeries(u+"-syscall-filter-cost", "ms")}
	}
	n := 0
	for range b.N {
		var runBare series
		runHard, runNoFilter := map[string]*series{}, map[string]*series{}
		for _, u := range hardenedUnits {
			runHard[u], runNoFilter[u] = &series{}, &series{}
		}
		for range 10 {
			n++
			runBare.Add(processStart(b, m, fmt.Sprintf("bench-bare-%d.service", n), nil))
			for _, u := range hardenedUnits {
				runHard[u].Add(processStart(b, m, fmt.Sprintf("bench-%s-%d.service", u, n), props[u]))
				runNoFilter[u].Add(processStart(b, m, fmt.Sprintf("bench-%s-nofilter-%d.service", u, n), noFilter[u]))
			}
		}
		bare.Add(runBare.Median())
		for _, u := range hardenedUnits {
			perUnit[u].hardened.Add(runHard[u].Median())
			perUnit[u].cost.Add(runHard[u].Median() - runBare.Median())
			perUnit[u].seccomp.Add(runHard[u].Median() - runNoFilter[u].Median())
		}
	}
	var rows [][]string
	bare.Report(b)
	for _, u := range hardenedUnits {
		f := perUnit[u]
		f.hardened.Report(b)
		f.cost.Report(b)
		f.seccomp.Report(b)
		rows = append(rows, []string{u, bare.String(), f.hardened.String(), f.cost.String(), f.seccomp.String()})
	}
	table(b, "a process start (systemd's fork to the exit of /bin/true) with each unit's sandbox and without; "+
		"of the sandbox's cost, the system-call filter's (the sandbox less its SystemCallFilter= lines, side by side)",
		[]string{"unit's sandbox", "bare", "with it", "what it costs", "of which SystemCallFilter="}, rows)
}

// withoutSyscallFilter is props less its SystemCallFilter= settings: what the
// rest of the sandbox costs, to tell the filter's share (systemd builds the
// seccomp filter from the named sets in the child at every start).
func withoutSyscallFilter(props []string) []string {
	var out []string
	for i := 0; i+1 < len(props); i += 2 {
		if strings.HasPrefix(props[i+1], "SystemCallFilter=") {
			continue
		}
		out = append(out, props[i], props[i+1])
	}
	return out
}
