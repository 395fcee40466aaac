package pki

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/paths"
)

func TestIssuedChainVerifiesForEveryName(t *testing.T) {
	for _, intermediate := range []bool{false, true} {
		b, err := Issue(Options{Validity: time.Hour, Intermediate: intermediate, ExtraNames: []string{"vault.local", "10.1.2.3"}})
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(b.CACert)
		inter := x509.NewCertPool()
		if intermediate {
			if b.IntermediateCert == nil {
				t.Fatal("no intermediate")
			}
			inter.AddCert(b.IntermediateCert)
		} else if b.IntermediateCert != nil {
			t.Fatal("an intermediate was not asked for")
		}
		for _, name := range []string{"127.0.0.1", "::1", "localhost", "vault.local", "10.1.2.3"} {
			_, err := b.LeafCert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if err != nil {
				t.Errorf("intermediate=%v: %s: %v", intermediate, name, err)
			}
		}
		if _, err := b.LeafCert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "other.example"}); err == nil {
			t.Error("the certificate is valid for a name it was not issued for")
		}
	}
}

func TestEveryBootHasANewCA(t *testing.T) {
	a, _ := Issue(Options{Validity: time.Hour})
	b, _ := Issue(Options{Validity: time.Hour})
	if a.CACert.Equal(b.CACert) || a.CACert.PublicKey.(*ecdsa.PublicKey).Equal(b.CACert.PublicKey) {
		t.Error("two boots share a CA")
	}
	if a.CACert.SerialNumber.Cmp(b.CACert.SerialNumber) == 0 {
		t.Error("two CAs share a serial")
	}
}

func TestWriteLeavesOnlyTheLeafKeyWithTightModes(t *testing.T) {
	p := paths.New(t.TempDir())
	b, err := Issue(Options{Validity: time.Hour, Intermediate: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(p); err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{p.CACert: 0o644, p.VaultCert: 0o644, p.VaultKey: 0o600, p.PKIDir: 0o755}
	for f, want := range modes {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, mode %v, want %v", f, err, fi.Mode().Perm(), want)
		}
	}
	for _, pub := range []any{b.CACert.PublicKey, b.IntermediateCert.PublicKey} {
		found, err := FindPrivateKeysMatching(p.Root, pub)
		if err != nil || len(found) != 0 {
			t.Errorf("a CA private key was written: %v %v", found, err)
		}
	}
	found, err := FindPrivateKeysMatching(p.Root, b.LeafCert.PublicKey)
	if err != nil || len(found) != 1 || found[0] != p.VaultKey {
		t.Errorf("the leaf key: %v %v", found, err)
	}
	entries, _ := os.ReadDir(p.PKIDir)
	if len(entries) != 3 {
		t.Errorf("files in %s: %d, want 3 (no temporary files left)", p.PKIDir, len(entries))
	}
}

func TestAClientTrustingTheCACompletesATLSHandshake(t *testing.T) {
	p := paths.New(t.TempDir())
	b, _ := Issue(Options{Validity: time.Hour, Intermediate: true})
	if err := b.Write(p); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(p.VaultCert, p.VaultKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
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
	pool, err := LoadCAPool(p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	if got, _ := io.ReadAll(c); string(got) != "ok" {
		t.Errorf("read %q", got)
	}
	// Another boot's CA is not trusted.
	other, _ := Issue(Options{Validity: time.Hour})
	op := x509.NewCertPool()
	op.AddCert(other.CACert)
	if c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: op, ServerName: "localhost"}); err == nil {
		c.Close()
		t.Error("a client trusting another boot's CA accepted the server")
	}
}

func TestLoadCAPoolSaysWhatIsWrong(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadCAPool(filepath.Join(dir, "absent")); err == nil {
		t.Error("a missing CA file was accepted")
	}
	f := filepath.Join(dir, "junk")
	os.WriteFile(f, []byte("not pem"), 0o644)
	if _, err := LoadCAPool(f); err == nil {
		t.Error("a file without a certificate was accepted")
	}
}
