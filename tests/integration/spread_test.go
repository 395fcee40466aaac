//go:build integration

package integration

// The spread suites (spread.yaml, tests/spread/*/*/task.yaml) run on VMs with
// spread. This file runs the same tasks here, each on a fresh device: systemd as
// PID 1 in a container over the host's /usr with `make install`'s tree and the
// OpenBao build at /usr/bin/bao overlaid, as spread.yaml's prepare installs them
// (so EDGESEAL_PREINSTALLED=1 tells the project prepare to skip installing). A task that needs what this machine lacks says so with
// EDGESEAL_NEEDS in its environment; it is listed as not run, with why, never
// dropped silently. See docs/spread.md.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeseal/edgeseal/internal/vaultbin"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// spreadTasksDir holds the suites, relative to the project (the repository).
const spreadTasksDir = "tests/spread"

// spreadBackend is the SPREAD_BACKEND the tasks see when this runner runs them.
const spreadBackend = "edgeseal-container"

// spreadMaxReboots bounds how often one script may REBOOT.
const spreadMaxReboots = 3

// spreadStepTimeout bounds one script (spread's default kill-timeout is 15m).
const spreadStepTimeout = 10 * time.Minute

// spreadEnv is a spread environment: ordered, as later values may refer to
// earlier ones.
type spreadEnv struct {
	keys []string
	vals map[string]string
}

func (e *spreadEnv) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: environment must be a mapping", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: environment value of %s must be a string", v.Line, k.Value)
		}
		if _, dup := e.vals[k.Value]; dup {
			return fmt.Errorf("line %d: variable %q defined twice", k.Line, k.Value)
		}
		e.Set(k.Value, v.Value)
	}
	return nil
}

// Set sets key, in its place if it is already there, else at the end.
func (e *spreadEnv) Set(key, value string) {
	if e.vals == nil {
		e.vals = map[string]string{}
	}
	if _, ok := e.vals[key]; !ok {
		e.keys = append(e.keys, key)
	}
	e.vals[key] = value
}

func (e *spreadEnv) Get(key string) (string, bool) {
	v, ok := e.vals[key]
	return v, ok
}

// merge appends (or replaces in place) the variables of others, in order: the
// cascade project, suite, task.
func (e *spreadEnv) merge(others ...spreadEnv) {
	for _, o := range others {
		for _, k := range o.keys {
			e.Set(k, o.vals[k])
		}
	}
}

// spreadProject is spread.yaml, every key spread knows (decoded strictly, so a
// misspelt key is an error here, not a silently ignored script).
type spreadProject struct {
	Name        string                       `yaml:"project"`
	Path        string                       `yaml:"path"`
	Environment spreadEnv                    `yaml:"environment"`
	Backends    map[string]*spreadBackendDef `yaml:"backends"`
	Suites      map[string]*spreadSuite      `yaml:"suites"`
	Prepare     string                       `yaml:"prepare"`
	Restore     string                       `yaml:"restore"`
	Debug       string                       `yaml:"debug"`
	PrepareEach string                       `yaml:"prepare-each"`
	RestoreEach string                       `yaml:"restore-each"`
	DebugEach   string                       `yaml:"debug-each"`
	Repack      string                       `yaml:"repack"`
	Include     []string                     `yaml:"include"`
	Exclude     []string                     `yaml:"exclude"`
	Rename      []string                     `yaml:"rename"`
	WarnTimeout string                       `yaml:"warn-timeout"`
	KillTimeout string                       `yaml:"kill-timeout"`
}

type spreadBackendDef struct {
	Type        string         `yaml:"type"`
	Key         string         `yaml:"key"`
	Allocate    string         `yaml:"allocate"`
	Discard     string         `yaml:"discard"`
	Memory      string         `yaml:"memory"`
	Plan        string         `yaml:"plan"`
	Location    string         `yaml:"location"`
	Storage     string         `yaml:"storage"`
	Systems     []spreadSystem `yaml:"systems"`
	Environment spreadEnv      `yaml:"environment"`
	Prepare     string         `yaml:"prepare"`
	Restore     string         `yaml:"restore"`
	Debug       string         `yaml:"debug"`
	PrepareEach string         `yaml:"prepare-each"`
	RestoreEach string         `yaml:"restore-each"`
	DebugEach   string         `yaml:"debug-each"`
	Variants    []string       `yaml:"variants"`
	WarnTimeout string         `yaml:"warn-timeout"`
	KillTimeout string         `yaml:"kill-timeout"`
	HaltTimeout string         `yaml:"halt-timeout"`
	Priority    int            `yaml:"priority"`
	Manual      bool           `yaml:"manual"`
}

// spreadSystem is a system of a backend: a bare name, or a name mapping to its
// settings.
type spreadSystem struct {
	Name               string
	Username, Password string
	Image              string
}

func (s *spreadSystem) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.Name = n.Value
		return nil
	}
	var m map[string]struct {
		Image       string    `yaml:"image"`
		Kernel      string    `yaml:"kernel"`
		Username    string    `yaml:"username"`
		Password    string    `yaml:"password"`
		Workers     int       `yaml:"workers"`
		Preserve    bool      `yaml:"preserve"`
		Environment spreadEnv `yaml:"environment"`
		Variants    []string  `yaml:"variants"`
		Priority    int       `yaml:"priority"`
		Manual      bool      `yaml:"manual"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	if len(m) != 1 {
		return fmt.Errorf("line %d: a system is one name", n.Line)
	}
	for name, v := range m {
		s.Name, s.Username, s.Password, s.Image = name, v.Username, v.Password, v.Image
	}
	return nil
}

type spreadSuite struct {
	Summary     string    `yaml:"summary"`
	Systems     []string  `yaml:"systems"`
	Backends    []string  `yaml:"backends"`
	Variants    []string  `yaml:"variants"`
	Environment spreadEnv `yaml:"environment"`
	Prepare     string    `yaml:"prepare"`
	Restore     string    `yaml:"restore"`
	Debug       string    `yaml:"debug"`
	PrepareEach string    `yaml:"prepare-each"`
	RestoreEach string    `yaml:"restore-each"`
	DebugEach   string    `yaml:"debug-each"`
	WarnTimeout string    `yaml:"warn-timeout"`
	KillTimeout string    `yaml:"kill-timeout"`
	Priority    int       `yaml:"priority"`
	Manual      bool      `yaml:"manual"`
}

// spreadTask is a task.yaml.
type spreadTask struct {
	Summary     string    `yaml:"summary"`
	Details     string    `yaml:"details"`
	Systems     []string  `yaml:"systems"`
	Backends    []string  `yaml:"backends"`
	Variants    []string  `yaml:"variants"`
	Environment spreadEnv `yaml:"environment"`
	Samples     int       `yaml:"samples"`
	Prepare     string    `yaml:"prepare"`
	Execute     string    `yaml:"execute"`
	Restore     string    `yaml:"restore"`
	Debug       string    `yaml:"debug"`
	Residue     []string  `yaml:"residue"`
	Artifacts   []string  `yaml:"artifacts"`
	WarnTimeout string    `yaml:"warn-timeout"`
	KillTimeout string    `yaml:"kill-timeout"`
	Priority    int       `yaml:"priority"`
	Manual      bool      `yaml:"manual"`

	Suite string `yaml:"-"` // spread's suite name: "tests/spread/tokens/"
	Name  string `yaml:"-"` // spread's task name: "tests/spread/tokens/service-tokens"
}

// ID is the task's name under tests/spread: "tokens/service-tokens".
func (t *spreadTask) ID() string { return strings.TrimPrefix(t.Name, spreadTasksDir+"/") }

// Spread's own name rules (spread/project.go).
var (
	spreadValidName  = regexp.MustCompile(`^[a-z0-9]+(?:[-._][a-z0-9]+)*$`)
	spreadValidSuite = regexp.MustCompile(`^(?:[a-z0-9]+(?:[-._][a-z0-9]+)*/)+$`)
	spreadValidTask  = regexp.MustCompile(`^(?:[a-z0-9]+(?:[-._][a-z0-9]+)*/)+[a-z0-9]+(?:[-._][a-z0-9]+)*$`)
	spreadVarName    = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*(?:/[a-zA-Z0-9_]+(?:,[a-zA-Z0-9_]+)*)?$`)
	spreadHostCmd    = regexp.MustCompile(`\$\(HOST:.+?\)`)
)

func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// loadSpreadProject reads spread.yaml under root.
func loadSpreadProject(root string) (*spreadProject, error) {
	data, err := os.ReadFile(filepath.Join(root, "spread.yaml"))
	if err != nil {
		return nil, err
	}
	var p spreadProject
	if err := decodeStrict(data, &p); err != nil {
		return nil, fmt.Errorf("spread.yaml: %w", err)
	}
	return &p, nil
}

// spreadSuiteDirs lists the suites found on disk: every directory under
// tests/spread with at least one <task>/task.yaml, as spread names them
// ("tests/spread/tokens/"). A new suite directory is picked up by being there.
func spreadSuiteDirs(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, spreadTasksDir))
	if err != nil {
		return nil, err
	}
	var suites []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		tasks, _ := filepath.Glob(filepath.Join(root, spreadTasksDir, e.Name(), "*", "task.yaml"))
		if len(tasks) > 0 {
			suites = append(suites, spreadTasksDir+"/"+e.Name()+"/")
		}
	}
	return suites, nil
}

// loadSpreadTasks reads every task of the suites on disk, sorted by name.
func loadSpreadTasks(root string) ([]*spreadTask, error) {
	suites, err := spreadSuiteDirs(root)
	if err != nil {
		return nil, err
	}
	var tasks []*spreadTask
	for _, suite := range suites {
		files, _ := filepath.Glob(filepath.Join(root, suite, "*", "task.yaml"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			task := &spreadTask{}
			rel, _ := filepath.Rel(root, filepath.Dir(f))
			if err := decodeStrict(data, task); err != nil {
				return nil, fmt.Errorf("%s/task.yaml: %w", rel, err)
			}
			task.Suite, task.Name = suite, filepath.ToSlash(rel)
			tasks = append(tasks, task)
		}
	}
	slices.SortFunc(tasks, func(a, b *spreadTask) int { return strings.Compare(a.Name, b.Name) })
	return tasks, nil
}

// The features a task may need (EDGESEAL_NEEDS: space- or comma-separated).
const spreadNeedsVar = "EDGESEAL_NEEDS"

var spreadKnownNeeds = []string{"apparmor", "kvm"}

// hostFeatures says, for each known need, "" if this machine has it, else why not.
func hostFeatures() map[string]string {
	f := map[string]string{}
	if _, err := os.Stat("/sys/kernel/security/apparmor"); err != nil {
		f["apparmor"] = "this kernel does not enforce AppArmor (/sys/kernel/security/apparmor absent)"
	} else {
		f["apparmor"] = ""
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		f["kvm"] = "no /dev/kvm on this machine"
	} else {
		f["kvm"] = ""
	}
	return f
}

// taskNeeds is the task's EDGESEAL_NEEDS after the cascade project, suite, task.
func taskNeeds(p *spreadProject, task *spreadTask) []string {
	var env spreadEnv
	env.merge(p.Environment)
	if s := p.Suites[task.Suite]; s != nil {
		env.merge(s.Environment)
	}
	env.merge(task.Environment)
	v, _ := env.Get(spreadNeedsVar)
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

type spreadNotRun struct {
	Task   string
	Reason string
}

// planSpread splits the tasks into those that can run here and those that
// cannot, with the reason: a feature this machine lacks, or an unknown need.
func planSpread(p *spreadProject, tasks []*spreadTask, features map[string]string) (run []*spreadTask, notRun []spreadNotRun) {
	for _, task := range tasks {
		var why []string
		for _, need := range taskNeeds(p, task) {
			reason, known := features[need]
			switch {
			case !known:
				why = append(why, fmt.Sprintf("needs %q, which this runner does not know (known: %s)", need, strings.Join(spreadKnownNeeds, ", ")))
			case reason != "":
				why = append(why, "needs "+need+": "+reason)
			}
		}
		if len(why) > 0 {
			notRun = append(notRun, spreadNotRun{Task: task.ID(), Reason: strings.Join(why, "; ")})
		} else {
			run = append(run, task)
		}
	}
	return run, notRun
}

// formatNotRun is the list printed by every run.
func formatNotRun(notRun []spreadNotRun) string {
	if len(notRun) == 0 {
		return "spread tasks not run here: none"
	}
	var b strings.Builder
	b.WriteString("spread tasks not run here:")
	for _, n := range notRun {
		fmt.Fprintf(&b, "\n  %s: %s", n.Task, n.Reason)
	}
	return b.String()
}

// spreadSystemName is this machine as a spread system name: debian-12-64.
func spreadSystemName() string {
	data, _ := os.ReadFile("/etc/os-release")
	vals := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vals[k] = strings.Trim(v, `"`)
		}
	}
	bits := "64"
	if strings.HasSuffix(runtime.GOARCH, "32") || runtime.GOARCH == "386" || runtime.GOARCH == "arm" {
		bits = "32"
	}
	return vals["ID"] + "-" + vals["VERSION_ID"] + "-" + bits
}

// spreadScriptHeader is what spread defines for every script: strict bash, its
// helper functions, the environment. REBOOT writes the marker the runner reads
// after the script, and ends the script.
const spreadScriptHeader = `set -eu
exec 2>&1
REBOOT() { { set +xu; } 2>/dev/null; printf '%s\n' "${1:-}" > "$EDGESEAL_SPREAD_REBOOT_MARKER"; echo "<REBOOT${1:+ $1}>"; exit 0; }
ERROR() { { set +xu; } 2>/dev/null; echo "<ERROR $*>"; exit 213; }
MATCH() ( { set +xu; } 2>/dev/null; [ ${#@} -gt 0 ] || { echo "error: missing regexp argument"; return 1; }; local stdin="$(cat)"; grep -q -E "$@" <<< "$stdin" || { res=$?; echo "grep error: pattern not found, got:
$stdin">&2; if [ $res != 1 ]; then echo "unexpected grep exit status: $res"; fi; return 1; }; )
NOMATCH() ( { set +xu; } 2>/dev/null; [ ${#@} -gt 0 ] || { echo "error: missing regexp argument"; return 1; }; local stdin="$(cat)"; if echo "$stdin" | grep -q -E "$@"; then echo "NOMATCH pattern='$@' found in:
$stdin">&2; return 1; fi; )
export DEBIAN_FRONTEND=noninteractive
export DEBIAN_PRIORITY=critical
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin
`

// spreadScript is one script as this runner sends it: spread's header, the
// environment exported as spread does (double-quoted, so values may refer to
// earlier variables), cd to dir, then the body traced.
func spreadScript(env *spreadEnv, dir, body string) string {
	var b strings.Builder
	b.WriteString(spreadScriptHeader)
	for _, k := range env.keys {
		v := env.vals[k]
		if v == "" || v[0] == '"' || v[0] == '\'' {
			fmt.Fprintf(&b, "export %s=%s\n", k, v)
		} else {
			fmt.Fprintf(&b, "export %s=\"%s\"\n", k, v)
		}
	}
	fmt.Fprintf(&b, "cd %q\nset -x\n%s\n", dir, strings.TrimSpace(body))
	return b.String()
}

// spreadRun runs one task on one fresh device.
type spreadRun struct {
	t       *testing.T
	m       *testbed.Machine
	remote  string // SPREAD_PATH inside
	project string // its host directory
	env     spreadEnv
}

// spreadRunDir is where the runner keeps its scripts and reboot marker, relative
// to the project.
const spreadRunDir = ".spread-runner"

// copySpreadProject copies what the tasks use of the repository (spread.yaml,
// tests/spread, tests/lib, apparmor/, docs/examples/) into dst, as spread sends
// the project.
func copySpreadProject(src, dst string) error {
	for _, rel := range []string{"spread.yaml", spreadTasksDir, "tests/lib", "apparmor", "docs/examples"} {
		from := filepath.Join(src, rel)
		if _, err := os.Stat(from); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			r, _ := filepath.Rel(src, path)
			target := filepath.Join(dst, r)
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				return os.MkdirAll(target, 0o755)
			case info.Mode().IsRegular():
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
					return err
				}
				return os.WriteFile(target, data, info.Mode().Perm())
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// evalHostCommands replaces spread's $(HOST:cmd) with cmd's output on this
// machine, with extra in its environment.
func evalHostCommands(value string, extra map[string]string) (string, error) {
	var failed error
	out := spreadHostCmd.ReplaceAllStringFunc(value, func(ref string) string {
		cmd := exec.Command("/bin/bash", "-c", ref[len("$(HOST:"):len(ref)-1])
		cmd.Env = os.Environ()
		for k, v := range extra {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		o, err := cmd.Output()
		if err != nil && failed == nil {
			failed = fmt.Errorf("%s: %v", ref, err)
		}
		return strings.TrimRight(string(o), "\n")
	})
	return out, failed
}

// runSpreadTask boots a fresh device and runs the task on it as spread runs a
// job: project prepare, suite prepare, prepare-each, task prepare, execute, then
// every restore whose prepare ran, failures or not. It returns the first failure
// with the output of the script that failed, and the project's host directory.
func runSpreadTask(t *testing.T, p *spreadProject, task *spreadTask) (string, error) {
	t.Helper()
	r := &spreadRun{t: t, remote: p.Path, project: filepath.Join(t.TempDir(), "project")}
	return r.project, r.runTask(p, task)
}

func (r *spreadRun) runTask(p *spreadProject, task *spreadTask) error {
	t := r.t
	t.Helper()
	state := filepath.Dir(r.project)
	dirs := map[string]string{
		r.project:                                  r.remote,
		filepath.Join(state, "etc-edgeseal"):       "/etc/edgeseal",
		filepath.Join(state, "etc-systemd-system"): "/etc/systemd/system",
		// The machine's disk across its reboots: /var/lib (edgeseal's state,
		// Vault's storage, systemd's own), /etc/edgeseal, /etc/systemd/system
		// and the project.
		filepath.Join(state, "var-lib"): "/var/lib",
	}
	var binds []testbed.Bind
	for host, inside := range dirs {
		if err := os.MkdirAll(host, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(host, 0o755); err != nil {
			return err
		}
		binds = append(binds, testbed.Bind{Host: host, Container: inside})
	}
	slices.SortFunc(binds, func(a, b testbed.Bind) int { return strings.Compare(a.Container, b.Container) })
	if err := copySpreadProject(repoRoot(), r.project); err != nil {
		return fmt.Errorf("cannot copy the project: %w", err)
	}
	for _, d := range []string{task.Name, spreadRunDir} {
		if err := os.MkdirAll(filepath.Join(r.project, d), 0o755); err != nil {
			return err
		}
	}

	// The environment: spread's own variables, then the cascade project,
	// suite, task; then this runner's: the project is preinstalled, and every
	// EDGESEAL_*_PORT is a free loopback port (tasks on one machine at a time
	// would not need it; here the host's network is shared).
	suite := p.Suites[task.Suite]
	if suite == nil {
		suite = &spreadSuite{}
	}
	r.env.Set("SPREAD_JOB", spreadBackend+":"+spreadSystemName()+":"+task.Name)
	r.env.Set("SPREAD_PROJECT", p.Name)
	r.env.Set("SPREAD_PATH", p.Path)
	r.env.Set("SPREAD_BACKEND", spreadBackend)
	r.env.Set("SPREAD_SYSTEM", spreadSystemName())
	r.env.Set("SPREAD_SUITE", task.Suite)
	r.env.Set("SPREAD_TASK", task.Name)
	r.env.Set("SPREAD_VARIANT", "")
	r.env.Set("SPREAD_SAMPLE", "1")
	r.env.merge(p.Environment, suite.Environment, task.Environment)
	// No store here: a task that installs snaps runs snapd offline
	// (tests/lib/snapd-offline.sh), and gets them packed on the host
	// (buildSnaps), bound in, rather than packing them itself.
	overrides := map[string]string{"EDGESEAL_PREINSTALLED": "1", "EDGESEAL_OFFLINE_SNAPD": "1"}
	cpu := ""
	if _, ok := r.env.Get("EDGESEAL_SNAPS"); ok {
		binds = append(binds, testbed.Bind{Host: buildSnaps(t), Container: "/srv/edgeseal-snaps", ReadOnly: true})
		overrides["EDGESEAL_SNAPS"] = "/srv/edgeseal-snaps"
		cpu = "0" // for snap-confine: see testbed.MachineOptions.CPU
	}
	if _, ok := r.env.Get("EDGESEAL_VAULT_DISK"); ok {
		// A container cannot make a loop device: the file vaults' disk is made
		// on the host and bound in.
		disk := testbed.NewEncryptFS(t, "64M")
		binds = append(binds, testbed.Bind{Host: disk.Mount, Container: "/var/lib/edgeseal/vaults"})
		overrides["EDGESEAL_VAULT_DISK"] = "provided"
	}
	for _, k := range r.env.keys {
		if strings.HasPrefix(k, "EDGESEAL_") && strings.HasSuffix(k, "_PORT") {
			overrides[k] = strconv.Itoa(testbed.FreeLoopbackPort(t))
		}
	}
	for _, k := range r.env.keys {
		v, err := evalHostCommands(r.env.vals[k], overrides)
		if err != nil {
			return fmt.Errorf("environment of %s: %w", task.Name, err)
		}
		r.env.vals[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(overrides)) {
		r.env.Set(k, overrides[k])
	}
	r.env.Set("EDGESEAL_SPREAD_REBOOT_MARKER", r.remote+"/"+spreadRunDir+"/reboot")

	t0 := time.Now()
	// OpenBao whatever EDGESEAL_SERVER says: the tasks run `bao`, which
	// spread.yaml's prepare installs.
	r.m = testbed.Boot(t, testbed.MachineOptions{UsrOverlay: filepath.Join(installRoots[string(vaultbin.OpenBao)], "usr"), Binds: binds, CPU: cpu})
	t.Logf("device booted in %v", time.Since(t0).Round(time.Millisecond))

	type level struct{ name, dir, prepare, restore string }
	remoteSuite := r.remote + "/" + strings.TrimSuffix(task.Suite, "/")
	remoteTask := r.remote + "/" + task.Name
	levels := []level{
		{"project", r.remote, p.Prepare, p.Restore},
		{"suite", remoteSuite, suite.Prepare, suite.Restore},
		{"project each", r.remote, p.PrepareEach, p.RestoreEach},
		{"suite each", remoteSuite, suite.PrepareEach, suite.RestoreEach},
		{"task", remoteTask, task.Prepare, task.Restore},
	}
	var failure error
	prepared := 0
	for _, l := range levels {
		prepared++
		if err := r.step(l.name+" prepare", l.dir, l.prepare); err != nil {
			failure = err
			break
		}
	}
	if failure == nil {
		if err := r.step("execute", remoteTask, task.Execute); err != nil {
			failure = err
		}
	}
	if failure != nil && task.Debug != "" {
		if err := r.step("debug", remoteTask, task.Debug); err != nil {
			t.Logf("debug script: %v", err)
		}
	}
	for i := prepared - 1; i >= 0; i-- {
		l := levels[i]
		if err := r.step(l.name+" restore", l.dir, l.restore); err != nil && failure == nil {
			failure = err
		}
	}
	return failure
}

// step runs one script inside the device; a script that calls REBOOT has the
// device rebooted and runs again with SPREAD_REBOOT set (the count, or REBOOT's
// argument), at most spreadMaxReboots times.
func (r *spreadRun) step(name, dir, body string) error {
	r.t.Helper()
	if strings.TrimSpace(body) == "" {
		return nil
	}
	rebootKey := "0"
	marker := filepath.Join(r.project, spreadRunDir, "reboot")
	for reboots := 0; ; reboots++ {
		os.Remove(marker)
		env := r.env
		env.keys = slices.Clone(r.env.keys)
		env.vals = map[string]string{}
		for k, v := range r.env.vals {
			env.vals[k] = v
		}
		env.Set("SPREAD_REBOOT", rebootKey)
		file := strings.ReplaceAll(name, " ", "-") + ".sh"
		script := filepath.Join(r.project, spreadRunDir, file)
		if err := os.WriteFile(script, []byte(spreadScript(&env, dir, body)), 0o644); err != nil {
			return err
		}
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), spreadStepTimeout)
		out, errOut, err := r.m.Run(ctx, "bash", r.remote+"/"+spreadRunDir+"/"+file)
		cancel()
		out += errOut
		took := time.Since(t0).Round(time.Millisecond)
		key, rebootErr := os.ReadFile(marker)
		if rebootErr != nil {
			if err != nil {
				return fmt.Errorf("%s failed after %v (SPREAD_REBOOT=%s): %v\n-----\n%s\n-----", name, took, rebootKey, err, strings.TrimSpace(out))
			}
			r.t.Logf("%s: ok (%v)", name, took)
			if os.Getenv("EDGESEAL_SPREAD_OUTPUT") != "" {
				r.t.Logf("output of %s:\n%s", name, strings.TrimSpace(out))
			}
			return nil
		}
		if reboots >= spreadMaxReboots {
			return fmt.Errorf("%s asked to reboot more than %d times\n-----\n%s\n-----", name, spreadMaxReboots, strings.TrimSpace(out))
		}
		r.t.Logf("%s: REBOOT after %v; rebooting the device", name, took)
		t0 = time.Now()
		r.m.Reboot(r.t)
		r.t.Logf("device rebooted in %v", time.Since(t0).Round(time.Millisecond))
		if rebootKey = strings.TrimSpace(string(key)); rebootKey == "" {
			rebootKey = strconv.Itoa(reboots + 1)
		}
	}
}

// TestSpreadTasksRunHere runs every spread task this machine can run, each on a
// fresh device, and lists the others with why.
func TestSpreadTasksRunHere(t *testing.T) {
	p, err := loadSpreadProject(repoRoot())
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := loadSpreadTasks(repoRoot())
	if err != nil {
		t.Fatal(err)
	}
	run, notRun := planSpread(p, tasks, hostFeatures())
	list := formatNotRun(notRun)
	t.Log(list)
	fmt.Println(list)
	// go test shows a passing package's output only with -v: `make test` names
	// a file here and prints it after the run.
	if report := os.Getenv("EDGESEAL_SPREAD_REPORT"); report != "" {
		if err := os.WriteFile(report, []byte(list+"\n"), 0o644); err != nil {
			t.Fatalf("cannot write the spread report: %v", err)
		}
	}
	if len(run) == 0 {
		t.Fatalf("no spread task can run here (%d tasks)", len(tasks))
	}
	for _, task := range run {
		t.Run(task.ID(), func(t *testing.T) {
			t.Logf("%s: %s", task.Name, task.Summary)
			t0 := time.Now()
			if _, err := runSpreadTask(t, p, task); err != nil {
				t.Fatalf("%s: %v", task.Name, err)
			}
			t.Logf("%s passed in %v", task.Name, time.Since(t0).Round(time.Millisecond))
		})
	}
}

// TestSpreadRunnerFailsAFailingTask runs made-up tasks through the same
// executor: a failing execute (or prepare) is an error, restore runs anyway, and
// REBOOT reboots the device and runs execute again with SPREAD_REBOOT=1.
func TestSpreadRunnerFailsAFailingTask(t *testing.T) {
	p, err := loadSpreadProject(repoRoot())
	if err != nil {
		t.Fatal(err)
	}
	p.Suites = map[string]*spreadSuite{"tests/spread-selftest/": {Summary: "the runner's own checks"}}
	restored := "touch " + p.Path + "/" + spreadRunDir + "/restored"
	cases := []struct {
		name    string
		task    spreadTask
		wantErr string
	}{
		{"exit-1", spreadTask{Summary: "execute exits 1", Execute: "exit 1", Restore: restored}, "execute failed"},
		{"set-e", spreadTask{Summary: "a command fails midway", Execute: "true\nfalse\necho unreachable > unreachable", Restore: restored}, "execute failed"},
		{"prepare-fails", spreadTask{Summary: "prepare fails", Prepare: "exit 3", Execute: "touch executed", Restore: restored}, "task prepare failed"},
		{"match", spreadTask{Summary: "MATCH without a match", Execute: "echo hello | MATCH '^bye$'", Restore: restored}, "pattern not found"},
		{"reboot", spreadTask{Summary: "REBOOT, then SPREAD_REBOOT=1", Restore: restored, Execute: `if [ "$SPREAD_REBOOT" = 0 ]; then
    touch /run/before-reboot
    REBOOT
fi
test "$SPREAD_REBOOT" = 1
test ! -e /run/before-reboot`}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			task := c.task
			task.Suite, task.Name = "tests/spread-selftest/", "tests/spread-selftest/"+c.name
			project, err := runSpreadTask(t, p, &task)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("want success, got %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("want an error with %q, got %v", c.wantErr, err)
			}
			if err != nil {
				t.Logf("the runner reports, as it should: %v", err)
			}
			if _, err := os.Stat(filepath.Join(project, spreadRunDir, "restored")); err != nil {
				t.Errorf("restore did not run: %v", err)
			}
			for _, never := range []string{"unreachable", "executed"} {
				if _, err := os.Stat(filepath.Join(project, task.Name, never)); err == nil {
					t.Errorf("%s exists: the script went on after a failure", never)
				}
			}
		})
	}
}

// TestSpreadNotRunListing checks the plan and the list of tasks not run here.
func TestSpreadNotRunListing(t *testing.T) {
	p := &spreadProject{Suites: map[string]*spreadSuite{
		"tests/spread/a/": {},
		"tests/spread/b/": {Environment: spreadEnv{keys: []string{spreadNeedsVar}, vals: map[string]string{spreadNeedsVar: "kvm"}}},
	}}
	needs := func(v string) spreadEnv {
		return spreadEnv{keys: []string{spreadNeedsVar}, vals: map[string]string{spreadNeedsVar: v}}
	}
	tasks := []*spreadTask{
		{Suite: "tests/spread/a/", Name: "tests/spread/a/plain"},
		{Suite: "tests/spread/a/", Name: "tests/spread/a/confined", Environment: needs("apparmor")},
		{Suite: "tests/spread/a/", Name: "tests/spread/a/both", Environment: needs("apparmor, kvm")},
		{Suite: "tests/spread/a/", Name: "tests/spread/a/typo", Environment: needs("apparrmor")},
		{Suite: "tests/spread/b/", Name: "tests/spread/b/inherits"},
		{Suite: "tests/spread/b/", Name: "tests/spread/b/overrides", Environment: needs("")},
	}
	features := map[string]string{"apparmor": "no AppArmor here", "kvm": ""}
	run, notRun := planSpread(p, tasks, features)
	var ran []string
	for _, r := range run {
		ran = append(ran, r.ID())
	}
	if want := []string{"a/plain", "b/inherits", "b/overrides"}; !slices.Equal(ran, want) {
		t.Errorf("run %v, want %v", ran, want)
	}
	want := "spread tasks not run here:\n" +
		"  a/confined: needs apparmor: no AppArmor here\n" +
		"  a/both: needs apparmor: no AppArmor here\n" +
		`  a/typo: needs "apparrmor", which this runner does not know (known: apparmor, kvm)`
	if got := formatNotRun(notRun); got != want {
		t.Errorf("listing:\n%s\nwant:\n%s", got, want)
	}
	features["kvm"] = "no /dev/kvm on this machine"
	_, notRun = planSpread(p, tasks, features)
	got := formatNotRun(notRun)
	for _, line := range []string{"a/both: needs apparmor: no AppArmor here; needs kvm: no /dev/kvm", "b/inherits: needs kvm: no /dev/kvm"} {
		if !strings.Contains(got, line) {
			t.Errorf("listing lacks %q:\n%s", line, got)
		}
	}
	if strings.Contains(got, "b/overrides") || strings.Contains(got, "a/plain") {
		t.Errorf("listing names a task that runs:\n%s", got)
	}
	if got := formatNotRun(nil); got != "spread tasks not run here: none" {
		t.Errorf("empty listing: %q", got)
	}
	if f := hostFeatures(); len(f) != len(spreadKnownNeeds) {
		t.Errorf("hostFeatures %v does not cover %v", f, spreadKnownNeeds)
	}
}

// TestSpreadProjectIsConsistent is `spread -list`'s checks and a few more,
// without a machine: spread.yaml and every task.yaml parse with only keys spread
// knows, names are valid, suites in spread.yaml and on disk match, every task has
// a summary and an execute, every script is valid bash, a task that REBOOTs
// looks at SPREAD_REBOOT, and every EDGESEAL_NEEDS is one the runner knows.
func TestSpreadProjectIsConsistent(t *testing.T) {
	root := repoRoot()
	p, err := loadSpreadProject(root)
	if err != nil {
		t.Fatal(err)
	}
	if !spreadValidName.MatchString(p.Name) || p.Name != "edgeseal" {
		t.Errorf("project name %q", p.Name)
	}
	if !filepath.IsAbs(p.Path) || filepath.Dir(p.Path) == p.Path {
		t.Errorf("path %q: must be absolute and not /", p.Path)
	}
	wantSystems := map[string][]string{
		"qemu":  {"debian-12-64", "ubuntu-22.04-64", "ubuntu-24.04-64"},
		"adhoc": nil,
	}
	for name, want := range wantSystems {
		b := p.Backends[name]
		if b == nil {
			t.Errorf("no backend %s", name)
			continue
		}
		var got []string
		for _, s := range b.Systems {
			got = append(got, s.Name)
			if name == "qemu" && (s.Username == "" || s.Password == "") {
				t.Errorf("qemu system %s: spread logs in with its username and password", s.Name)
			}
		}
		slices.Sort(got)
		if want != nil && !slices.Equal(got, want) {
			t.Errorf("backend %s systems %v, want %v", name, got, want)
		}
		if len(got) == 0 {
			t.Errorf("backend %s has no systems", name)
		}
	}
	if a := p.Backends["adhoc"]; a != nil && !strings.Contains(a.Allocate, "ADDRESS") {
		t.Errorf("adhoc allocate does not say ADDRESS")
	}
	for name, b := range p.Backends {
		typ := b.Type
		if typ == "" {
			typ = name
		}
		if (b.Allocate != "" || b.Discard != "") && typ != "adhoc" {
			t.Errorf("backend %s: only adhoc has allocate and discard", name)
		}
	}
	for name, env := range map[string]spreadEnv{"project": p.Environment} {
		checkSpreadEnv(t, name, env)
	}
	checkBash(t, "project prepare", p.Prepare)
	checkBash(t, "project restore", p.Restore)
	checkBash(t, "project prepare-each", p.PrepareEach)
	checkBash(t, "project restore-each", p.RestoreEach)

	onDisk, err := spreadSuiteDirs(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(onDisk) == 0 {
		t.Fatalf("no suites under %s", spreadTasksDir)
	}
	for _, s := range onDisk {
		if p.Suites[s] == nil {
			t.Errorf("suite directory %s is not in spread.yaml's suites: spread would not run it", s)
		}
	}
	for name, s := range p.Suites {
		if !spreadValidSuite.MatchString(name) {
			t.Errorf("suite name %q is not valid for spread (a path ending in /)", name)
		}
		if !slices.Contains(onDisk, name) {
			t.Errorf("suite %s of spread.yaml has no directory with tasks", name)
		}
		if s == nil || strings.TrimSpace(s.Summary) == "" {
			t.Errorf("suite %s has no summary", name)
			continue
		}
		checkSpreadEnv(t, "suite "+name, s.Environment)
		checkBash(t, "suite "+name+" prepare", s.Prepare)
		checkBash(t, "suite "+name+" restore", s.Restore)
	}

	tasks, err := loadSpreadTasks(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if !spreadValidTask.MatchString(task.Name) {
			t.Errorf("%s: not a valid spread task name", task.Name)
		}
		if strings.TrimSpace(task.Summary) == "" {
			t.Errorf("%s: no summary", task.Name)
		}
		if strings.TrimSpace(task.Execute) == "" {
			t.Errorf("%s: no execute", task.Name)
		}
		checkSpreadEnv(t, task.Name, task.Environment)
		for _, step := range []struct{ name, body string }{{"prepare", task.Prepare}, {"execute", task.Execute}, {"restore", task.Restore}, {"debug", task.Debug}} {
			checkBash(t, task.Name+" "+step.name, step.body)
			if strings.Contains(step.body, "REBOOT") && !strings.Contains(step.body, "SPREAD_REBOOT") {
				t.Errorf("%s %s calls REBOOT but never looks at $SPREAD_REBOOT: it would reboot forever", task.Name, step.name)
			}
		}
		for _, need := range taskNeeds(p, task) {
			if !slices.Contains(spreadKnownNeeds, need) {
				t.Errorf("%s: %s=%s: unknown (known: %v)", task.Name, spreadNeedsVar, need, spreadKnownNeeds)
			}
		}
		t.Logf("%s: %s", task.Name, task.Summary)
	}
}

func checkSpreadEnv(t *testing.T, where string, env spreadEnv) {
	t.Helper()
	for _, k := range env.keys {
		if !spreadVarName.MatchString(k) {
			t.Errorf("%s: invalid variable name %q", where, k)
		}
	}
}

// checkBash checks a script's syntax with bash -n.
func checkBash(t *testing.T, where, body string) {
	t.Helper()
	if strings.TrimSpace(body) == "" {
		return
	}
	cmd := exec.Command("bash", "-n")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: not valid bash: %v\n%s", where, err, out)
	}
}
