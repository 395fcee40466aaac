package controller

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
)

// testCA is a certificate authority for tests: the controller's, or an
// impostor's.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	PEM  []byte
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(100 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// issue certifies pub for cn: a server certificate for 127.0.0.1 and
// localhost, or a client certificate.
func (ca *testCA) issue(t testing.TB, cn string, pub *ecdsa.PublicKey, server bool) []byte {
	t.Helper()
	sn, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// serverTLS is a TLS server config with a certificate from ca that asks for
// a client certificate from clients (nil: none asked).
func (ca *testCA) serverTLS(t testing.TB, clients *testCA) *tls.Config {
	t.Helper()
	key := newKey(t)
	der, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair(ca.issue(t, "controller", &key.PublicKey, true),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if clients != nil {
		pool := x509.NewCertPool()
		pool.AddCert(clients.cert)
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c
}

// enrolled is a device enrolled with a controller at url whose TLS
// certificate is from ca: its enrolment and client key written under a fresh
// root, and the controller's signing key.
type enrolled struct {
	p      paths.Paths
	e      *Enrolment
	signer *ecdsa.PrivateKey
}

func enrolTestDevice(t testing.TB, url string, ca *testCA, deviceID string) *enrolled {
	t.Helper()
	p := paths.New(t.TempDir())
	signer := newKey(t)
	pubPEM, err := ctlproto.MarshalPublicKey(&signer.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	client := newKey(t)
	e := &Enrolment{URLs: []string{url}, DeviceID: deviceID, CA: string(ca.PEM), SigningKey: pubPEM,
		ClientCert: string(ca.issue(t, deviceID, &client.PublicKey, false)), Enrolled: time.Now().UTC().Truncate(time.Second)}
	if err := writeEnrolment(p, e); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(client)
	if err := fsutil.WriteFileAtomic(p.ClientKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600, fsutil.Self); err != nil {
		t.Fatal(err)
	}
	return &enrolled{p: p, e: e, signer: signer}
}

func writeFile(t testing.TB, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
