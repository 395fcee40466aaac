//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
)

// The units of TestAServiceWhoseUnitIsRedefinedIsRefusedItsToken: vendor-app
// fetches its token over the socket, vendor-cred is handed its token by
// systemd (LoadCredential=). Both are oneshots that leave the token in their
// runtime directory.
const (
	vendorAppUnit = `[Unit]
Description=vendor-app: a service whose unit file the config pins
Requires=edgeseal.target
After=edgeseal.target

[Service]
Type=oneshot
DynamicUser=yes
RuntimeDirectory=vendor-app
RuntimeDirectoryPreserve=yes
ExecStart=/usr/bin/edgeseal token fetch --out /run/vendor-app/token.json --quiet
`
	vendorCredUnit = `[Unit]
Description=vendor-cred: a service whose unit file the config pins, given its token by systemd
Requires=edgeseal.target
After=edgeseal.target

[Service]
Type=oneshot
DynamicUser=yes
RuntimeDirectory=vendor-cred
RuntimeDirectoryPreserve=yes
LoadCredential=vault-token:/run/edgeseal/tokend.sock
ExecStart=/bin/sh -c 'cp "$CREDENTIALS_DIRECTORY/vault-token" /run/vendor-cred/token.json'
`
)

func TestAServiceWhoseUnitIsRedefinedIsRefusedItsToken(t *testing.T) {
	ctx := context.Background()
	const (
		appFile  = "/etc/systemd/system/vendor-app.service"
		credFile = "/etc/systemd/system/vendor-cred.service"
		appToken = "/run/vendor-app/token.json"
	)
	t.Log("Given a device whose config pins the unit files of vendor-app.service and vendor-cred.service")
	d := newDevice(t, false, func(c *config.Config) {
		// The units are oneshots that fetch and exit: their tokens must outlive them.
		c.Tokens.RevokeOnStop = false
		c.Services = []config.Service{
			{Name: "vendor-app", Units: []string{"vendor-app.service"}, UnitFiles: []string{appFile}},
			{Name: "vendor-cred", Units: []string{"vendor-cred.service"}, UnitFiles: []string{credFile}},
		}
	})
	writeFile(t, d.units+"/vendor-app.service", []byte(vendorAppUnit), 0o644)
	writeFile(t, d.units+"/vendor-cred.service", []byte(vendorCredUnit), 0o644)
	d.run("systemctl", "daemon-reload")
	d.start()

	t.Log("When both run as defined, Then each gets its token, over the socket and through LoadCredential=, and the journal names the unit file that matched")
	d.run("systemctl", "start", "vendor-app.service", "vendor-cred.service")
	appTok := d.waitTokenFile(appToken)
	credTok := d.waitTokenFile("/run/vendor-cred/token.json")
	d.vaultOK(appTok, "kv", "put", "-mount=secret", "edgeseal/vendor-app/k", "v=1")
	d.vaultOK(credTok, "kv", "put", "-mount=secret", "edgeseal/vendor-cred/k", "v=1")
	if j := d.m.Journal(t, "edgeseal-tokend.service"); !strings.Contains(j, "unit file "+appFile) || !strings.Contains(j, "unit file "+credFile) {
		t.Errorf("the provider's journal does not name the unit files that matched:\n%s", j)
	}

	// refused runs unit (started by args) and checks that it fetched nothing
	// and that the provider's journal says why.
	refused := func(why string, args ...string) {
		t.Helper()
		d.run("rm", "-f", appToken)
		out, errOut, err := d.m.Run(ctx, args...)
		if err == nil {
			t.Errorf("%s fetched a token:\n%s", strings.Join(args, " "), d.run("cat", appToken))
		}
		if _, _, err := d.m.Run(ctx, "test", "-e", appToken); err == nil {
			t.Errorf("a token file was written by %s", strings.Join(args, " "))
		}
		if j := d.m.Journal(t, "edgeseal-tokend.service"); !strings.Contains(j, why) {
			t.Errorf("the provider's journal does not say %q (%s: %v %s%s; the unit's journal:\n%s):\n%s", why, strings.Join(args, " "), err, out, errOut, d.m.Journal(t, "vendor-app.service"), j)
		}
	}

	t.Log("When an administrator overrides its ExecStart with a drop-in (as systemctl edit writes), Then vendor-app is refused, and the journal names the drop-in")
	remove := d.dropIn("vendor-app.service", "override", "[Service]\nExecStart=\nExecStart=/usr/bin/edgeseal token fetch --out /run/vendor-app/token.json --quiet --service vendor-app\n")
	refused("has the drop-in /etc/systemd/system/vendor-app.service.d/override.conf, which unit_files does not list",
		"systemctl", "start", "vendor-app.service")
	remove()

	t.Log("When a unit manager changes one of its properties at runtime (systemctl set-property, a drop-in under /run), Then it is refused too")
	d.run("systemctl", "set-property", "--runtime", "vendor-app.service", "CPUWeight=50")
	refused("has the drop-in /run/systemd/system.control/vendor-app.service.d/", "systemctl", "start", "vendor-app.service")
	d.run("rm", "-r", "/run/systemd/system.control/vendor-app.service.d")
	d.run("systemctl", "daemon-reload")

	t.Log("When the pinned path becomes a symlink to a file no pin lists (as systemctl link makes), whose ExecStart is another, Then it is refused: systemd reports the link's path, and the provider checks what the path leads to")
	d.run("mkdir", "-p", "/opt/evil")
	d.run("sh", "-c", "sed 's|^ExecStart=.*|ExecStart=/usr/bin/edgeseal token fetch --out /run/vendor-app/token.json --quiet --service vendor-app|' "+appFile+" > /opt/evil/vendor-app.service")
	d.run("mv", appFile, "/root/vendor-app.service")
	d.run("ln", "-s", "/opt/evil/vendor-app.service", appFile)
	d.run("systemctl", "daemon-reload")
	refused(appFile+" is a symlink", "systemctl", "start", "vendor-app.service")
	d.run("rm", appFile)
	d.run("mv", "/root/vendor-app.service", appFile)

	t.Log("When the pinned file is one others may write, Then it is refused: the pin vouches for nothing a non-root user may change")
	d.run("chmod", "0666", appFile)
	d.run("systemctl", "daemon-reload")
	refused("is writable by others than root (mode 666)", "systemctl", "start", "vendor-app.service")
	d.run("chmod", "0644", appFile)
	d.run("systemctl", "daemon-reload")

	t.Log("When its unit file is gone and a transient unit of the same name asks (systemd-run --unit), Then it is refused: its unit is not loaded from the pinned file")
	d.run("mv", appFile, "/root/vendor-app.service")
	d.run("systemctl", "daemon-reload")
	// The refusals above left the unit failed, so loaded: let systemd unload
	// it (an error if it was not loaded).
	d.m.Run(ctx, "systemctl", "reset-failed", "vendor-app.service")
	refused("systemd loaded its unit from /run/systemd/transient/vendor-app.service",
		"systemd-run", "--wait", "--quiet", "--unit=vendor-app.service", "-p", "DynamicUser=yes", "-p", "RuntimeDirectory=vendor-app",
		"-p", "RuntimeDirectoryPreserve=yes", "/usr/bin/edgeseal", "token", "fetch", "--out", appToken, "--quiet")
	d.m.Run(ctx, "systemctl", "reset-failed", "vendor-app.service")
	d.run("mv", "/root/vendor-app.service", appFile)
	d.run("systemctl", "daemon-reload")

	t.Log("When the unit is as pinned again, Then it gets its token again")
	d.run("systemctl", "start", "vendor-app.service")
	appTok = d.waitTokenFile(appToken)

	t.Log("When the config pins vendor-app to another unit file, Then edgeseal-unseal revokes vendor-app's token within seconds, with no reload, and keeps vendor-cred's (the ledger recorded the files each was loaded from)")
	d.cfg.Services[0].UnitFiles = []string{"/etc/systemd/system/vendor-app-2.service"}
	d.writeConfig()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := d.m.Run(ctx, append(d.vaultEnv(appTok), "token", "lookup")...)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after the change vendor-app's token still works\n%s", d.m.Journal(t, "edgeseal-unseal.service"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if j := d.m.Journal(t, "edgeseal-unseal.service"); !strings.Contains(j, "the config no longer gives unit vendor-app.service") {
		t.Errorf("edgeseal-unseal's journal does not say why the token was revoked:\n%s", j)
	}
	d.vaultOK(credTok, "token", "lookup")
}
