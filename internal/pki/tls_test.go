package pki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/paths"
)

// serve answers "ok" over TLS on 127.0.0.1 with the certificate files Vault uses.
func serve(t *testing.T, p paths.Paths) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.VaultCert, p.VaultKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	return l.Addr().String()
}

func TestAClientTrustingOnlyTheCACompletesAHandshake(t *testing.T) {
	for _, intermediate := range []bool{false, true} {
		p := paths.New(t.TempDir())
		if err := mustIssue(t, Options{Validity: time.Hour, Intermediate: intermediate, ExtraNames: []string{"vault.local"}}).Write(p); err != nil {
			t.Fatal(err)
		}
		addr := serve(t, p)
		pool, err := LoadCAPool(p.CACert)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"127.0.0.1", "::1", "localhost", "vault.local"} {
			c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: name})
			if err != nil {
				t.Errorf("intermediate=%v, server name %s: %v", intermediate, name, err)
				continue
			}
			got, _ := io.ReadAll(c)
			c.Close()
			if string(got) != "ok" {
				t.Errorf("read %q", got)
			}
		}
	}
}

func TestAClientTrustingAnotherBootsCARefusesTheServer(t *testing.T) {
	p := paths.New(t.TempDir())
	if err := mustIssue(t, Options{Validity: time.Hour}).Write(p); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, p)
	other := x509.NewCertPool()
	other.AddCert(mustIssue(t, Options{Validity: time.Hour}).CACert)
	if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: other, ServerName: "localhost"}); err == nil {
		c.Close()
		t.Error("the handshake succeeded")
	}
}
