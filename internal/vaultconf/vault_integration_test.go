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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
)

const (
	vaultVersion   = "v1.21.0"
	vaultStartWait = 60 * time.Second
	vaultStopWait  = 10 * time.Second
)

// vaultBinary is the Vault build of tests/lib/build-vault.sh (EDGESEAL_VAULT
// overrides it). Its absence fails the test: nothing that needs Vault skips.
func vaultBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("EDGESEAL_VAULT"); p != "" {
		return p
	}
	cache := os.Getenv("EDGESEAL_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "edgeseal")
	}
	p := filepath.Join(cache, "vault-"+vaultVersion, "vault")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no Vault build at %s: run tests/lib/build-vault.sh (or `make vault`) first", p)
	}
	return p
}

// freePortPair is a loopback port p with p+1 free too: the test proves that
// Vault opens no cluster listener on p+1.
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1))
		l.Close()
		if err == nil {
			l2.Close()
			return port
		}
	}
	t.Fatal("no two adjacent free loopback ports")
	return 0
}

// startVault runs `vault server -config=FILE` and ends it, by its pid, at cleanup.
func startVault(t *testing.T, bin, configFile string) (logFile string, exited <-chan struct{}) {
	t.Helper()
	logFile = filepath.Join(t.TempDir(), "vault.log")
	out, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "server", "-config="+configFile)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(vaultStopWait):
			cmd.Process.Kill()
			<-done
		}
	})
	return logFile, done
}

func logTail(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

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
	bin := vaultBinary(t)
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
			port := freePortPair(t)
			v := config.Default().Vault
			v.Listen = fmt.Sprintf("127.0.0.1:%d", port)
			v.StoragePath = filepath.Join(p.Root, "var/lib/edgeseal-vault/data")
			if err := os.MkdirAll(v.StoragePath, 0o700); err != nil {
				t.Fatal(err)
			}
			data, err := vaultconf.Render(v, p.VaultCert, p.VaultKey)
			if err != nil {
				t.Fatal(err)
			}
			if err := vaultconf.Write(p, data); err != nil {
				t.Fatal(err)
			}

			t.Log("When Vault starts with that config")
			logFile, exited := startVault(t, bin, p.VaultConfig)
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
				select {
				case <-exited:
					t.Fatalf("Vault exited:\n%s", logTail(logFile))
				case <-time.After(100 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("Vault did not answer at %s within %v (%v):\n%s", addr, vaultStartWait, lastErr, logTail(logFile))
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
				t.Fatalf("init: HTTP %d, %d keys:\n%s", code, len(initResp.Keys), logTail(logFile))
			}
			var unseal struct {
				Sealed bool `json:"sealed"`
			}
			if code := call(t, c, http.MethodPut, addr+"/v1/sys/unseal", map[string]string{"key": initResp.Keys[0]}, &unseal); code != http.StatusOK || unseal.Sealed {
				t.Fatalf("unseal: HTTP %d, sealed %v:\n%s", code, unseal.Sealed, logTail(logFile))
			}
			if code := call(t, c, http.MethodGet, addr+"/v1/sys/health", nil, nil); code != http.StatusOK {
				t.Errorf("health after unseal: HTTP %d, want 200 (active)", code)
			}
			t.Log("Then it opens no cluster listener on the API port + 1")
			if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port+1), time.Second); err == nil {
				conn.Close()
				t.Errorf("something listens on port %d: Vault's cluster listener (disable_clustering not applied?)", port+1)
			}
		})
	}
}
