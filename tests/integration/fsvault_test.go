//go:build integration

package integration

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsvault"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// The application of the file vault stories is docs/examples/app-with-vault.service,
// run as it is: it adds appLine to appState in the vault "images" at each start.
const (
	appUnit    = "app-with-vault.service"
	imagesUnit = "edgeseal-fsvault@images.service"
	appFile    = "app-with-vault.txt"
	appState   = "/var/lib/edgeseal/vaults/images/" + appFile
	appLine    = "app-with-vault kept this line"
)

// exampleAppUnit is docs/examples/app-with-vault.service.
func exampleAppUnit(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "docs", "examples", appUnit))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{appLine, appState, "Requires=" + imagesUnit, "After=" + imagesUnit} {
		if !strings.Contains(string(data), s) {
			t.Fatalf("docs/examples/%s no longer has %q, which the file vault tests rely on", appUnit, s)
		}
	}
	return data
}

// withFileVaults gives a device a disk for its file vaults, disk (an ext4 with
// encryption enabled) at /var/lib/edgeseal/vaults, and ships it as a device
// image would: edgeseal-fsvault.service and the example application enabled.
func withFileVaults(disk *testbed.EncryptFS) deviceOption {
	return func(d *device, opts *testbed.MachineOptions) {
		opts.Binds = append(opts.Binds, testbed.Bind{Host: disk.Mount, Container: "/var/lib/edgeseal/vaults"})
		writeFile(d.t, filepath.Join(d.units, appUnit), exampleAppUnit(d.t), 0o644)
		enableAtBoot(d, "/usr/lib/systemd/system/edgeseal-fsvault.service")
		enableAtBoot(d, "/etc/systemd/system/"+appUnit)
	}
}

// enableAtBoot does what `systemctl enable` does for a unit wanted by
// multi-user.target, before the device's first boot.
func enableAtBoot(d *device, unitPath string) {
	d.t.Helper()
	wants := filepath.Join(d.units, "multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Symlink(unitPath, filepath.Join(wants, filepath.Base(unitPath))); err != nil {
		d.t.Fatal(err)
	}
}

// newVaultDevice boots, for the first time, a device whose file vaults are on
// a disk of their own and whose vault keys sw seals to PCR 7 and pcrs.
func newVaultDevice(t *testing.T, sw *testbed.SWTPM, pcrs ...int) (*device, *testbed.EncryptFS) {
	t.Helper()
	disk := testbed.NewEncryptFS(t, "64M")
	d := newDevice(t, false, func(c *config.Config) {
		c.Seal.Method = "tpm2"
		c.Seal.TPM2.Device = swtpmSpec(sw)
		c.Seal.TPM2.PCRs = append([]int{7}, pcrs...)
	}, withFileVaults(disk))
	return d, disk
}

func swtpmSpec(sw *testbed.SWTPM) string { return fmt.Sprintf("swtpm:127.0.0.1:%d", sw.Port) }

// vaults is `edgeseal vault list --json` inside the device, by name.
func vaults(d *device) map[string]fsvault.Status {
	d.t.Helper()
	out := d.run("edgeseal", "vault", "list", "--json")
	var r struct {
		Vaults []fsvault.Status `json:"vaults"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		d.t.Fatalf("edgeseal vault list --json: %v: %q", err, out)
	}
	m := map[string]fsvault.Status{}
	for _, s := range r.Vaults {
		m[s.Name] = s
	}
	return m
}

// appLines waits (up to 10s) until the app's state in the vault has n lines and
// returns how many it has.
func appLines(d *device, n int) int {
	d.t.Helper()
	got := -1
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, _, err := d.m.Run(context.Background(), "cat", appState)
		if err != nil {
			continue
		}
		if got = strings.Count(out, appLine+"\n"); got >= n {
			break
		}
	}
	return got
}

// monotonic is a unit's timestamp property in microseconds since boot.
func monotonic(d *device, unit, prop string) uint64 {
	d.t.Helper()
	out := strings.TrimSpace(d.run("systemctl", "show", "--value", "-p", prop, unit))
	v, err := strconv.ParseUint(out, 10, 64)
	if err != nil {
		d.t.Fatalf("%s %s: %q", unit, prop, out)
	}
	return v
}

// assertCiphertextOnly checks, from the host, that dir shows what a disk
// without the key shows: names that are not plain, files that cannot be opened.
func assertCiphertextOnly(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("listing %s from the host: %v", dir, err)
	}
	if len(ents) == 0 {
		t.Fatalf("%s is empty: the app's state is gone", dir)
	}
	for _, e := range ents {
		if e.Name() == appFile {
			t.Errorf("%s shows the name %s in clear: the vault is not locked", dir, appFile)
		}
		if _, err := os.ReadFile(filepath.Join(dir, e.Name())); !errors.Is(err, syscall.ENOKEY) {
			t.Errorf("reading %s/%s from the host: %v, want %v", dir, e.Name(), err, syscall.ENOKEY)
		}
	}
}

// hostNames are the names in dir, seen from the host.
func hostNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// pcr16 measures into, or resets, PCR 16 of sw: the debug PCR, which software
// may extend and reset at locality 0. A device whose vaults are sealed to it
// then runs something its vaults were not sealed to, or is back as it was.
func pcr16(t *testing.T, sw *testbed.SWTPM, measure string) {
	t.Helper()
	tp, err := tpm.Open(swtpmSpec(sw))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if measure == "" {
		err = tp.PCRReset(tp.PCRHandleContext(16), nil)
	} else {
		digest := sha256.Sum256([]byte(measure))
		err = tp.PCRExtend(tp.PCRHandleContext(16), tpm2.TaggedHashList{tpm2.MakeTaggedHash(tpm2.HashAlgorithmSHA256, digest[:])}, nil)
	}
	if err != nil {
		t.Fatalf("PCR 16: %v", err)
	}
}

func TestFileVaultAppStartsOnlyAfterItsVaultIsUnlocked(t *testing.T) {
	sw := testbed.StartSWTPM(t)
	t.Log("Given a device whose /var/lib/edgeseal/vaults is an ext4 with encryption, its vault keys sealed to its TPM,")
	t.Log("  with edgeseal-fsvault.service and app-with-vault.service (docs/examples: Requires= and After= " + imagesUnit + ") enabled")
	t.Log("When it boots for the first time")
	d, disk := newVaultDevice(t, sw)

	t.Log("Then edgeseal-fsvault.service has created the default vaults config and images")
	if j := d.m.Journal(t, "edgeseal-fsvault.service"); !strings.Contains(j, "vault config: created") || !strings.Contains(j, "vault images: created") {
		t.Fatalf("edgeseal-fsvault.service did not create the default vaults:\n%s", j)
	}
	t.Log("And app-with-vault started after its vault was unlocked, wrote its state there and read it back")
	if n := appLines(d, 1); n != 1 {
		t.Fatalf("the app's state has %d lines, want 1\n%s\n%s", n, d.m.Journal(t, appUnit), d.journal())
	}
	unlocked := monotonic(d, imagesUnit, "ActiveEnterTimestampMonotonic")
	started := monotonic(d, appUnit, "ExecMainStartTimestampMonotonic")
	if unlocked == 0 || started < unlocked {
		t.Errorf("app-with-vault started at %dµs, its vault's unit became active at %dµs", started, unlocked)
	}
	if j := d.m.Journal(t, appUnit); !strings.Contains(j, appLine) {
		t.Errorf("the app did not read its state back:\n%s", j)
	}
	list := vaults(d)
	if len(list) != 2 {
		t.Errorf("edgeseal vault list: %+v, want the vaults config and images", list)
	}
	for name, s := range list {
		if s.State != fsvault.StateUnlocked || s.KeySource != config.KeySourceTPM || s.KeyVersion != 1 {
			t.Errorf("vault %s: %+v, want unlocked, key tpm v1", name, s)
		}
	}

	t.Log("And a user who may not read the vaults' metadata sees their last status")
	if out, stderr, err := d.m.RunAs(context.Background(), 1001, 1001, "edgeseal", "vault", "list"); err != nil ||
		!strings.Contains(out, "run as root for the live state") || !strings.Contains(out, "/var/lib/edgeseal/vaults/images") {
		t.Errorf("edgeseal vault list as uid 1001: %v\n%s%s", err, out, stderr)
	}
	t.Log("And a service running as a user of its own reaches a vault given to it through a bind mount")
	d.run("chown", "nobody:nogroup", "/var/lib/edgeseal/vaults/config")
	if out := d.run("systemd-run", "--wait", "--pipe", "--quiet", "-p", "User=nobody", "-p", "Group=nogroup",
		"-p", "Requires=edgeseal-fsvault@config.service", "-p", "After=edgeseal-fsvault@config.service",
		"-p", "BindPaths=/var/lib/edgeseal/vaults/config:/var/lib/app",
		"sh", "-c", "echo 'owned by the service' > /var/lib/app/state && cat /var/lib/app/state"); !strings.Contains(out, "owned by the service") {
		t.Errorf("a user service writing its vault through BindPaths=: %q", out)
	}

	t.Log("When an operator locks the vault while the app runs (it holds the vault by its sandbox's mount, no file open)")
	_, stderr, err := d.m.Run(context.Background(), "edgeseal", "vault", "lock", "images")
	appPID := strings.TrimSpace(d.run("systemctl", "show", "-p", "MainPID", "--value", appUnit))
	t.Log("Then the lock is pending (the key is removed, the mount keeps it in use), naming the app's process")
	if err == nil || !strings.Contains(stderr, "lock pending: files busy (pid "+appPID+" (sleep))") {
		t.Errorf("edgeseal vault lock images with the app running: %v\n%s", err, stderr)
	}
	if s := vaults(d)["images"]; s.State != fsvault.StateLockPending || len(s.Holders) != 1 {
		t.Errorf("vault images with the app running: %+v, want lock pending with the app named", s)
	}

	t.Log("When its vault's unit is stopped")
	d.run("systemctl", "stop", imagesUnit)
	t.Log("Then systemd stops the app first, and the vault is locked: `edgeseal vault list` says so,")
	t.Log("  the app's file cannot be read inside, and from the host its names are ciphertext")
	if s := d.isActive(appUnit); s != "inactive" {
		t.Errorf("app-with-vault is %s after its vault's unit stopped", s)
	}
	appDown := monotonic(d, appUnit, "InactiveEnterTimestampMonotonic")
	if lockFrom := monotonic(d, imagesUnit, "ActiveExitTimestampMonotonic"); appDown == 0 || lockFrom < appDown {
		t.Errorf("the vault's unit began to stop at %dµs, the app was down at %dµs", lockFrom, appDown)
	}
	if j := d.m.Journal(t, imagesUnit); !strings.Contains(j, "vault images: locked") {
		t.Errorf("the vault's unit did not say it locked:\n%s", j)
	}
	if s := vaults(d)["images"]; s.State != fsvault.StateLocked {
		t.Errorf("vault images: %+v, want locked", s)
	}
	if out, stderr, err := d.m.Run(context.Background(), "cat", appState); err == nil || !strings.Contains(stderr, "No such file") {
		// Locked, the directory lists encrypted names only: the plain name is not there.
		t.Errorf("cat %s in the locked vault: %v %q %q", appState, err, out, stderr)
	}
	assertCiphertextOnly(t, filepath.Join(disk.Mount, "images"))

	t.Log("When the app is started again, Then systemd unlocks its vault first and the app finds its earlier state")
	d.run("systemctl", "start", appUnit)
	if n := appLines(d, 2); n != 2 {
		t.Fatalf("the app's state has %d lines after a lock and an unlock, want 2\n%s", n, d.m.Journal(t, appUnit))
	}
	if s := vaults(d)["images"]; s.State != fsvault.StateUnlocked {
		t.Errorf("vault images: %+v, want unlocked", s)
	}
}

func TestFileVaultAppDoesNotStartWhenItsVaultCannotBeUnlocked(t *testing.T) {
	sw := testbed.StartSWTPM(t)
	t.Log("Given a device whose vault keys are sealed to PCRs 7 and 16, booted once: its app ran")
	d, _ := newVaultDevice(t, sw, 16)
	if n := appLines(d, 1); n != 1 {
		t.Fatalf("the app's state has %d lines, want 1\n%s", n, d.journal())
	}

	t.Log("When the vault is locked, PCR 16 changes (software nobody approved), and the app is started")
	d.run("systemctl", "stop", imagesUnit)
	pcr16(t, sw, "a debug tool nobody approved")
	out, stderr, err := d.m.Run(context.Background(), "systemctl", "start", appUnit)
	t.Log("Then the start fails on the dependency and the app does not run")
	if err == nil || !strings.Contains(stderr, "dependency job for "+appUnit+" failed") {
		t.Errorf("systemctl start %s: %v %q %q", appUnit, err, out, stderr)
	}
	if s := d.isActive(appUnit); s != "inactive" {
		t.Errorf("app-with-vault is %s", s)
	}
	t.Log("And the vault's unit says why (PCR 16), and so does `edgeseal vault list`")
	if j := d.m.Journal(t, imagesUnit); !strings.Contains(j, "PCR values differ from the approved ones: PCR 16 (sha256)") {
		t.Errorf("the vault's unit does not name PCR 16:\n%s", j)
	}
	if s := vaults(d)["images"]; s.State != fsvault.StateError || !strings.Contains(s.Reason, "PCR 16") {
		t.Errorf("vault images: %+v, want error naming PCR 16", s)
	}

	t.Log("When PCR 16 is as approved again, Then the app starts and finds its state, one line: the refused start wrote nothing")
	pcr16(t, sw, "")
	d.run("systemctl", "start", appUnit)
	if n := appLines(d, 2); n != 2 {
		t.Fatalf("the app's state has %d lines, want 2\n%s", n, d.m.Journal(t, appUnit))
	}
	if s := vaults(d)["images"]; s.State != fsvault.StateUnlocked {
		t.Errorf("vault images: %+v, want unlocked", s)
	}

	t.Log("When its disk boots in another device (another TPM)")
	thief := testbed.StartSWTPM(t)
	d.m.Stop(t)
	d.cfg.Seal.TPM2.Device = swtpmSpec(thief)
	d.writeConfig()
	d.m.Reboot(t)
	t.Log("Then the vault's unit fails at boot, saying the key belongs to another device, and the app is not started")
	if s := d.isActive(imagesUnit); s != "failed" {
		t.Errorf("%s is %s, want failed", imagesUnit, s)
	}
	if j := d.m.Journal(t, imagesUnit); !strings.Contains(j, "another device") {
		t.Errorf("the vault's unit does not say why:\n%s", j)
	}
	if s := d.isActive(appUnit); s != "inactive" {
		t.Errorf("app-with-vault is %s", s)
	}
	if j := d.m.Journal(t, appUnit); !strings.Contains(j, "Dependency failed") {
		t.Errorf("the app's journal does not say its dependency failed:\n%s", j)
	}
	if s := vaults(d)["images"]; s.State != fsvault.StateError || !strings.Contains(s.Reason, "another device") {
		t.Errorf("vault images: %+v, want error naming another device", s)
	}
}

func TestFileVaultShutdownLocksItAndTheDiskAloneIsCiphertext(t *testing.T) {
	sw := testbed.StartSWTPM(t)
	t.Log("Given a device whose app keeps its state in the vault images, and a file outside any vault on the same disk")
	d, disk := newVaultDevice(t, sw)
	const outside = "this line is outside any vault"
	writeFile(t, filepath.Join(disk.Mount, "outside.txt"), []byte(outside+"\n"), 0o644)
	// The vault config has no instance unit: edgeseal-fsvault.service's stop
	// locks it.
	d.run("sh", "-c", "echo 'device secret' > /var/lib/edgeseal/vaults/config/secret.txt")
	if n := appLines(d, 1); n != 1 {
		t.Fatalf("the app's state has %d lines, want 1\n%s", n, d.journal())
	}
	// The host mounts the same filesystem, whose keys are the filesystem's: while
	// the vault is unlocked, the host sees its names in clear too.
	if names := hostNames(t, filepath.Join(disk.Mount, "images")); len(names) != 1 || names[0] != appFile {
		t.Fatalf("from the host, the unlocked vault holds %q, want [%s]", names, appFile)
	}

	t.Log("When the device shuts down (systemd stops every unit)")
	d.m.Stop(t)

	t.Log("Then the vaults were locked on the way down, images by its unit and config by edgeseal-fsvault.service:")
	t.Log("  the disk is still mounted on the host, but their keys are gone")
	assertCiphertextOnly(t, filepath.Join(disk.Mount, "images"))
	assertCiphertextOnly(t, filepath.Join(disk.Mount, "config"))

	t.Log("And the disk image alone holds the line written outside the vaults, but not the app's line nor its file's name")
	disk.Unmount(t)
	raw, err := os.ReadFile(disk.Image)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), outside) {
		t.Fatalf("the raw image does not hold %q: the search would find nothing anyway", outside)
	}
	for _, plain := range []string{appLine, appFile, "device secret", "secret.txt"} {
		if strings.Contains(string(raw), plain) {
			t.Errorf("the raw image holds %q in clear", plain)
		}
	}
	t.Log("And mounted again without any key, the vault shows ciphertext only")
	disk.MountImage(t, disk.Image)
	assertCiphertextOnly(t, filepath.Join(disk.Mount, "images"))
}
