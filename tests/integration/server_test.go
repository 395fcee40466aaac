//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/tests/testbed"
)

// fakeServerScript stands in for the server binary at /usr/bin/bao: `version`
// says it is a release edgeseal does not support; anything else runs the real
// server (bound in at /opt/server/real), so that Vault itself would work.
const fakeServerScript = `#!/bin/sh
if [ "$1" = version ]; then echo 'OpenBao v2.5.0 (0000000000000000000000000000000000000000), built 2026-11-01T00:00:00Z'; exit 0; fi
exec /opt/server/real "$@"
`

// withUnsupportedServer binds the fake over the server binary the units run,
// and the real one beside it.
func withUnsupportedServer(t testing.TB, real testbed.Server) deviceOption {
	return func(d *device, opts *testbed.MachineOptions) {
		dir := t.TempDir()
		fake := filepath.Join(dir, "bao")
		if err := os.WriteFile(fake, []byte(fakeServerScript), 0o755); err != nil {
			t.Fatal(err)
		}
		opts.Binds = append(opts.Binds,
			testbed.Bind{Host: fake, Container: real.InstallPath, ReadOnly: true},
			testbed.Bind{Host: real.Bin, Container: "/opt/server/real", ReadOnly: true},
		)
	}
}

func TestAnUnsupportedServerIsRefusedBeforeAnythingIsInitialised(t *testing.T) {
	ctx := context.Background()
	srv := defaultServer
	t.Logf("Given a device whose %s is a server that says it is OpenBao v2.5.0 (a release edgeseal is not tested with)", srv.InstallPath)
	d := newDevice(t, false, nil, withUnsupportedServer(t, srv))

	t.Log("When edgeseal.target is started at its first boot")
	_, stderr, err := d.m.Run(ctx, "systemctl", "start", "edgeseal.target")
	if err == nil {
		t.Fatalf("edgeseal.target started with an unsupported server\n%s", d.journal())
	}
	t.Logf("Then the start fails (%s)", strings.TrimSpace(stderr))

	t.Log("And edgeseal-pki refused it with exit status 2, naming the binary, the release found and those supported, and Vault never started")
	if got := strings.TrimSpace(d.run("systemctl", "show", "-p", "ExecMainStatus", "--value", "edgeseal-pki.service")); got != "2" {
		t.Errorf("edgeseal-pki exit status %s, want 2", got)
	}
	pkiLog := d.m.Journal(t, "edgeseal-pki.service")
	for _, want := range []string{srv.InstallPath, "OpenBao v2.5.0", "OpenBao 2.4.x, Vault 1.21.x"} {
		if !strings.Contains(pkiLog, want) {
			t.Errorf("edgeseal-pki's journal lacks %q:\n%s", want, pkiLog)
		}
	}
	if s := d.isActive("edgeseal-vault.service"); s == "active" {
		t.Errorf("edgeseal-vault.service is %s", s)
	}
	assertNothingInitialised(t, d)

	t.Log("When the pki step is pointed at the real server (as if the binary were replaced after it ran) and the chain is started again")
	d.run("mkdir", "-p", "/etc/systemd/system/edgeseal-pki.service.d")
	d.run("sh", "-c", `printf '[Service]\nExecStart=\nExecStart=/usr/libexec/edgeseal/edgeseal-pki --server /opt/server/real\n' > /etc/systemd/system/edgeseal-pki.service.d/real.conf`)
	d.run("systemctl", "daemon-reload")
	d.run("systemctl", "reset-failed")
	d.m.Run(ctx, "systemctl", "start", "edgeseal.target")
	t.Log("Then Vault runs, but edgeseal-unseal refuses the server with exit status 19 before it initialises anything, and is not restarted")
	deadline := time.Now().Add(30 * time.Second)
	for d.isActive("edgeseal-unseal.service") != "failed" {
		if time.Now().After(deadline) {
			t.Fatalf("edgeseal-unseal is %s, want failed\n%s", d.isActive("edgeseal-unseal.service"), d.journal())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := strings.TrimSpace(d.run("systemctl", "show", "-p", "ExecMainStatus", "--value", "edgeseal-unseal.service")); got != "19" {
		t.Errorf("edgeseal-unseal exit status %s, want 19", got)
	}
	if s := d.isActive("edgeseal-vault.service"); s != "active" {
		t.Errorf("edgeseal-vault.service is %s, want active (the real server behind the fake)", s)
	}
	unsealLog := d.m.Journal(t, "edgeseal-unseal.service")
	for _, want := range []string{srv.InstallPath, "OpenBao v2.5.0", "OpenBao 2.4.x, Vault 1.21.x"} {
		if !strings.Contains(unsealLog, want) {
			t.Errorf("edgeseal-unseal's journal lacks %q:\n%s", want, unsealLog)
		}
	}
	if n := strings.Count(unsealLog, "Started "); n > 1 {
		t.Errorf("edgeseal-unseal was started %d times: exit status 19 must stop the restarts", n)
	}
	assertNothingInitialised(t, d)
}

// assertNothingInitialised: no sealed key, no init marker, and the server's
// storage holds no barrier (Vault writes core/ at init).
func assertNothingInitialised(t *testing.T, d *device) {
	t.Helper()
	out, _, _ := d.m.Run(context.Background(), "sh", "-c", "ls -A /var/lib/edgeseal; find /var/lib/edgeseal-vault -path '*/core*' | head -3")
	if strings.TrimSpace(out) != "" {
		t.Errorf("something was initialised: %q", out)
	}
}

func TestALocalUserCannotStartARekeyOnOpenBao(t *testing.T) {
	ctx := context.Background()
	onEachServer(t, func(t *testing.T, srv testbed.Server) {
		{
			t.Logf("Given a device running %s, booted and unsealed", srv.Name)
			d := newDevice(t, false, nil, withServer(srv))
			d.start()
			t.Log("When nobody, a local user, asks the services' TCP listener to start a rekey, as any local user can reach it")
			out, _, err := d.m.RunAs(ctx, 65534, 65534, "curl", "-sk", "-o", "/dev/stderr", "-w", "%{http_code}",
				"-X", "PUT", "-d", `{"secret_shares":1,"secret_threshold":1}`, "https://"+d.cfg.Vault.Listen+"/v1/sys/rekey/init")
			code := strings.TrimSpace(out)
			if err != nil && code == "" {
				t.Fatalf("curl as nobody: %v", err)
			}
			c := d.vaultClient()
			c.SetToken(d.rootToken())
			st, serr := c.Sys().RekeyStatus()
			started := serr == nil && st.Started
			switch srv.Name {
			case "openbao":
				t.Logf("Then OpenBao refuses it (HTTP %s): its listeners have disable_unauthed_rekey_endpoints, and no rekey is in progress", code)
				if code == "200" || started {
					t.Errorf("nobody started a rekey on OpenBao: HTTP %s, rekey status %+v (%v)", code, st, serr)
				}
			default:
				t.Logf("Then HashiCorp Vault, which has no such option, accepts it (HTTP %s): the threat model lists it as open on Vault", code)
				if code != "200" {
					t.Errorf("Vault answered HTTP %s; the test expects Vault to accept it (else this case no longer shows the difference)", code)
				}
			}
		}
	})
}

// The thief with the disk of threat model finding 15: edgeseal-pki keeps what
// the server binary said it is on /var, unauthenticated, and writes the
// server's config in that server's form. Named as HashiCorp Vault while the
// binary is OpenBao, it writes listeners that take unauthenticated rekeys.
func TestAKeptServerAnswerRewrittenOnTheDiskStopsTheBootBeforeUnseal(t *testing.T) {
	ctx := context.Background()
	bao, err := testbed.ServerNamed("openbao")
	if err != nil {
		t.Fatal(err)
	}
	t.Log("Given a device that booted once on OpenBao, edgeseal-pki having kept the binary's answer")
	d := newDevice(t, false, nil, withServer(bao))
	d.start()
	const kept = "/var/lib/private/edgeseal-pki/server-identity.json"
	// Numbers kept as written: the stamp's nanosecond times do not fit a float64.
	var c map[string]any
	dec := json.NewDecoder(strings.NewReader(d.run("cat", kept)))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", kept, err)
	}

	t.Log("When a thief rewrites the kept answer offline to say HashiCorp Vault 1.21.0, leaving the binary's stamp, and the device reboots")
	c["info"] = map[string]any{"Kind": "vault", "Version": "1.21.0", "Major": 1, "Minor": 21, "Patch": 0}
	forged, _ := json.Marshal(c)
	d.run("sh", "-c", "printf '%s' '"+string(forged)+"' > "+kept)
	d.m.Reboot(t)
	_, _, err = d.m.Run(ctx, "systemctl", "start", "edgeseal.target")
	if j := d.m.Journal(t, "edgeseal-pki.service"); !strings.Contains(j, "known_binary=true") || !strings.Contains(j, "release=\"Vault v1.21.0\"") {
		t.Fatalf("edgeseal-pki did not take the rewritten answer (the forgery is wrong, not the code):\n%s", j)
	}
	if err == nil {
		t.Fatalf("edgeseal.target started with a config of HashiCorp Vault's form for OpenBao\n%s", d.journal())
	}

	t.Log("Then edgeseal-unseal refuses before it unseals, with status 19, naming the config and what to remove; the server stays sealed")
	deadline := time.Now().Add(30 * time.Second)
	for d.isActive("edgeseal-unseal.service") != "failed" {
		if time.Now().After(deadline) {
			t.Fatalf("edgeseal-unseal is %s, want failed\n%s", d.isActive("edgeseal-unseal.service"), d.journal())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := strings.TrimSpace(d.run("systemctl", "show", "-p", "ExecMainStatus", "--value", "edgeseal-unseal.service")); got != "19" {
		t.Errorf("edgeseal-unseal exit status %s, want 19", got)
	}
	if j := d.m.Journal(t, "edgeseal-unseal.service"); !strings.Contains(j, "does not refuse unauthenticated rekeys") || !strings.Contains(j, "server-identity.json") {
		t.Errorf("edgeseal-unseal's journal does not say why:\n%s", j)
	}
	st, err := d.vaultClient().Sys().SealStatusWithContext(ctx)
	if err != nil || !st.Sealed {
		t.Errorf("the server's seal status: %+v, %v; want sealed", st, err)
	}
}
