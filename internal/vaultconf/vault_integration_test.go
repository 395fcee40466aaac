//go:build integration

package vaultconf_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// vaultStartWait bounds Vault's start.
const vaultStartWait = 60 * time.Second

func httpsClient(pool *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
}

func call(t *testing.T, c *http.Client, method, url string, body, out any) int {
	t.Helper()
	var rd *bytes.Reader
	if body == nil {
		rd = bytes.NewReader(nil)
	} else {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, url, rd)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

// unknownField is how both servers warn of a field they do not know and
// ignore. Given a config directory, as edgeseal gives them, both check the
// fields of listener blocks only (top-level fields go unchecked): the part of
// the config in which they differ.
var unknownField = regexp.MustCompile(`unknown or unsupported field (\S+) found in configuration`)

// unknownFields lists the fields a server's log warns it does not know.
func unknownFields(log string) []string {
	var out []string
	for _, m := range unknownField.FindAllStringSubmatch(log, -1) {
		out = append(out, m[1])
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// rendered is a server started with the config vaultconf rendered for it.
type rendered struct {
	proc   *testbed.Process
	paths  paths.Paths
	port   int    // the TCP listener's; the next one is free too
	listen string // 127.0.0.1:port
	addr   string // https://127.0.0.1:port
	pool   *x509.CertPool
}

// startRendered renders the config for kind and this boot's PKI (an
// intermediate CA or not), starts srv with it, and waits until it answers
// over TLS verified with the PKI's CA: uninitialised, HTTP 501.
func startRendered(t *testing.T, srv testbed.Server, kind vaultbin.Kind, intermediate bool) *rendered {
	t.Helper()
	p := paths.New(t.TempDir())
	b, err := pki.Issue(pki.Options{Validity: time.Hour, Intermediate: intermediate})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(p); err != nil {
		t.Fatal(err)
	}
	// The port after it is free too: the test proves Vault opens no
	// cluster listener there.
	port := testbed.FreeLoopbackPort(t)
	v := config.Default().Vault
	v.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	v.StoragePath = filepath.Join(p.Root, "var/lib/edgeseal-vault/data")
	if err := os.MkdirAll(v.StoragePath, 0o700); err != nil {
		t.Fatal(err)
	}
	// The admin socket's directory is systemd's RuntimeDirectory= of
	// the Vault unit, Vault's own and 0700.
	p.VaultAdmin = testbed.ShortSocketPath(t, "admin.sock")
	data, err := vaultconf.Render(v, kind, p.VaultCert, p.VaultKey, p.VaultAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if err := vaultconf.Write(p, data, true); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(srv.Bin, "server", "-config="+p.VaultConfDir)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	r := &rendered{proc: testbed.StartProcess(t, srv.Name, cmd), paths: p, port: port, listen: v.Listen, addr: "https://" + v.Listen}
	if r.pool, err = pki.LoadCAPool(p.CACert); err != nil {
		t.Fatal(err)
	}
	c := httpsClient(r.pool)
	var lastErr error
	for deadline := time.Now().Add(vaultStartWait); ; {
		resp, err := c.Get(r.addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotImplemented {
				t.Fatalf("health: HTTP %d, want 501 (not initialised)", resp.StatusCode)
			}
			// Its log up to its config's warnings is out once it says it
			// started ("==> OpenBao server started!").
			for !strings.Contains(r.proc.LogTail(10000), "server started!") {
				if time.Now().After(deadline) {
					t.Fatalf("%s answers, but its log never says it started:\n%s", srv, r.proc.LogTail(30))
				}
				time.Sleep(20 * time.Millisecond)
			}
			return r
		}
		lastErr = err
		if r.proc.Exited() {
			t.Fatalf("%s exited:\n%s", srv, r.proc.LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer at %s within %v (%v):\n%s", srv, r.addr, vaultStartWait, lastErr, r.proc.LogTail(30))
		}
	}
}

// The name says Vault, as the project says for either server: docs/threat-model.md
// cites it, with its subtest intermediate=true. Each case runs on each server
// of the test bed (subtests openbao and vault).
func TestVaultRunsWithTheRenderedConfigAndThisBootsPKI(t *testing.T) {
	servers, err := testbed.Servers()
	if err != nil {
		t.Fatal(err) // nothing that needs a server skips
	}
	for _, intermediate := range []bool{false, true} {
		t.Run(fmt.Sprintf("intermediate=%v", intermediate), func(t *testing.T) {
			for _, srv := range servers {
				t.Run(srv.Name, func(t *testing.T) { serveRenderedConfig(t, srv, intermediate) })
			}
		})
	}
}

// serveRenderedConfig is the story of one server with the config rendered for
// it and a PKI with or without an intermediate CA.
func serveRenderedConfig(t *testing.T, srv testbed.Server, intermediate bool) {
	t.Logf("Given this boot's PKI and the server config edgeseal renders for %s", srv)
	t.Logf("When %s starts with that config directory", srv)
	r := startRendered(t, srv, srv.Kind, intermediate)
	vault, p, port, addr, pool := r.proc, r.paths, r.port, r.addr, r.pool
	c := httpsClient(pool)
	t.Log("Then it answers over TLS verified with this boot's CA: uninitialised, HTTP 501")
	t.Log("And it knows every field of its listeners")
	if unknown := unknownFields(vault.LogTail(10000)); len(unknown) > 0 {
		t.Errorf("%s warns of unknown fields %q: the config has an option of another server\n%s", srv, unknown, vault.LogTail(30))
	}

	t.Log("And a client trusting another boot's CA, or speaking TLS 1.1 or plain HTTP, gets nowhere")
	other, _ := pki.Issue(pki.Options{Validity: time.Hour})
	otherPool := x509.NewCertPool()
	otherPool.AddCert(other.CACert)
	if resp, err := httpsClient(otherPool).Get(addr + "/v1/sys/health"); err == nil {
		resp.Body.Close()
		t.Error("a client trusting another CA reached Vault")
	}
	if conn, err := tls.Dial("tcp", r.listen, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		conn.Close()
		t.Error("Vault accepted TLS 1.1: tls_min_version was not applied")
	}
	if resp, err := http.Get("http://" + r.listen + "/v1/sys/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP: HTTP %d, want 400", resp.StatusCode)
		}
	}

	t.Log("When it is initialised and unsealed")
	var initResp struct {
		Keys []string `json:"keys_base64"`
	}
	if code := call(t, c, http.MethodPut, addr+"/v1/sys/init", map[string]int{"secret_shares": 1, "secret_threshold": 1}, &initResp); code != http.StatusOK || len(initResp.Keys) != 1 {
		t.Fatalf("init: HTTP %d, %d keys:\n%s", code, len(initResp.Keys), vault.LogTail(30))
	}
	var unseal struct {
		Sealed bool `json:"sealed"`
	}
	if code := call(t, c, http.MethodPut, addr+"/v1/sys/unseal", map[string]string{"key": initResp.Keys[0]}, &unseal); code != http.StatusOK || unseal.Sealed {
		t.Fatalf("unseal: HTTP %d, sealed %v:\n%s", code, unseal.Sealed, vault.LogTail(30))
	}
	if code := call(t, c, http.MethodGet, addr+"/v1/sys/health", nil, nil); code != http.StatusOK {
		t.Errorf("health after unseal: HTTP %d, want 200 (active)", code)
	}
	t.Log("And it answers on the admin socket too, without TLS")
	admin, err := vaultclient.New("unix://"+p.VaultAdmin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := admin.Sys().SealStatus(); err != nil || st.Sealed {
		t.Errorf("seal status on the admin socket: %+v, %v", st, err)
	}
	t.Log("Then it opens no cluster listener on the API port + 1")
	if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port+1), time.Second); err == nil {
		conn.Close()
		t.Errorf("something listens on port %d: Vault's cluster listener (disable_clustering not applied?)", port+1)
	}

	tcp, err := vaultclient.New(addr, pool)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Kind != vaultbin.OpenBao {
		t.Log("And, HashiCorp Vault having no such option, it answers the rekey status without a token on both listeners")
		for name, c := range map[string]*api.Client{"TCP": tcp, "admin": admin} {
			if st, err := c.Sys().RekeyStatus(); err != nil || st.Started {
				t.Errorf("%s listener: rekey status without a token: %+v, %v; want an answer, no rekey started", name, st, err)
			}
		}
		return
	}
	// OpenBao 2.4 routes sys/rekey/* to its HTTP handlers only; the
	// system backend's paths of the same name have no callbacks. So
	// with the option the endpoints are gone, for a root token too:
	// HTTP 405, "unsupported operation".
	t.Log("And, OpenBao, neither listener reads or starts a rekey without a token (disable_unauthed_rekey_endpoints)")
	for name, c := range map[string]*api.Client{"TCP": tcp, "admin": admin} {
		st, err := c.Sys().RekeyStatus()
		if !isUnsupported(err) {
			t.Errorf("%s listener: rekey status without a token: %+v, %v; want HTTP 405", name, st, err)
		}
		st, err = c.Sys().RekeyInit(&api.RekeyInitRequest{SecretShares: 1, SecretThreshold: 1})
		if !isUnsupported(err) {
			t.Errorf("%s listener: rekey start without a token: %+v, %v; want HTTP 405", name, st, err)
		}
	}
}

// isUnsupported tells whether err is the server's HTTP 405, "unsupported
// operation".
func isUnsupported(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusMethodNotAllowed && slices.Contains(re.Errors, "unsupported operation")
}

// The reason Render takes the server's kind: OpenBao's listener option is not
// Vault's. Vault given the config rendered for OpenBao starts, ignoring the
// option, and warns of it, which is what the check above looks for.
func TestVaultIgnoresAndWarnsOfOpenBaosListenerOption(t *testing.T) {
	srv, err := testbed.ServerNamed(string(vaultbin.Vault))
	if err != nil {
		t.Fatal(err)
	}
	r := startRendered(t, srv, vaultbin.OpenBao, false)
	if got := unknownFields(r.proc.LogTail(10000)); !slices.Equal(got, []string{"disable_unauthed_rekey_endpoints"}) {
		t.Errorf("%s with OpenBao's config warns of unknown fields %q, want disable_unauthed_rekey_endpoints:\n%s", srv, got, r.proc.LogTail(30))
	}
}
