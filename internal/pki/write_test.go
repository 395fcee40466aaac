package pki

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/tests/keyscan"
)

// The unit runs with UMask=0077; the modes must not depend on it.
func TestWriteSetsModesWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	p := paths.New(t.TempDir())
	if err := mustIssue(t, Options{Validity: time.Hour, Intermediate: true}).Write(p); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		p.PKIDir:    0o755 | os.ModeDir,
		p.CACert:    0o644,
		p.VaultCert: 0o644,
		p.VaultKey:  0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
			t.Errorf("%s: owner %d, want the writer %d", path, uid, os.Geteuid())
		}
	}
}

func TestWriteLeavesNoPrivateKeyButVaults(t *testing.T) {
	p := paths.New(t.TempDir())
	b := mustIssue(t, Options{Validity: time.Hour, Intermediate: true})
	if err := b.Write(p); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(p.PKIDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		data, _ := os.ReadFile(filepath.Join(p.PKIDir, e.Name()))
		if e.Name() != "vault.key" && strings.Contains(string(data), "PRIVATE KEY") {
			t.Errorf("%s holds a private key", e.Name())
		}
	}
	if got := strings.Join(names, " "); got != "ca.crt vault.crt vault.key" {
		t.Errorf("files in %s: %s (temporary files left?)", p.PKIDir, got)
	}
	for what, pub := range map[string]any{"CA": b.CACert.PublicKey, "issuing CA": b.IntermediateCert.PublicKey} {
		found, err := keyscan.FindPrivateKeysMatching(p.Root, pub)
		if err != nil || len(found) != 0 {
			t.Errorf("the %s private key was written: %v %v", what, found, err)
		}
	}
	found, err := keyscan.FindPrivateKeysMatching(p.Root, b.LeafCert.PublicKey)
	if err != nil || len(found) != 1 || found[0] != p.VaultKey {
		t.Errorf("the Vault key is at %v (%v), want only %s", found, err, p.VaultKey)
	}
	data, _ := os.ReadFile(p.VaultKey)
	if blk, _ := pem.Decode(data); blk == nil || blk.Type != "PRIVATE KEY" {
		t.Errorf("vault.key is not a PKCS#8 PEM key")
	} else if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil || !k.(*ecdsa.PrivateKey).Equal(b.LeafKey) {
		t.Errorf("vault.key is not the Vault key: %v", err)
	}
	if _, err := tls.LoadX509KeyPair(p.VaultCert, p.VaultKey); err != nil {
		t.Errorf("vault.crt and vault.key do not pair: %v", err)
	}
}

func TestANewBootReplacesTheLastBootsFiles(t *testing.T) {
	p := paths.New(t.TempDir())
	for range 2 {
		b := mustIssue(t, Options{Validity: time.Hour})
		if err := b.Write(p); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p.CACert); string(got) != string(b.CACertPEM) {
			t.Fatal("ca.crt is not this boot's")
		}
		if got, _ := os.ReadFile(p.VaultKey); string(got) != string(b.LeafKeyPEM) {
			t.Fatal("vault.key is not this boot's")
		}
	}
}

func TestWriteSaysWhatItCannotCreate(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "run"), nil, 0o644) // a file where /run should be
	err := mustIssue(t, Options{Validity: time.Hour}).Write(paths.New(root))
	if err == nil || !strings.Contains(err.Error(), "cannot create "+filepath.Join(root, "run/edgeseal/pki")) {
		t.Errorf("err = %v", err)
	}
}

func TestLoadCAPool(t *testing.T) {
	p := paths.New(t.TempDir())
	b := mustIssue(t, Options{Validity: time.Hour})
	if err := b.Write(p); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(p.Root, "junk")
	os.WriteFile(junk, []byte("not pem"), 0o644)
	for _, tc := range []struct {
		name, path, says string
	}{
		{"this boot's CA is trusted", p.CACert, ""},
		{"a missing file names the file and the unit", filepath.Join(p.Root, "absent"), filepath.Join(p.Root, "absent") + " (edgeseal-pki.service may not have run this boot)"},
		{"a file without a certificate is refused", junk, junk + ": no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool, err := LoadCAPool(tc.path)
			if tc.says == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := b.LeafCert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
					t.Error(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want it to say %q", err, tc.says)
			}
		})
	}
}

// In the snap, consumer snaps pin this boot's CA from a copy in a directory
// shared read-only (the tokend-ca slot): the same certificate, readable by all.
func TestTheSnapSharesACopyOfTheCACertificate(t *testing.T) {
	data := t.TempDir()
	p := paths.Snap(data, "edgeseal")
	p.RunDir = t.TempDir()
	p.PKIDir = filepath.Join(p.RunDir, "pki")
	p.CACert, p.VaultCert, p.VaultKey = filepath.Join(p.PKIDir, "ca.crt"), filepath.Join(p.PKIDir, "vault.crt"), filepath.Join(p.PKIDir, "vault.key")
	b := mustIssue(t, Options{Validity: time.Hour})
	if err := b.Write(p); err != nil {
		t.Fatal(err)
	}
	if p.SharedCA != filepath.Join(data, "ca", "ca.crt") {
		t.Fatalf("shared CA at %s", p.SharedCA)
	}
	got, err := os.ReadFile(p.SharedCA)
	if err != nil || string(got) != string(b.CACertPEM) {
		t.Fatalf("shared CA: %v, same as this boot's %v", err, string(got) == string(b.CACertPEM))
	}
	if fi, _ := os.Stat(p.SharedCA); fi.Mode() != 0o644 {
		t.Errorf("shared CA mode %v, want 0644", fi.Mode())
	}
	t.Log("And outside the snap there is no copy")
	if paths.New("/").SharedCA != "" {
		t.Error("a device's layout names a shared CA")
	}
}
