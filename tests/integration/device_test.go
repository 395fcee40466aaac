//go:build integration

// Package integration boots edgeseal as a user installs it (`make install`) under a
// real systemd, PID 1 in a container over the host's root, with a real server
// (OpenBao, or HashiCorp Vault: testbed.Server), and tells the story of a
// device's boots: first boot, reboot, Vault crashing, power cut at every step.
// The stories of the server matrix (onEachServer) run on both servers; every
// other test on the default one (EDGESEAL_SERVER, OpenBao unless it says vault).
package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"gopkg.in/yaml.v3"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// The install trees a device overlays on its /usr: for each server of the test
// bed (testbed.Servers), `make install DESTDIR=<root> VAULT=<srv.InstallPath>`
// with the server's build at InstallPath and the test tools in
// usr/lib/edgeseal-tests.
var (
	// installRoots are the trees by server name ("openbao", "vault").
	installRoots map[string]string
	// servers are the test bed's servers, the default first: the matrix.
	servers []testbed.Server
	// defaultServer is the server a device runs without withServer
	// (testbed.DefaultServer: EDGESEAL_SERVER, OpenBao unless it says vault),
	// and installRoot its tree.
	defaultServer testbed.Server
	installRoot   string
)

func TestMain(m *testing.M) {
	code := func() int {
		defer func() {
			if builtSnaps.dir != "" {
				os.RemoveAll(builtSnaps.dir)
			}
		}()
		var err error
		if servers, err = testbed.Servers(); err != nil {
			fmt.Fprintf(os.Stderr, "cannot run the integration tests: %v\n", err)
			return 1
		}
		if defaultServer, err = testbed.DefaultServer(); err != nil {
			fmt.Fprintf(os.Stderr, "cannot run the integration tests: %v\n", err)
			return 1
		}
		installRoots = map[string]string{}
		for _, srv := range servers {
			dir, err := os.MkdirTemp("", "edgeseal-install-"+srv.Name+"-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			if err := install(dir, srv); err != nil {
				fmt.Fprintf(os.Stderr, "cannot install edgeseal with %s for the tests: %v\n", srv, err)
				return 1
			}
			installRoots[srv.Name] = dir
		}
		installRoot = installRoots[defaultServer.Name]
		return m.Run()
	}()
	os.Exit(code)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// install makes dest the tree of a device that runs srv.
func install(dest string, srv testbed.Server) error {
	// The test build: the crash and failure hooks of edgeseal-unseal are in
	// (a release build has none). The units and profiles name srv's path.
	cmd := exec.Command("make", "-s", "-C", repoRoot(), "install", "DESTDIR="+dest, "VAULT="+srv.InstallPath, "GOTAGS=edgeseal_testhooks")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make install: %v\n%s", err, out)
	}
	// A hard link when the cache is on the same filesystem, else a copy.
	target := filepath.Join(dest, srv.InstallPath)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	if os.Link(srv.Bin, target) != nil {
		if out, err := exec.Command("cp", srv.Bin, target).CombinedOutput(); err != nil {
			return fmt.Errorf("cannot copy %s: %v: %s", srv.Bin, err, out)
		}
	}
	// Test tools run inside the devices.
	for _, tool := range []string{"tokenbench", "hammer", "mtlspeer"} {
		build := exec.Command("go", "build", "-o", filepath.Join(dest, "usr/lib/edgeseal-tests", tool), "./tests/integration/"+tool)
		build.Dir = repoRoot()
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("cannot build %s: %v\n%s", tool, err, out)
		}
	}
	// /etc/edgeseal comes from each device's own directory, not the install
	// tree; etc/apparmor.d stays, as `make install` rendered the profiles.
	return os.RemoveAll(filepath.Join(dest, "etc", "edgeseal"))
}

// onEachServer tells story once on each server of the test bed (OpenBao, then
// HashiCorp Vault), whatever EDGESEAL_SERVER says: subtests named by the
// server, whose devices are made withServer(srv). It logs how long each took.
func onEachServer(t *testing.T, story func(t *testing.T, srv testbed.Server)) {
	t.Helper()
	for _, srv := range servers {
		t.Run(srv.Name, func(t *testing.T) {
			t0 := time.Now()
			defer func() { t.Logf("%s on %s: %v", t.Name(), srv, time.Since(t0).Round(time.Millisecond)) }()
			story(t, srv)
		})
	}
}

// device is one edge device: persistent state on host directories that survive its
// reboots, and its systemd container while it runs.
type device struct {
	t       testing.TB
	srv     testbed.Server // the server it runs; its CLI is srv.InstallPath
	m       *testbed.Machine
	etc     string // /etc/edgeseal
	units   string // /etc/systemd/system
	cfg     *config.Config
	apiPort int
}

// demoHook is the vendor's key-material hook of the test devices. A real device
// reads this from its secure element or fuses; here it is a root-only file.
const demoHook = `#!/bin/sh
# Vendor hook: prints this device's input keying material (IKM) on stdout.
exec cat /etc/edgeseal/device-secret
`

// deviceOption changes a device before its first boot: more disks bound in
// (opts.Binds), units written into d.units, its server (withServer).
type deviceOption func(d *device, opts *testbed.MachineOptions)

// withServer makes the device run srv, one of testbed.Servers, rather than
// the default server: its /usr is the install tree made for srv. An option
// after it sees d.srv == srv.
func withServer(srv testbed.Server) deviceOption {
	return func(d *device, opts *testbed.MachineOptions) {
		if installRoots[srv.Name] == "" {
			d.t.Fatalf("no install tree for %s (servers: %v)", srv, servers)
		}
		d.srv = srv
	}
}

// newDevice prepares a device's disks. Its config is the default with the
// ikm-hook sealer and, unless keepDefaultPort, a free port so devices do not
// collide; edit changes it further, and each option the device before it boots.
func newDevice(t testing.TB, keepDefaultPort bool, edit func(*config.Config), options ...deviceOption) *device {
	t.Helper()
	testbed.Require(t, "systemd-nspawn", "make")
	state := t.TempDir()
	d := &device{t: t, srv: defaultServer, etc: filepath.Join(state, "etc-edgeseal"), units: filepath.Join(state, "etc-systemd-system")}
	// As on a device: /etc/edgeseal and /etc/systemd/system are readable by
	// all (the token provider's user reads the config), the state is root's.
	for dir, mode := range map[string]os.FileMode{d.etc: 0o755, d.units: 0o755,
		filepath.Join(state, "var-lib-edgeseal"): 0o700, filepath.Join(state, "var-lib-edgeseal-vault"): 0o700,
		filepath.Join(state, "var-lib-private"): 0o700} {
		if err := os.MkdirAll(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	d.cfg = config.Default()
	// The boot stories test the chain, not the sealer: they seal with the vendor
	// hook below. TestBootChainWithTheTPM and the demo seal to a TPM.
	d.cfg.Seal.Method = "ikm-hook"
	if !keepDefaultPort {
		d.apiPort = testbed.FreeLoopbackPort(t)
		d.cfg.Vault.Listen = fmt.Sprintf("127.0.0.1:%d", d.apiPort)
	}
	if edit != nil {
		edit(d.cfg)
	}
	d.writeConfig()
	secret := make([]byte, 32)
	rand.Read(secret)
	writeFile(t, filepath.Join(d.etc, "device-secret"), []byte(hex.EncodeToString(secret)), 0o600)
	writeFile(t, filepath.Join(d.etc, "ikm-hook"), []byte(demoHook), 0o700)

	opts := testbed.MachineOptions{
		Binds: []testbed.Bind{
			{Host: d.etc, Container: "/etc/edgeseal", ReadOnly: true},
			{Host: filepath.Join(state, "var-lib-edgeseal"), Container: "/var/lib/edgeseal"},
			{Host: filepath.Join(state, "var-lib-edgeseal-vault"), Container: "/var/lib/edgeseal-vault"},
			// Where systemd keeps the dynamic users' state (edgeseal-pki's
			// StateDirectory=): kept across reboots, as a device's disk.
			{Host: filepath.Join(state, "var-lib-private"), Container: "/var/lib/private"},
			{Host: d.units, Container: "/etc/systemd/system"},
		},
	}
	for _, o := range options {
		o(d, &opts)
	}
	if opts.UsrOverlay == "" {
		opts.UsrOverlay = filepath.Join(installRoots[d.srv.Name], "usr")
	}
	d.m = testbed.Boot(t, opts)
	return d
}

// writeConfig writes the config the device boots with.
func (d *device) writeConfig() {
	data, err := yaml.Marshal(d.cfg)
	if err != nil {
		d.t.Fatal(err)
	}
	writeFile(d.t, filepath.Join(d.etc, "edgeseal.yaml"), data, 0o644)
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// dropIn writes a drop-in NAME.conf of unit in /etc/systemd/system and reloads
// systemd; the returned function removes it and reloads again.
func (d *device) dropIn(unit, name, content string) (remove func()) {
	d.t.Helper()
	dir := filepath.Join(d.units, unit+".d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		d.t.Fatal(err)
	}
	writeFile(d.t, filepath.Join(dir, name+".conf"), []byte(content), 0o644)
	d.run("systemctl", "daemon-reload")
	return func() {
		d.t.Helper()
		if err := os.Remove(filepath.Join(dir, name+".conf")); err != nil {
			d.t.Fatal(err)
		}
		d.run("systemctl", "daemon-reload")
	}
}

// run runs a command inside the device and fails the test if it fails.
func (d *device) run(args ...string) string {
	d.t.Helper()
	return d.m.MustRun(d.t, args...)
}

// start starts edgeseal.target as an operator would and returns how long
// `systemctl start` took (it returns once the target is active).
func (d *device) start() time.Duration {
	d.t.Helper()
	t0 := time.Now()
	_, stderr, err := d.m.Run(context.Background(), "systemctl", "start", "edgeseal.target")
	took := time.Since(t0)
	if err != nil {
		d.t.Fatalf("systemctl start edgeseal.target: %v: %s\n%s", err, stderr, d.journal())
	}
	return took
}

func (d *device) isActive(unit string) string {
	out, _, _ := d.m.Run(context.Background(), "systemctl", "is-active", unit)
	return strings.TrimSpace(out)
}

// vaultClient is a client from the host to the device's Vault, verifying TLS
// against this boot's CA.
func (d *device) vaultClient() *api.Client {
	d.t.Helper()
	ca := d.run("cat", "/run/edgeseal/pki/ca.crt")
	f := filepath.Join(d.t.TempDir(), "ca.crt")
	writeFile(d.t, f, []byte(ca), 0o644)
	pool, err := pki.LoadCAPool(f)
	if err != nil {
		d.t.Fatal(err)
	}
	c, err := vaultclient.New(d.cfg.VaultAddr(), pool)
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

// rootToken asks the device for a maintenance root token.
func (d *device) rootToken() string {
	d.t.Helper()
	return strings.TrimSpace(d.run("edgeseal", "root-token", "--ttl", "10m"))
}

// status runs `edgeseal status --json` inside.
func (d *device) status() map[string]any {
	d.t.Helper()
	out, _, _ := d.m.Run(context.Background(), "edgeseal", "status", "--json")
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		d.t.Fatalf("edgeseal status --json: %v: %q", err, out)
	}
	return r
}

// waitUnsealed polls Vault from the host until it is unsealed; returns how long.
func (d *device) waitUnsealed(limit time.Duration) time.Duration {
	d.t.Helper()
	c := d.vaultClient()
	t0 := time.Now()
	for {
		st, err := c.Sys().SealStatus()
		if err == nil && st.Initialized && !st.Sealed {
			return time.Since(t0)
		}
		if time.Since(t0) > limit {
			d.t.Fatalf("Vault not unsealed within %v (last: %+v, %v)\n%s", limit, st, err, d.m.Journal(d.t, "edgeseal-unseal.service"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// journal is the journal of edgeseal's units, for failure messages.
func (d *device) journal() string {
	out, _, _ := d.m.Run(context.Background(), "journalctl", "--no-pager", "-o", "short-monotonic", "-u", "edgeseal*")
	return out
}

// mainPID is the main process of a unit inside the device.
func (d *device) mainPID(unit string) string {
	return strings.TrimPrefix(strings.TrimSpace(d.run("systemctl", "show", "-p", "MainPID", unit)), "MainPID=")
}
