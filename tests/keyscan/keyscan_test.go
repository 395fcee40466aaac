package keyscan

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFindPrivateKeysMatching(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	sec1, _ := x509.MarshalECPrivateKey(key)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(other)
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: selfSigned(t, key)})
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	root := t.TempDir()
	files := map[string][]byte{
		"etc/pkcs8.pem":      pemOf("PRIVATE KEY", pkcs8),
		"etc/sec1.pem":       pemOf("EC PRIVATE KEY", sec1),
		"etc/bundle.pem":     append(append(cert, pemOf("PRIVATE KEY", otherDER)...), pemOf("PRIVATE KEY", pkcs8)...),
		"var/key.der":        pkcs8,
		"var/other.pem":      pemOf("PRIVATE KEY", otherDER),
		"var/not-a-key.pem":  cert,
		"var/big.pem":        append(pemOf("PRIVATE KEY", pkcs8), make([]byte, maxScanFileSize)...),
		"tmp/deep/a/b/c.key": pemOf("PRIVATE KEY", pkcs8),
	}
	for name, data := range files {
		path := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink(filepath.Join(root, "etc/pkcs8.pem"), filepath.Join(root, "var/link.pem"))
	if err := syscall.Mkfifo(filepath.Join(root, "var/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "root-link")
	os.Symlink(root, link)

	rel := func(base string, paths []string) []string {
		var out []string
		for _, p := range paths {
			r, _ := filepath.Rel(base, p)
			out = append(out, r)
		}
		slices.Sort(out)
		return out
	}
	want := []string{"etc/bundle.pem", "etc/pkcs8.pem", "etc/sec1.pem", "tmp/deep/a/b/c.key", "var/key.der"}
	cases := []struct {
		name string
		root string
	}{
		// PKCS#8 and SEC 1, PEM or whole-file DER, alone or among other blocks,
		// at any depth; not another key, not a certificate, not a file over 1 MiB,
		// not a symbolic link (its target is reported), and a FIFO does not block.
		{"a directory", root},
		// /proc/PID/root is a symbolic link: the tree it points to is walked.
		{"a symbolic link to a directory", link},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			found, err := FindPrivateKeysMatching(tc.root, key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if got := rel(tc.root, found); !slices.Equal(got, want) {
				t.Errorf("found %v, want %v", got, want)
			}
		})
	}
}

func TestFindPrivateKeysMatchingRefusesWhatItCannotDo(t *testing.T) {
	if _, err := FindPrivateKeysMatching(filepath.Join(t.TempDir(), "absent"), ed25519.PublicKey(make([]byte, 32))); err == nil || !strings.Contains(err.Error(), "cannot scan") {
		t.Errorf("a missing root: err = %v", err)
	}
	// A public key that cannot be compared would make every scan pass.
	if _, err := FindPrivateKeysMatching(t.TempDir(), struct{}{}); err == nil {
		t.Error("an incomparable public key was accepted")
	}
}

func TestKernelPseudoFileSystemsAreNotRead(t *testing.T) {
	for dir, want := range map[string]bool{"/proc": true, "/sys": true, t.TempDir(): false} {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if got := isPseudoFS(dir); got != want {
			t.Errorf("isPseudoFS(%s) = %v, want %v", dir, got, want)
		}
	}
}

// selfSigned returns the DER of a certificate for key: a PEM block that holds
// key's public key and no private key.
func selfSigned(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "keyscan test"},
		NotBefore:    time.Now(),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
