//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// Consumer units of the token story, as a device builder writes them.
const (
	// app-one is known by its unit; it fetches its token with the client.
	appOneUnit = `[Unit]
Description=app-one: fetches its Vault token through the socket
Requires=edgeseal.target
After=edgeseal.target

[Service]
DynamicUser=yes
RuntimeDirectory=app-one
ExecStart=/usr/bin/edgeseal token fetch --out /run/app-one/token.json --renew --quiet
`
	// reporter takes its token as a systemd credential: no client at all.
	reporterUnit = `[Unit]
Description=reporter: its Vault token arrives as a credential
Requires=edgeseal.target
After=edgeseal.target

[Service]
DynamicUser=yes
LoadCredential=vault-token:/run/edgeseal/tokend.sock
ExecStart=/bin/sleep infinity
`
	// flaky gets its token as a credential too, and is made to fail.
	flakyUnit = `[Unit]
Description=flaky: a service that crashes
Requires=edgeseal.target
After=edgeseal.target

[Service]
DynamicUser=yes
LoadCredential=vault-token:/run/edgeseal/tokend.sock
ExecStart=/bin/sleep infinity
Restart=no
`
	// stranger asks for a credential no rule grants it.
	strangerUnit = `[Unit]
Description=stranger: no service of the config is this unit
Requires=edgeseal.target
After=edgeseal.target

[Service]
DynamicUser=yes
LoadCredential=vault-token:/run/edgeseal/tokend.sock
ExecStart=/bin/sleep infinity
`
	// staleClient connects, then exits, and leaves a child to send the request
	// once its parent is gone: the pid the kernel recorded is dead by then.
	staleClient = `import os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect("/run/edgeseal/tokend.sock")
parent = os.getpid()
if os.fork() != 0:
    os._exit(0)
while os.getppid() == parent:
    time.sleep(0.005)
time.sleep(0.05)
s.sendall(b'{"v":1}\n')
print(s.recv(65536).decode().strip())
`
)

func tokenStoryConfig(c *config.Config) {
	c.Tokend.IdleExit = config.Duration(2 * time.Second)
	c.Services = []config.Service{
		{Name: "app-one", Units: []string{"app-one.service"}, SharedWrite: []string{"telemetry"}},
		{Name: "collector", UIDs: []uint32{1001}, SharedRead: []string{"telemetry"}},
		{Name: "reporter", Units: []string{"reporter.service"}},
		{Name: "flaky", Units: []string{"flaky.service"}},
		{Name: "sealed-box", UIDs: []uint32{1004}, Wrap: true},
	}
}

func TestEachServiceGetsItsOwnToken(t *testing.T) {
	onEachServer(t, eachServiceGetsItsOwnToken)
}

func eachServiceGetsItsOwnToken(t *testing.T, srv testbed.Server) {
	testbed.Require(t, "python3")
	ctx := context.Background()
	t.Logf("Given a device running %s whose config names five services, each by a different kind of identity", srv)
	d := newDevice(t, false, tokenStoryConfig, withServer(srv))
	writeFile(t, filepath.Join(d.units, "app-one.service"), []byte(appOneUnit), 0o644)
	writeFile(t, filepath.Join(d.units, "reporter.service"), []byte(reporterUnit), 0o644)
	writeFile(t, filepath.Join(d.units, "flaky.service"), []byte(flakyUnit), 0o644)
	writeFile(t, filepath.Join(d.units, "stranger.service"), []byte(strangerUnit), 0o644)
	d.run("systemctl", "daemon-reload")
	d.run("systemctl", "enable", "edgeseal.target")
	d.start()
	if s := d.isActive("edgeseal-tokend.socket"); s != "active" {
		t.Fatalf("edgeseal-tokend.socket is %s after edgeseal.target started", s)
	}
	root := d.vaultClient()
	root.SetToken(d.rootToken())

	t.Log("When app-one.service (DynamicUser, known by its unit name) starts and runs `edgeseal token fetch`")
	d.run("systemctl", "start", "app-one.service")
	appOne := d.waitTokenFile("/run/app-one/token.json")
	t.Log("Then it can read and write its own secrets and its shared group, and nothing of another service")
	d.vaultOK(appOne, "kv", "put", "-mount=secret", "edgeseal/app-one/db", "password=one")
	d.vaultOK(appOne, "kv", "put", "-mount=secret", "edgeseal/shared/telemetry/endpoint", "url=https://collector")
	d.vaultDenied(appOne, "kv", "get", "-mount=secret", "edgeseal/collector/key")
	d.vaultDenied(appOne, "kv", "get", "-mount=secret", "edgeseal/reporter/key")
	d.vaultDenied(appOne, "token", "create", "-policy=edgeseal-svc-collector")
	if mode := d.run("stat", "-c", "%a", "/run/app-one/token.json"); strings.TrimSpace(mode) != "600" {
		t.Errorf("token file mode %s, want 600", mode)
	}
	checkTokenMeta(t, root, appOne, "app-one", "app-one.service")

	t.Log("When a process of uid 1001 (collector, known by its uid) runs `edgeseal token fetch`")
	out, stderr, err := d.m.RunAs(ctx, 1001, 1001, "edgeseal", "token", "fetch", "--out", "/tmp/collector/token.json")
	if err != nil {
		t.Fatalf("token fetch as uid 1001: %v\n%s%s\n%s", err, out, stderr, d.m.Journal(t, "edgeseal-tokend.service"))
	}
	t.Logf("Then it says where the token went: %s", strings.TrimSpace(out))
	collector := d.tokenIn("/tmp/collector/token.json")
	d.vaultOK(collector, "kv", "put", "-mount=secret", "edgeseal/collector/key", "k=v")
	d.vaultOK(collector, "kv", "get", "-mount=secret", "edgeseal/shared/telemetry/endpoint")
	d.vaultDenied(collector, "kv", "put", "-mount=secret", "edgeseal/shared/telemetry/endpoint", "url=evil")
	d.vaultDenied(collector, "kv", "get", "-mount=secret", "edgeseal/app-one/db")
	if o := d.run("stat", "-c", "%a %u", "/tmp/collector/token.json"); strings.TrimSpace(o) != "600 1001" {
		t.Errorf("collector's token file: %q, want 600 owned by 1001", o)
	}

	t.Log("When reporter.service (DynamicUser) starts with LoadCredential=vault-token:/run/edgeseal/tokend.sock")
	d.run("systemctl", "start", "reporter.service")
	reporter := d.waitTokenFile("/run/credentials/reporter.service/vault-token")
	t.Log("Then its credential is its own token")
	d.vaultOK(reporter, "kv", "put", "-mount=secret", "edgeseal/reporter/key", "k=v")
	d.vaultDenied(reporter, "kv", "get", "-mount=secret", "edgeseal/app-one/db")
	checkTokenMeta(t, root, reporter, "reporter", "reporter.service")

	t.Log("When a uid that no rule names asks")
	_, stderr, err = d.m.RunAs(ctx, 4242, 4242, "edgeseal", "token", "fetch", "--out", "/tmp/nobody/token.json")
	t.Log("Then it is refused, told how it was seen, and the refusal is in the journal")
	if err == nil || !strings.Contains(stderr, "uid 4242") {
		t.Errorf("token fetch as uid 4242: err %v, stderr %q; want a refusal naming uid 4242", err, stderr)
	}
	if j := d.m.Journal(t, "edgeseal-tokend.service"); !strings.Contains(j, "refused a token request") || !strings.Contains(j, "uid 4242") {
		t.Errorf("no refusal line for uid 4242 in the journal:\n%s", j)
	}
	if _, _, err := d.m.Run(ctx, "test", "-e", "/tmp/nobody/token.json"); err == nil {
		t.Errorf("a refused caller got a token file")
	}

	t.Log("When stranger.service, which no rule names, asks for a token with LoadCredential=")
	d.m.Run(ctx, "systemctl", "start", "stranger.service")
	t.Log("Then it gets no token, and the refusal is in the journal")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if strings.Contains(d.m.Journal(t, "edgeseal-tokend.service"), "LoadCredential=vault-token of unit stranger.service") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refusal of stranger.service in the journal\n%s", d.journal())
		}
	}
	cred, _, _ := d.m.Run(ctx, "sh", "-c", "cat /run/credentials/stranger.service/vault-token 2>&1; systemctl is-active stranger.service")
	t.Logf("And systemd starts it with an empty credential (cat; is-active): %q", strings.Join(strings.Fields(cred), " "))
	if strings.Contains(cred, "client_token") {
		t.Errorf("stranger.service got a token: %s", cred)
	}

	t.Log("When a process of uid 1001 connects and exits before its request is read (its pid is stale)")
	writeFile(t, filepath.Join(d.etc, "stale-client.py"), []byte(staleClient), 0o644)
	out, stderr, err = d.m.RunAs(ctx, 1001, 1001, "python3", "/etc/edgeseal/stale-client.py")
	t.Logf("Then it is refused: %s", strings.TrimSpace(out))
	if err != nil || !strings.Contains(out, `"status":"refused"`) || strings.Contains(out, "client_token") {
		t.Errorf("stale client: %v %q %q", err, out, stderr)
	}

	t.Log("When a service configured with wrap: true fetches its token")
	if _, stderr, err := d.m.RunAs(ctx, 1004, 1004, "edgeseal", "token", "fetch", "--out", "/tmp/box/token.json"); err != nil {
		t.Fatalf("token fetch as uid 1004: %v %s", err, stderr)
	}
	box := d.tokenIn("/tmp/box/token.json")
	t.Log("Then the client unwrapped it and the token works")
	d.vaultOK(box, "kv", "put", "-mount=secret", "edgeseal/sealed-box/k", "k=v")
	if !strings.Contains(d.m.Journal(t, "edgeseal-tokend.service"), "wrapped=true") {
		t.Errorf("the journal does not say the token was wrapped")
	}

	t.Log("When collector fetches again")
	d.m.RunAs(ctx, 1001, 1001, "edgeseal", "token", "fetch", "--out", "/tmp/collector/token.json")
	t.Log("Then its previous token is revoked")
	waitRevoked(t, d, collector, 5*time.Second)
	collector = d.tokenIn("/tmp/collector/token.json")
	d.vaultOK(collector, "kv", "get", "-mount=secret", "edgeseal/collector/key")

	t.Log("When flaky.service, which got its token as a credential, crashes into the failed state")
	d.run("systemctl", "start", "flaky.service")
	flaky := d.waitTokenFile("/run/credentials/flaky.service/vault-token")
	d.vaultOK(flaky, "token", "lookup")
	d.run("systemctl", "kill", "--signal=SIGKILL", "flaky.service")
	took := waitRevoked(t, d, flaky, 5*time.Second)
	t.Logf("Then its token is revoked %v after the kill", took.Round(time.Millisecond))
	if s := d.isActive("flaky.service"); s != "failed" {
		t.Errorf("flaky.service is %s, want failed", s)
	}
	if took > time.Second {
		t.Errorf("revoking a failed unit's token took %v, want within 1s", took)
	}

	t.Log("When the provider has had no connection for tokend.idle_exit (2s)")
	idle := waitInactive(t, d, "edgeseal-tokend.service", 10*time.Second)
	t.Logf("Then it exits (after %v) and its socket stays", idle.Round(time.Millisecond))
	if s := d.isActive("edgeseal-tokend.socket"); s != "active" {
		t.Errorf("edgeseal-tokend.socket is %s", s)
	}

	t.Log("When an operator adds a service to the config while the device runs, and it asks for its token")
	d.cfg.Services = append(d.cfg.Services, config.Service{Name: "newcomer", UIDs: []uint32{1005}})
	d.writeConfig()
	if _, stderr, err := d.m.RunAs(ctx, 1005, 1005, "edgeseal", "token", "fetch", "--out", "/tmp/newcomer/token.json"); err != nil {
		t.Fatalf("token fetch as uid 1005 after the config gained it: %v %s\n%s", err, stderr, d.journal())
	}
	t.Log("Then the provider is started again by the socket, and the new service's policy is applied on the way")
	newcomer := d.tokenIn("/tmp/newcomer/token.json")
	d.vaultOK(newcomer, "kv", "put", "-mount=secret", "edgeseal/newcomer/k", "k=v")
	d.vaultDenied(newcomer, "kv", "get", "-mount=secret", "edgeseal/app-one/db")
	if s := d.isActive("edgeseal-tokend.service"); s != "active" {
		t.Errorf("edgeseal-tokend.service is %s right after a request", s)
	}

	t.Log("When the device reboots")
	d.m.Reboot(t)
	if err := waitActive(d, "edgeseal.target", 60*time.Second); err != "" {
		t.Fatalf("after reboot: %s\n%s", err, d.journal())
	}
	t.Log("Then every token of the previous boot is revoked")
	for name, tok := range map[string]string{"app-one": appOne, "collector": collector, "reporter": reporter, "sealed-box": box, "newcomer": newcomer} {
		if _, _, err := d.m.Run(ctx, append(d.vaultEnv(tok), "token", "lookup")...); err == nil {
			t.Errorf("%s's token of the previous boot still works", name)
		}
	}

	t.Log("And no token appears in the journal")
	assertNoSecretsInJournal(t, d, appOne, collector, reporter, flaky, box, newcomer)
}

// waitTokenFile waits for a token file inside the device and returns its token.
func (d *device) waitTokenFile(path string) string {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, err := d.m.Run(context.Background(), "test", "-s", path); err == nil {
			return d.tokenIn(path)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("no token file %s after 20s\n%s", path, d.journal())
	return ""
}

// tokenIn reads a token file ({"auth":{"client_token":...}}) inside the device.
func (d *device) tokenIn(path string) string {
	d.t.Helper()
	var s api.Secret
	data, stderr, err := d.m.Run(context.Background(), "cat", path)
	if err != nil {
		d.t.Fatalf("cannot read the token file %s: %v %s\n%s", path, err, stderr, d.journal())
	}
	if err := json.Unmarshal([]byte(data), &s); err != nil || s.Auth == nil || s.Auth.ClientToken == "" {
		d.t.Fatalf("%s is not a Vault auth response: %v", path, err)
	}
	return s.Auth.ClientToken
}

// vaultEnv is the CLI of the device's server (bao or vault) inside the
// device, using token. OpenBao's reads the VAULT_ variables when its BAO_ ones
// are unset.
func (d *device) vaultEnv(token string) []string {
	return []string{"env", "VAULT_ADDR=" + d.cfg.VaultAddr(), "VAULT_CACERT=/run/edgeseal/pki/ca.crt", "VAULT_TOKEN=" + token, d.srv.InstallPath}
}

func (d *device) vaultOK(token string, args ...string) {
	d.t.Helper()
	if _, stderr, err := d.m.Run(context.Background(), append(d.vaultEnv(token), args...)...); err != nil {
		d.t.Errorf("vault %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
}

func (d *device) vaultDenied(token string, args ...string) {
	d.t.Helper()
	_, stderr, err := d.m.Run(context.Background(), append(d.vaultEnv(token), args...)...)
	if err == nil || !strings.Contains(stderr, "permission denied") {
		d.t.Errorf("vault %s: want permission denied, got %v\n%s", strings.Join(args, " "), err, stderr)
	}
}

// checkTokenMeta checks a service token's properties as Vault reports them.
func checkTokenMeta(t *testing.T, root *api.Client, token, service, unit string) {
	t.Helper()
	s, err := root.Auth().Token().Lookup(token)
	if err != nil {
		t.Fatalf("lookup of %s's token: %v", service, err)
	}
	pols, _ := s.TokenPolicies()
	meta, _ := s.TokenMetadata()
	orphan, _ := s.Data["orphan"].(bool)
	role, _ := s.Data["role"].(string)
	renewable, _ := s.TokenIsRenewable()
	// Vault applies the role's explicit max TTL at each renewal (the token's
	// own field stays 0): read it from the role.
	r, err := root.Logical().Read("auth/token/roles/edgeseal-service")
	if err != nil || r == nil {
		t.Fatalf("the service role: %v", err)
	}
	maxTTL := fmt.Sprint(r.Data["token_explicit_max_ttl"])
	// Vault's "default" policy lets a token look itself up, renew and revoke
	// itself, and use its cubbyhole; the one other is the service's own.
	if !slices.Equal(pols, []string{"default", "edgeseal-svc-" + service}) || !orphan || role != "edgeseal-service" || !renewable || maxTTL != "2592000" {
		t.Errorf("%s's token: policies %v, orphan %v, role %q, renewable %v, its role's explicit max TTL %ss; "+
			"want default and edgeseal-svc-%s, an orphan of role edgeseal-service, renewable up to 720h (tokens.service_max_ttl)",
			service, pols, orphan, role, renewable, maxTTL, service)
	}
	if meta["edgeseal_service"] != service || meta["unit"] != unit {
		t.Errorf("%s's token metadata %v: want edgeseal_service=%s unit=%s", service, meta, service, unit)
	}
}

// waitRevoked waits until token no longer works and returns how long it took.
func waitRevoked(t *testing.T, d *device, token string, limit time.Duration) time.Duration {
	t.Helper()
	c := d.vaultClient()
	c.SetToken(token)
	t0 := time.Now()
	for {
		if _, err := c.Auth().Token().LookupSelf(); err != nil {
			return time.Since(t0)
		}
		if time.Since(t0) > limit {
			t.Fatalf("token still valid %v later\n%s", limit, d.journal())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitInactive waits until unit is inactive and returns how long it took.
func waitInactive(t *testing.T, d *device, unit string, limit time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	for d.isActive(unit) != "inactive" {
		if time.Since(t0) > limit {
			t.Fatalf("%s is still %s after %v\n%s", unit, d.isActive(unit), limit, d.journal())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(t0)
}
