//go:build integration

package testbed

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
)

// VaultServer is a real Vault-compatible server (OpenBao or HashiCorp Vault) on
// loopback with file storage and TLS from a per-boot PKI issued by edgeseal's
// own pki package, and its config rendered for it, as edgeseal-pki.service does.
type VaultServer struct {
	Server Server      // which server it is
	Addr   string      // the TCP listener, https://127.0.0.1:PORT
	Admin  string      // the admin socket, unix:///PATH
	Paths  paths.Paths // where its PKI and config are
	Pool   *x509.CertPool
	CAFile string

	t      testing.TB
	config string
	proc   *Process
}

// StartVault starts the default server (DefaultServer) as StartServer does.
func StartVault(t testing.TB, cfg *config.Config) *VaultServer {
	t.Helper()
	srv, err := DefaultServer()
	if err != nil {
		t.Fatal(err)
	}
	return StartServer(t, srv, cfg)
}

// StartServer starts srv with cfg's storage path on a free loopback port, which
// it writes to cfg.Vault.Listen so clients find it.
func StartServer(t testing.TB, srv Server, cfg *config.Config) *VaultServer {
	t.Helper()
	v := &cfg.Vault
	v.Listen = fmt.Sprintf("127.0.0.1:%d", FreeLoopbackPort(t))
	p := paths.New(t.TempDir())
	b, err := pki.Issue(pki.Options{Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(p); err != nil {
		t.Fatal(err)
	}
	p.VaultAdmin = ShortSocketPath(t, "admin.sock")
	data, err := vaultconf.Render(cfg.Vault, srv.Kind, p.VaultCert, p.VaultKey, p.VaultAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if err := vaultconf.Write(p, data, true); err != nil {
		t.Fatal(err)
	}
	pool, err := pki.LoadCAPool(p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	s := &VaultServer{Server: srv, Addr: "https://" + v.Listen, Admin: "unix://" + p.VaultAdmin, Paths: p, Pool: pool, CAFile: p.CACert, t: t, config: p.VaultConfDir}
	s.Start(t)
	return s
}

// Start starts the server process and waits until its API answers.
func (s *VaultServer) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(s.Server.Bin, "server", "-config="+s.config)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	s.proc = StartProcess(t, s.Server.Name, cmd)
	c := s.AdminClient(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.Sys().InitStatus(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer at %s within 30s:\n%s", s.Server, s.Addr, s.proc.LogTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL, as a crash would.
func (s *VaultServer) Kill(t testing.TB) {
	t.Helper()
	s.proc.Kill(t)
}

// Restart kills and starts the server: it comes back sealed. It implements
// secretstore.VaultService.
func (s *VaultServer) Restart(ctx context.Context) error {
	if s.proc == nil {
		return errors.New("vault was never started")
	}
	s.proc.Kill(s.t)
	s.Start(s.t)
	return nil
}

// AdminClient is an unauthenticated client of the admin socket, as
// edgeseal-unseal has.
func (s *VaultServer) AdminClient(t testing.TB) *api.Client {
	t.Helper()
	c, err := vaultclient.New(s.Admin, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Client is an unauthenticated client verifying TLS against the server's CA.
func (s *VaultServer) Client(t testing.TB) *api.Client {
	t.Helper()
	c, err := vaultclient.New(s.Addr, s.Pool)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// RootAccessors lists the accessors of every root token in Vault, with c
// carrying a token that may list and look up accessors. A token that expired
// between the list and its lookup ("invalid accessor") is skipped; any other
// error fails the test: a token the test cannot see might be a root token.
func RootAccessors(t testing.TB, c *api.Client) []string {
	t.Helper()
	list, err := c.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range list.Data["keys"].([]any) {
		s, err := c.Auth().Token().LookupAccessor(k.(string))
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == 400 && slices.Contains(re.Errors, "invalid accessor") {
			continue
		}
		if err != nil {
			t.Fatalf("cannot look up accessor %s: %v", k, err)
		}
		if pols, _ := s.TokenPolicies(); slices.Contains(pols, "root") {
			out = append(out, k.(string))
		}
	}
	return out
}

// ShortSocketPath returns a path for a Unix socket named name in a new private
// directory (0700) under /tmp, removed when the test ends: a test's TempDir is
// often too long for a socket (108 bytes).
func ShortSocketPath(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "es-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, name)
}
