//go:build integration

package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// The EdgeX client of these tests (tests/edgex) is EdgeX's own code: its token
// loader and its secret client, go-mod-secrets v4 with the store type
// "openbao". It lives in its own module so that EdgeX is no dependency of
// edgeseal's.
const (
	edgexClientDir = "/opt/edgex" // where the device sees the client's directory
	edgexClient    = edgexClientDir + "/edgex-secret-client"
	// edgexRefused is go-mod-secrets' error when the server answers a read
	// with 403 (a token refused at its lookup-self says "status code 403"):
	// TLS verified, the token valid, and its policy said no.
	edgexRefused = "Received a '403' response from the secret store"
)

// edgexStoryConfig is EdgeX's layout: KV v1 under secret/edgex/<service>/,
// and two EdgeX services known by their units.
func edgexStoryConfig(c *config.Config) {
	c.Vault.KVVersion = 1
	c.Vault.SecretPrefix = "edgex"
	c.Services = []config.Service{
		{Name: "core-data", Units: []string{"core-data.service"}},
		{Name: "core-command", Units: []string{"core-command.service"}},
	}
}

// buildEdgeXClient builds tests/edgex's client, static, into a directory of
// its own that the device can bind in.
func buildEdgeXClient(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// Bound into the device as it is: the services' dynamic users must reach it.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(edgexClient)), "./cmd/edgex-secret-client")
	build.Dir = filepath.Join(repoRoot(), "tests", "edgex")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cannot build the EdgeX client (tests/edgex): %v\n%s", err, out)
	}
	return dir
}

// withEdgeXClient binds the client's directory read-only at /opt/edgex.
func withEdgeXClient(dir string) deviceOption {
	return func(d *device, opts *testbed.MachineOptions) {
		opts.Binds = append(opts.Binds, testbed.Bind{Host: dir, Container: edgexClientDir, ReadOnly: true})
	}
}

func TestAnEdgeXServiceReadsItsSecretsWithADeliveredToken(t *testing.T) {
	client := buildEdgeXClient(t)
	t.Log("Given a device in EdgeX's layout (KV v1, secret/edgex/<service>/) whose config names core-data and core-command by their units")
	d := newDevice(t, false, edgexStoryConfig, withEdgeXClient(client))
	d.run("systemctl", "enable", "edgeseal.target")
	d.start()
	t.Log("And a secret in each one's path, written with a root token")
	root := d.vaultClient()
	root.SetToken(d.rootToken())
	secrets := map[string]string{"core-data": "data-" + randomHex(t), "core-command": "command-" + randomHex(t)}
	for svc, password := range secrets {
		if _, err := root.Logical().Write("secret/edgex/"+svc+"/db", map[string]any{"username": svc, "password": password}); err != nil {
			t.Fatalf("cannot write %s's secret: %v", svc, err)
		}
	}
	read := func(svc string) []string {
		return []string{edgexClient, "--service", svc, "--addr", d.cfg.VaultAddr(), "--ca-cert", "/run/edgeseal/pki/ca.crt",
			"--path", "secret/edgex/" + svc + "/db"}
	}

	t.Log("When core-data.service starts with LoadCredential=vault-token:/run/edgeseal/tokend.sock and its EdgeX client reads its own secret")
	credential := []string{"-p", "LoadCredential=vault-token:/run/edgeseal/tokend.sock"}
	t0 := time.Now()
	out, stderr, err := d.runService("core-data.service", credential, append(read("core-data"), "--token-file=${CREDENTIALS_DIRECTORY}/vault-token")...)
	t.Logf("Then it reads it (%v): %s", time.Since(t0).Round(time.Millisecond), strings.Join(okLines(out), "; "))
	checkEdgeXRead(t, d, "core-data", secrets["core-data"], out, stderr, err)
	// go-mod-secrets renews a token every half of the period lookup-self
	// shows, and not at all when it shows none, as for a token whose period
	// comes from its role alone: edgeseal sets the period on each token.
	want := fmt.Sprintf("kick off token renewal with interval: %v", d.cfg.Tokens.ServicePeriod.D()/2)
	t.Logf("And EdgeX's client renews the token, every half period (%q)", want)
	if !strings.Contains(out, want) || strings.Contains(out, "no token renewal") {
		t.Errorf("EdgeX's client does not renew the token; its log:\n%s", out)
	}

	t.Log("When the same service's client, with its credential, reads core-command's secret")
	out, stderr, err = d.runService("core-data.service", credential,
		append(read("core-command"), "--token-file=${CREDENTIALS_DIRECTORY}/vault-token")...)
	t.Logf("Then the server refuses it: %s", lastLine(stderr))
	checkEdgeXRefused(t, out, stderr, err, secrets)

	t.Log("When core-command.service runs `edgeseal token fetch --out` and then its EdgeX client with that file, on its own secret")
	fetch := []string{"-p", "RuntimeDirectory=core-command",
		"-p", "ExecStartPre=/usr/bin/edgeseal token fetch --out /run/core-command/token.json --quiet"}
	out, stderr, err = d.runService("core-command.service", fetch, append(read("core-command"), "--token-file=/run/core-command/token.json")...)
	t.Logf("Then it reads it: %s", strings.Join(okLines(out), "; "))
	checkEdgeXRead(t, d, "core-command", secrets["core-command"], out, stderr, err)

	t.Log("When its client reads core-data's secret with that file")
	out, stderr, err = d.runService("core-command.service", fetch, append(read("core-data"), "--token-file=/run/core-command/token.json")...)
	t.Logf("Then the server refuses it: %s", lastLine(stderr))
	checkEdgeXRefused(t, out, stderr, err, secrets)

	t.Log("And the provider's journal says each run got its service's token the way it asked: core-data's by LoadCredential=, core-command's by its unit")
	j := d.m.Journal(t, "edgeseal-tokend.service")
	for _, line := range []string{
		`msg="issued a token" service=core-data identity="LoadCredential=vault-token of unit core-data.service `,
		`msg="issued a token" service=core-command identity="unit core-command.service `,
	} {
		if n := strings.Count(j, line); n != 2 {
			t.Errorf("the provider's journal has %d lines %s..., want 2 (one per run)\n%s", n, line, j)
		}
	}

	t.Log("And no token or secret value appears in the journal")
	assertNoSecretsInJournal(t, d, secrets["core-data"], secrets["core-command"])
}

// runService runs argv as the transient unit `unit`, with DynamicUser=yes
// after edgeseal.target and props (systemd-run -p), as its unit file would
// start it, and waits for it: its output and how it exited. The unit is
// collected afterwards, failed or not, so the name can run again.
func (d *device) runService(unit string, props []string, argv ...string) (stdout, stderr string, err error) {
	d.t.Helper()
	args := []string{"systemd-run", "--wait", "--pipe", "--quiet", "--collect", "--unit=" + unit,
		"-p", "DynamicUser=yes", "-p", "Requires=edgeseal.target", "-p", "After=edgeseal.target"}
	args = append(append(args, props...), argv...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return d.m.Run(ctx, args...)
}

// checkEdgeXRead checks that the client read both keys of svc's secret, the
// password being the one the test wrote, and printed no value.
func checkEdgeXRead(t *testing.T, d *device, svc, password, out, stderr string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s's EdgeX client could not read its own secret: %v\nstdout:\n%s\nstderr:\n%s\n%s",
			svc, err, out, stderr, d.m.Journal(t, "edgeseal-tokend.service"))
	}
	want := []string{"ok key=password sha256=" + sha256Hex(password), "ok key=username sha256=" + sha256Hex(svc)}
	if got := okLines(out); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s's EdgeX client printed %q, want %q", svc, got, want)
	}
	if strings.Contains(out+stderr, password) {
		t.Errorf("%s's EdgeX client printed the secret's value", svc)
	}
}

// checkEdgeXRefused checks that the client exited 1 with the server's 403:
// not a connection, TLS or token file error.
func checkEdgeXRefused(t *testing.T, out, stderr string, err error, secrets map[string]string) {
	t.Helper()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(stderr, edgexRefused) {
		t.Errorf("want the client to exit 1 with %q; got %v\nstdout:\n%s\nstderr:\n%s", edgexRefused, err, out, stderr)
	}
	if len(okLines(out)) > 0 {
		t.Errorf("a refused client printed keys: %q", okLines(out))
	}
	for _, v := range secrets {
		if strings.Contains(out+stderr, v) {
			t.Errorf("a refused client printed a secret's value")
		}
	}
}

// okLines are the client's "ok key=..." lines; EdgeX's logger writes the rest
// of its stdout.
func okLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "ok key=") {
			lines = append(lines, l)
		}
	}
	return lines
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func randomHex(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
