package tokenclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testCA{c, key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// leaf issues a certificate of ca naming cn, dns and uris; its key is ca's
// own (a mismatched pair) when wrongKey.
func (ca testCA) leaf(t *testing.T, cn string, dns []string, uris []string, wrongKey bool) *Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var us []*url.URL
	for _, u := range uris {
		p, _ := url.Parse(u)
		us = append(us, p)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, DNSNames: dns, URIs: us,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if wrongKey {
		key = ca.key
	}
	pk, _ := x509.MarshalPKCS8PrivateKey(key)
	return &Certificate{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		PrivateKey:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})),
		CA:          ca.pem, IssuePath: "service-pki/issue/" + cn,
	}
}

func TestACertificateIsAcceptedOnlyIfItIsTheServicesOwnFromTheTrustedCA(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	id := []string{"spiffe://plant7.example/orders"}
	cases := []struct {
		name    string
		cert    *Certificate
		trusted string
		ok      bool
	}{
		{"the service's own from the CA", ca.leaf(t, "orders", []string{"orders"}, id, false), ca.pem, true},
		{"from another CA", other.leaf(t, "orders", []string{"orders"}, id, false), ca.pem, false},
		{"another service's", ca.leaf(t, "billing", []string{"billing"}, []string{"spiffe://plant7.example/billing"}, false), ca.pem, false},
		{"its names but another's SPIFFE ID", ca.leaf(t, "orders", []string{"orders"}, []string{"spiffe://plant7.example/billing"}, false), ca.pem, false},
		{"a SPIFFE ID with a deeper path", ca.leaf(t, "orders", []string{"orders"}, []string{"spiffe://plant7.example/x/orders"}, false), ca.pem, false},
		{"two URI SANs", ca.leaf(t, "orders", []string{"orders"}, append(id, "spiffe://plant7.example/billing"), false), ca.pem, false},
		{"no URI SAN", ca.leaf(t, "orders", []string{"orders"}, nil, false), ca.pem, false},
		{"another DNS SAN too", ca.leaf(t, "orders", []string{"orders", "localhost"}, id, false), ca.pem, false},
		{"a key that is not the certificate's", ca.leaf(t, "orders", []string{"orders"}, id, true), ca.pem, false},
		{"a CA that does not parse", ca.leaf(t, "orders", []string{"orders"}, id, false), "junk", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cert.check("orders", tc.trusted)
			if (err == nil) != tc.ok {
				t.Fatalf("check: %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadCertificate) {
				t.Errorf("error %v is not ErrBadCertificate", err)
			}
		})
	}
	huge := ca.leaf(t, "orders", []string{"orders"}, id, false)
	huge.CA = strings.Repeat("x", MaxCertificateSize+1)
	if err := huge.check("orders", ca.pem); !errors.Is(err, ErrBadCertificate) {
		t.Errorf("an oversized field: %v", err)
	}
}

func TestAnIssuePathIsTheServicesOwnOnAMount(t *testing.T) {
	for path, ok := range map[string]bool{
		"service-pki/issue/orders": true, "service-pki/issue/billing": false, "sys/issue/orders/../x": false,
		"../service-pki/issue/orders": false, "a/b/issue/orders": false, "service-pki/sign/orders": false,
	} {
		c := &Certificate{IssuePath: path}
		mount, err := c.mount("orders")
		if (err == nil) != ok || ok && mount != "service-pki" {
			t.Errorf("%q: mount %q, %v; want ok %v", path, mount, err, ok)
		}
	}
}

func TestTheKeyPairFileHoldsTheCertificateThenItsKey(t *testing.T) {
	c := newTestCA(t).leaf(t, "orders", []string{"orders"}, []string{"spiffe://plant7.example/orders"}, false)
	pair := string(c.KeyPairPEM())
	if i, j := strings.Index(pair, "BEGIN CERTIFICATE"), strings.Index(pair, "BEGIN PRIVATE KEY"); i < 0 || j < i {
		t.Fatalf("pair file:\n%s", pair)
	}
}
