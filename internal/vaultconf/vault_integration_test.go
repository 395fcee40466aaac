//go:build integration

package vaultconf_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/secretstore"
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

func TestVaultRunsWithTheRenderedConfigAndThisBootsPKI(t *testing.T) {
	bin, err := testbed.VaultBinaryPath()
	if err != nil {
		t.Fatal(err) // nothing that needs Vault skips
	}
	for _, intermediate := range []bool{false, true} {
		t.Run(fmt.Sprintf("intermediate=%v", intermediate), func(t *testing.T) {
			t.Log("Given this boot's PKI and Vault's config rendered from edgeseal's")
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
			data, err := vaultconf.Render(v, "", p.VaultCert, p.VaultKey, p.VaultAdmin)
			if err != nil {
				t.Fatal(err)
			}
			if err := vaultconf.Write(p, data, true); err != nil {
				t.Fatal(err)
			}

			t.Log("When Vault starts with that config directory")
			cmd := exec.Command(bin, "server", "-config="+p.VaultConfDir)
			cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
			vault := testbed.StartProcess(t, "vault", cmd)
			pool, err := pki.LoadCAPool(p.CACert)
			if err != nil {
				t.Fatal(err)
			}
			c := httpsClient(pool)
			addr := "https://" + v.Listen
			var lastErr error
			for deadline := time.Now().Add(vaultStartWait); ; {
				resp, err := c.Get(addr + "/v1/sys/health")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusNotImplemented {
						t.Fatalf("health: HTTP %d, want 501 (not initialised)", resp.StatusCode)
					}
					break
				}
				lastErr = err
				if vault.Exited() {
					t.Fatalf("Vault exited:\n%s", vault.LogTail(30))
				}
				time.Sleep(100 * time.Millisecond)
				if time.Now().After(deadline) {
					t.Fatalf("Vault did not answer at %s within %v (%v):\n%s", addr, vaultStartWait, lastErr, vault.LogTail(30))
				}
			}
			t.Log("Then it answers over TLS verified with this boot's CA: uninitialised, HTTP 501")

			t.Log("And a client trusting another boot's CA, or speaking TLS 1.1 or plain HTTP, gets nowhere")
			other, _ := pki.Issue(pki.Options{Validity: time.Hour})
			otherPool := x509.NewCertPool()
			otherPool.AddCert(other.CACert)
			if resp, err := httpsClient(otherPool).Get(addr + "/v1/sys/health"); err == nil {
				resp.Body.Close()
				t.Error("a client trusting another CA reached Vault")
			}
			if conn, err := tls.Dial("tcp", v.Listen, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
				conn.Close()
				t.Error("Vault accepted TLS 1.1: tls_min_version was not applied")
			}
			if resp, err := http.Get("http://" + v.Listen + "/v1/sys/health"); err == nil {
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
			admin, err := secretstore.NewClient("unix://"+p.VaultAdmin, nil)
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
		})
	}
}
