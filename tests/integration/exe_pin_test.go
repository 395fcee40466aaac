//go:build integration

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// pinnedUnit runs the pinned program, which is edgeseal's CLI under another
// name and build (a program linking the tokenclient package is the same to
// the provider): it fetches its token once.
const pinnedUnit = `[Unit]
Description=pinned-app: a service whose executable the config pins
Requires=edgeseal.target
After=edgeseal.target

[Service]
Type=oneshot
DynamicUser=yes
# What a unit whose executable is pinned must set: no user namespaces (in one,
# a process may point /proc/PID/exe at any file).
RestrictNamespaces=yes
RuntimeDirectory=pinned-app
RuntimeDirectoryPreserve=yes
ExecStart=/opt/vendor/bin/pinned-app token fetch --out /run/pinned-app/token.json --quiet
`

// build installs, at path in the device, edgeseal's CLI with a build mark
// appended (an ELF file runs the same with bytes after it), by rename as a
// package manager does, and returns its SHA-256.
func (d *device) build(path, mark string) string {
	d.t.Helper()
	d.run("sh", "-c", "mkdir -p "+filepath.Dir(path)+" && cp /usr/bin/edgeseal "+path+".new && printf '\\n%s\\n' '"+mark+"' >> "+path+".new && chmod 0755 "+path+".new && mv -f "+path+".new "+path)
	sum, _, _ := strings.Cut(d.run("sha256sum", path), " ")
	return sum
}

func TestAServiceWhoseBinaryIsReplacedIsRefusedItsToken(t *testing.T) {
	const bin = "/opt/vendor/bin/pinned-app"
	t.Log("Given a device whose config pins pinned-app.service's executable to the SHA-256 of the vendor's build")
	d := newDevice(t, false, nil)
	good := d.build(bin, "vendor build 1.0")
	d.cfg.Tokend.IdleExit = config.Duration(2 * time.Second)
	// The unit is a oneshot that fetches and exits: its token must outlive it.
	d.cfg.Tokens.RevokeOnStop = false
	d.cfg.Services = []config.Service{{Name: "pinned-app", Units: []string{"pinned-app.service"}, ExeSHA256: []string{good}}}
	d.writeConfig()
	writeFile(t, filepath.Join(d.units, "pinned-app.service"), []byte(pinnedUnit), 0o644)
	d.run("systemctl", "daemon-reload")
	d.run("systemctl", "enable", "edgeseal.target")
	d.start()

	t.Log("When the unit runs the vendor's build, Then it gets its token, and the journal names the executable that matched")
	d.run("systemctl", "start", "pinned-app.service")
	tok := d.waitTokenFile("/run/pinned-app/token.json")
	d.vaultOK(tok, "kv", "put", "-mount=secret", "edgeseal/pinned-app/k", "v=1")
	if j := d.m.Journal(t, "edgeseal-tokend.service"); !strings.Contains(j, "executable "+good[:12]) {
		t.Errorf("the provider's journal does not name the executable that matched:\n%s", j)
	}
	if j := d.m.Journal(t, "edgeseal-exeid.service"); !strings.Contains(j, "answering the token provider") {
		t.Errorf("edgeseal-exeid did not answer:\n%s", j)
	}
	d.run("rm", "-f", "/run/pinned-app/token.json")

	t.Log("When its binary is replaced at the same path by another build, Then the unit is refused its token, and the journal says why")
	bad := d.build(bin, "another build")
	if bad == good {
		t.Fatal("the two builds have one digest")
	}
	_, _, err := d.m.Run(context.Background(), "systemctl", "start", "pinned-app.service")
	if err == nil {
		t.Fatalf("pinned-app.service ran with a replaced binary and fetched a token:\n%s", d.run("cat", "/run/pinned-app/token.json"))
	}
	if _, _, err := d.m.Run(context.Background(), "test", "-e", "/run/pinned-app/token.json"); err == nil {
		t.Error("a token file was written for the replaced binary")
	}
	j := d.m.Journal(t, "edgeseal-tokend.service")
	if !strings.Contains(j, "runs an executable with SHA-256 "+bad) {
		t.Errorf("the provider's journal does not say which executable was refused:\n%s", j)
	}

	t.Log("When the unit runs another program (edgeseal's own CLI) to ask, Then it is refused too: the unit is not enough")
	remove := d.dropIn("pinned-app.service", "cli", "[Service]\nExecStart=\nExecStart=/usr/bin/edgeseal token fetch --out /run/pinned-app/token.json --quiet\n")
	if _, _, err := d.m.Run(context.Background(), "systemctl", "start", "pinned-app.service"); err == nil {
		t.Error("edgeseal's CLI in the pinned unit fetched its token")
	}
	remove()

	t.Log("When the vendor's build is back, Then the unit gets its token again")
	if again := d.build(bin, "vendor build 1.0"); again != good {
		t.Fatalf("the rebuilt vendor build has digest %s, want %s", again, good)
	}
	d.run("systemctl", "start", "pinned-app.service")
	d.waitTokenFile("/run/pinned-app/token.json")
}

// forgeUnit is pinned-app.service running the attack of exeforge/forge.c:
// a program of its own (exeforge/host.c) with the forging library preloaded, which points its
// /proc/PID/exe at the pinned file and asks for the token. Its output, the
// forged link and the provider's answer, goes to /run/forge.out.
const forgeUnit = `[Unit]
Description=pinned-app, taken over: it points its /proc/PID/exe at the pinned file and asks
Requires=edgeseal.target
After=edgeseal.target

[Service]
Type=oneshot
DynamicUser=yes
StandardOutput=truncate:/run/forge.out
ExecStart=/usr/bin/env LD_PRELOAD=/opt/attack/forge.so PINNED=/opt/vendor/bin/pinned-app SOCK=/run/edgeseal/tokend.sock /opt/attack/host
`

func TestAProcessThatPointsItsExeAtThePinnedFileIsRefused(t *testing.T) {
	testbed.Require(t, "gcc")
	src := filepath.Join(repoRoot(), "tests", "integration", "exeforge")
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-shared", "-fPIC", "-O2", "-Wl,-z,now", "-o", filepath.Join(dir, "forge.so"), filepath.Join(src, "forge.c")},
		{"-O2", "-o", filepath.Join(dir, "host"), filepath.Join(src, "host.c")},
	} {
		if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("cannot build the attack: gcc %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	lib, err := os.ReadFile(filepath.Join(dir, "forge.so"))
	if err != nil {
		t.Fatal(err)
	}
	host, err := os.ReadFile(filepath.Join(dir, "host"))
	if err != nil {
		t.Fatal(err)
	}
	const bin = "/opt/vendor/bin/pinned-app"
	t.Log("Given a device whose config pins pinned-app.service's executable, and a unit of that name that runs other code")
	d := newDevice(t, false, nil)
	good := d.build(bin, "vendor build 1.0")
	d.cfg.Tokens.RevokeOnStop = false
	d.cfg.Services = []config.Service{{Name: "pinned-app", Units: []string{"pinned-app.service"}, ExeSHA256: []string{good}}}
	d.writeConfig()
	d.run("mkdir", "-p", "/opt/attack")
	writeFile(t, "/proc/"+strconv.Itoa(d.m.Leader())+"/root/opt/attack/forge.so", lib, 0o755)
	writeFile(t, "/proc/"+strconv.Itoa(d.m.Leader())+"/root/opt/attack/host", host, 0o755)
	writeFile(t, filepath.Join(d.units, "pinned-app.service"), []byte(forgeUnit), 0o644)
	d.run("systemctl", "daemon-reload")
	d.run("systemctl", "enable", "edgeseal.target")
	d.start()

	t.Log("When its process points /proc/PID/exe at the pinned file from a user namespace of a CLONE_VM child (no exec) and asks for the token")
	d.m.Run(context.Background(), "systemctl", "start", "pinned-app.service")
	out := d.run("cat", "/run/forge.out")
	if !strings.Contains(out, "forged exe="+bin) {
		st, _, _ := d.m.Run(context.Background(), "systemctl", "status", "--no-pager", "-l", "pinned-app.service")
		t.Fatalf("the attack did not point /proc/PID/exe at the pinned file (the test proves nothing):\n%s\n%s", out, st)
	}
	t.Log("Then the provider refuses it, saying its unit may make user namespaces")
	if !strings.Contains(out, `"status":"refused"`) || strings.Contains(out, `"status":"ok"`) {
		t.Fatalf("the forged caller was answered:\n%s", out)
	}
	if j := d.m.Journal(t, "edgeseal-tokend.service"); !strings.Contains(j, "may make user namespaces") || !strings.Contains(j, "RestrictNamespaces=yes") {
		t.Errorf("the provider's journal does not say why:\n%s", j)
	}

	t.Log("When the unit sets RestrictNamespaces=yes, Then the same code cannot point its /proc/PID/exe anywhere, and gets nothing")
	d.dropIn("pinned-app.service", "restrict", "[Service]\nRestrictNamespaces=yes\n")
	d.m.Run(context.Background(), "systemctl", "start", "pinned-app.service")
	out = d.run("cat", "/run/forge.out")
	if !strings.Contains(out, "forge: clone CLONE_NEWUSER") || strings.Contains(out, "answer") {
		t.Errorf("with RestrictNamespaces=yes the attack went on:\n%s", out)
	}
}
