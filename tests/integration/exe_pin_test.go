//go:build integration

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
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
	dropin := filepath.Join(d.units, "pinned-app.service.d")
	if err := os.MkdirAll(dropin, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dropin, "cli.conf"), []byte("[Service]\nExecStart=\nExecStart=/usr/bin/edgeseal token fetch --out /run/pinned-app/token.json --quiet\n"), 0o644)
	d.run("systemctl", "daemon-reload")
	if _, _, err := d.m.Run(context.Background(), "systemctl", "start", "pinned-app.service"); err == nil {
		t.Error("edgeseal's CLI in the pinned unit fetched its token")
	}
	if err := os.RemoveAll(dropin); err != nil {
		t.Fatal(err)
	}
	d.run("systemctl", "daemon-reload")

	t.Log("When the vendor's build is back, Then the unit gets its token again")
	if again := d.build(bin, "vendor build 1.0"); again != good {
		t.Fatalf("the rebuilt vendor build has digest %s, want %s", again, good)
	}
	d.run("systemctl", "start", "pinned-app.service")
	d.waitTokenFile("/run/pinned-app/token.json")
}
