//go:build integration

package integration

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/tests/keyscan"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

func TestBootChain(t *testing.T) {
	onEachServer(t, bootChain)
}

func bootChain(t *testing.T, srv testbed.Server) {
	ctx := context.Background()
	t.Logf("Given a device with edgeseal installed by `make install` for %s and edgeseal.target enabled", srv)
	d := newDevice(t, false, nil, withServer(srv))
	d.run("systemctl", "enable", "edgeseal.target")

	t.Log("When it boots for the first time and edgeseal.target is started")
	took := d.start()
	t.Logf("Then edgeseal.target is active (cold first boot: %v)", took.Round(time.Millisecond))
	for _, u := range []string{"edgeseal-pki.service", "edgeseal-vault.service", "edgeseal-unseal.service", "edgeseal.target"} {
		if s := d.isActive(u); s != "active" {
			t.Errorf("%s is %s", u, s)
		}
	}
	st := d.status()
	if st["ready"] != true {
		t.Fatalf("edgeseal status: %v", st)
	}
	human, _, err := d.m.Run(ctx, "edgeseal", "status")
	if err != nil || !strings.Contains(human, "ready: Vault is unsealed") {
		t.Errorf("edgeseal status (human): %v\n%s", err, human)
	}
	t.Logf("And the server that answers is %s, started from %s", srv, srv.InstallPath)
	if ss, err := d.vaultClient().Sys().SealStatus(); err != nil {
		t.Errorf("seal status: %v", err)
	} else if ss.Version != srv.Version {
		t.Errorf("the server reports version %q, want %s", ss.Version, srv)
	}
	if cmd := d.run("systemctl", "show", "-P", "ExecStart", "edgeseal-vault.service"); !strings.Contains(cmd, "path="+srv.InstallPath+" ") {
		t.Errorf("edgeseal-vault.service runs %s, want %s", cmd, srv.InstallPath)
	}

	t.Log("And the sealed unseal key and admin token are on persistent disk, 0600, and no root token but those two exists")
	if out := d.run("stat", "-c", "%a %U", "/var/lib/edgeseal/unseal-key.sealed", "/var/lib/edgeseal/admin-token.sealed"); out != "600 root\n600 root\n" {
		t.Errorf("sealed key and admin token mode/owner: %q", out)
	}
	c := d.vaultClient()
	c.SetToken(d.rootToken())
	if n := countRootTokens(t, c); n != 2 {
		t.Errorf("root tokens: %d, want edgeseal's admin token (init's, sealed under the unseal key) and the maintenance token", n)
	}
	t.Log("And `edgeseal root-token --ttl 10m` gives a root token that expires and cannot be renewed")
	self, err := c.Auth().Token().LookupSelf()
	if err != nil {
		t.Fatal(err)
	}
	ttl, _ := self.TokenTTL()
	renewable, _ := self.TokenIsRenewable()
	if ttl <= 0 || ttl > 10*time.Minute || renewable {
		t.Errorf("maintenance root token: ttl %v, renewable %v", ttl, renewable)
	}
	if _, err := c.KVv2("secret").Put(ctx, "edgeseal/app-one/db", map[string]any{"password": "hunter2"}); err != nil {
		t.Fatal(err)
	}

	t.Log("And the token-issuing token is in tmpfs, private to the token provider's user")
	if out := d.run("stat", "-c", "%a %U", "/run/edgeseal/tokend", "/run/edgeseal/tokend/issuing-token.json"); out != "700 edgeseal-tokend\n600 edgeseal-tokend\n" {
		t.Errorf("token-issuing token dir/file: %q", out)
	}

	t.Log("And the per-boot CA's private key is on no filesystem")
	assertCAKeyNowhere(t, d)

	t.Log("When an operator restarts Vault")
	t0 := time.Now()
	d.run("systemctl", "restart", "edgeseal-vault.service")
	took = d.waitUnsealed(30 * time.Second)
	t.Logf("Then it is unsealed again without a person: %v after `systemctl restart` returned (%v in all)", took.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	t.Log("When Vault is killed with SIGKILL")
	d.run("kill", "-9", d.mainPID("edgeseal-vault.service"))
	time.Sleep(50 * time.Millisecond)
	took = d.waitUnsealed(30 * time.Second)
	t.Logf("Then systemd restarts it and it is unsealed again %v after the kill", took.Round(time.Millisecond))
	if s := d.isActive("edgeseal.target"); s != "active" {
		t.Errorf("edgeseal.target after Vault restarts: %s", s)
	}
	if st := d.status(); st["daemon"].(map[string]any)["reunseals"].(float64) < 1 {
		t.Errorf("status does not count re-unseals: %v", st["daemon"])
	}
	journal := d.m.Journal(t, "edgeseal-unseal.service")
	if !strings.Contains(journal, "unsealed it again") {
		t.Errorf("the journal does not say Vault was unsealed again:\n%s", journal)
	}
	if strings.Contains(journal, "level=WARN msg=\"cannot") {
		t.Errorf("edgeseal-unseal could not do something it should:\n%s", testbed.GrepLines(journal, "level=WARN msg=\"cannot"))
	}

	t.Log("When the device reboots")
	d.m.Reboot(t)
	t.Log("Then edgeseal.target comes up unattended")
	if err := waitActive(d, "edgeseal.target", 60*time.Second); err != "" {
		t.Fatalf("after reboot: %s\n%s", err, d.m.Journal(t, "edgeseal-unseal.service"))
	}
	c = d.vaultClient()
	maintenance := d.rootToken()
	c.SetToken(maintenance)
	sec, err := c.KVv2("secret").Get(ctx, "edgeseal/app-one/db")
	if err != nil || sec.Data["password"] != "hunter2" {
		t.Fatalf("the secret written before the reboot: %v %v", sec, err)
	}
	t.Log("And the previous boot's maintenance root token was revoked")
	if n := countRootTokens(t, c); n != 2 {
		t.Errorf("root tokens after reboot: %d, want the admin token and this boot's maintenance token", n)
	}
	assertCAKeyNowhere(t, d)

	t.Log("And neither edgeseal-pki nor edgeseal-unseal ran the server binary's `version` again: each kept the answer for the same file (0600, in its own state directory)")
	for _, u := range []string{"edgeseal-pki.service", "edgeseal-unseal.service"} {
		if j := d.m.Journal(t, u); !strings.Contains(j, `msg="the secret store server is supported"`) || !strings.Contains(j, "known_binary=true") {
			t.Errorf("%s after the reboot: want its line saying the server is supported with known_binary=true:\n%s", u, j)
		}
	}
	if out := d.run("stat", "-c", "%a", "/var/lib/private/edgeseal-pki/server-identity.json", "/var/lib/edgeseal/server-identity.json"); out != "600\n600\n" {
		t.Errorf("the kept answers' modes: %q, want 600 each", out)
	}

	t.Log("And nothing edgeseal logged contains a token or the unseal key")
	assertNoSecretsInJournal(t, d, maintenance)
}

func countRootTokens(t testing.TB, c *api.Client) int {
	return len(testbed.RootAccessors(t, c))
}

func waitActive(d *device, unit string, limit time.Duration) string {
	t0 := time.Now()
	for {
		s := d.isActive(unit)
		if s == "active" {
			return ""
		}
		if s == "failed" || time.Since(t0) > limit {
			return unit + " is " + s
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bootCA is this boot's CA certificate on the device.
func bootCA(t *testing.T, d *device) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode([]byte(d.run("cat", "/run/edgeseal/pki/ca.crt")))
	if blk == nil {
		t.Fatal("no CA certificate")
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// assertCAKeyNowhere scans every filesystem the device writes (its tmpfs root,
// /run, /tmp, the services' private /tmp, and its persistent state) for a private
// key matching this boot's CA certificate, or its issuing CA's (the second
// certificate of vault.crt, with pki.intermediate).
func assertCAKeyNowhere(t *testing.T, d *device) {
	t.Helper()
	cas := []*x509.Certificate{bootCA(t, d)}
	if _, rest := pem.Decode([]byte(d.run("cat", "/run/edgeseal/pki/vault.crt"))); len(rest) > 0 {
		if blk, _ := pem.Decode(rest); blk != nil {
			issuing, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			cas = append(cas, issuing)
		}
	}
	root := "/proc/" + strconv.Itoa(d.m.Leader()) + "/root"
	for _, dir := range []string{"run", "tmp", "var", "etc", "root", "home", "srv", "opt", "dev/shm"} {
		if _, err := os.Stat(filepath.Join(root, dir)); os.IsNotExist(err) {
			continue
		}
		for _, c := range cas {
			found, err := keyscan.FindPrivateKeysMatching(filepath.Join(root, dir), c.PublicKey)
			if err != nil {
				t.Fatalf("cannot scan /%s: %v", dir, err)
			}
			if len(found) > 0 {
				t.Errorf("the private key of %s is on disk: %v", c.Subject.CommonName, found)
			}
		}
	}
	allowed := []string{"/run/edgeseal/pki/vault.key", "/run/credentials/edgeseal-vault.service/tls.key"}
	for _, f := range strings.Fields(d.run("sh", "-c", "grep -rl 'PRIVATE KEY' /run /tmp /var /etc 2>/dev/null || true")) {
		if !slices.Contains(allowed, f) {
			t.Errorf("a private key other than Vault's TLS key is on the device: %s", f)
		}
	}
}

// assertNoSecretsInJournal checks that no token, nor the device's key material,
// shows up in the journal: the secrets the test knows, and anything shaped like a
// Vault token (OpenBao's service tokens have the same hvs. prefix).
func assertNoSecretsInJournal(t *testing.T, d *device, known ...string) {
	t.Helper()
	j := d.m.Journal(t, "")
	ikm, err := os.ReadFile(filepath.Join(d.etc, "device-secret"))
	if err != nil {
		t.Fatal(err)
	}
	issuing := d.run("cat", "/run/edgeseal/tokend/issuing-token.json")
	var s struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if err := json.Unmarshal([]byte(issuing), &s); err != nil || s.Auth.ClientToken == "" {
		t.Fatalf("token-issuing token file: %v", err)
	}
	for _, secret := range append(known, string(ikm), s.Auth.ClientToken) {
		if secret != "" && strings.Contains(j, secret) {
			t.Errorf("the journal contains a secret:\n%s", testbed.GrepLines(j, secret))
		}
	}
	// Vault's tokens are hvs., OpenBao's s. (service), b. and r. (batch, recovery).
	if m := regexp.MustCompile(`\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{20,}`).FindString(j); m != "" {
		t.Errorf("the journal contains a Vault token:\n%s", testbed.GrepLines(j, m))
	}
}
