package refctl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fsutil"
)

// DefaultHosts are the names the server certificate is for unless init is
// told others.
var DefaultHosts = []string{"127.0.0.1", "localhost"}

var dnsRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// Init makes a controller in dir: its CA, its server certificate for hosts
// (IP addresses or DNS names; nil for DefaultHosts), the key that signs key
// bundles, and an empty state. A directory that holds a controller already is
// ErrInitialised: its keys are never overwritten.
func Init(dir string, hosts []string) error {
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	var ips []net.IP
	var names []string
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if len(h) <= 253 && dnsRE.MatchString(strings.ToLower(h)) {
			names = append(names, strings.ToLower(h))
		} else {
			return fmt.Errorf("cannot initialise the controller: %w: host %q is neither an IP address nor a DNS name", ErrInvalid, h)
		}
	}
	p := newPaths(dir)
	if _, err := os.Stat(p.state); err == nil {
		return fmt.Errorf("cannot initialise the controller in %s: %w", dir, ErrInitialised)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot initialise the controller: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("cannot initialise the controller: %w", err)
	}
	now := time.Now()
	caKey, caCert, err := makeCA(now)
	if err != nil {
		return fmt.Errorf("cannot make the controller's CA: %w", err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("cannot make the server key: %w", err)
	}
	srvDER, err := issue(caKey, caCert, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "edgeseal reference controller"},
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(serverCertLife),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    names,
		IPAddresses: ips,
	}, &srvKey.PublicKey)
	if err != nil {
		return fmt.Errorf("cannot make the server certificate: %w", err)
	}
	signer, err := ctlproto.NewSigningKey()
	if err != nil {
		return fmt.Errorf("cannot make the bundle signing key: %w", err)
	}
	files := []struct {
		path string
		data func() ([]byte, error)
		mode os.FileMode
	}{
		{p.caKey, func() ([]byte, error) { return keyPEM(caKey) }, 0o600},
		{p.caCert, func() ([]byte, error) { return certPEM(caCert.Raw), nil }, 0o644},
		{p.serverKey, func() ([]byte, error) { return keyPEM(srvKey) }, 0o600},
		{p.serverCert, func() ([]byte, error) { return certPEM(srvDER), nil }, 0o644},
		{p.signingKey, func() ([]byte, error) { return keyPEM(signer) }, 0o600},
		// Last: state.json is what says the directory is a controller.
		{p.state, newState().marshal, 0o600},
	}
	for _, f := range files {
		data, err := f.data()
		if err != nil {
			return fmt.Errorf("cannot initialise the controller: %w", err)
		}
		if err := fsutil.WriteFileAtomic(f.path, data, f.mode, fsutil.Self); err != nil {
			return fmt.Errorf("cannot initialise the controller: %w", err)
		}
	}
	return nil
}

func makeCA(now time.Time) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "edgeseal reference controller CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caCertLife),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

// issue signs tmpl for pub with the CA, with a fresh random serial.
func issue(caKey *ecdsa.PrivateKey, ca *x509.Certificate, tmpl *x509.Certificate, pub *ecdsa.PublicKey) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	return x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
}

// issueClientCert certifies a device's TLS client key: CN = its name, for
// client authentication only. Validity is by the system clock, which the TLS
// stack checks it against.
func issueClientCert(caKey *ecdsa.PrivateKey, ca *x509.Certificate, name string, pub *ecdsa.PublicKey) (*x509.Certificate, error) {
	now := time.Now()
	der, err := issue(caKey, ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(clientCertLife),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, pub)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: not an ECDSA P-256 key", path)
	}
	return ek, nil
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

// keys are what serving needs from the directory, read once.
type keys struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	signer *ecdsa.PrivateKey
	server []byte // PEM certificate
	srvKey []byte // PEM key
}

func (p paths) readKeys() (*keys, error) {
	if _, err := os.Stat(p.state); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s has no state.json: %w", p.dir, ErrNotInitialised)
	}
	var k keys
	var err error
	if k.ca, err = readCert(p.caCert); err != nil {
		return nil, fmt.Errorf("cannot read the CA certificate: %w", err)
	}
	if k.caKey, err = readKey(p.caKey); err != nil {
		return nil, fmt.Errorf("cannot read the CA key: %w", err)
	}
	if k.signer, err = readKey(p.signingKey); err != nil {
		return nil, fmt.Errorf("cannot read the bundle signing key: %w", err)
	}
	if k.server, err = os.ReadFile(p.serverCert); err != nil {
		return nil, fmt.Errorf("cannot read the server certificate: %w", err)
	}
	if k.srvKey, err = os.ReadFile(p.serverKey); err != nil {
		return nil, fmt.Errorf("cannot read the server key: %w", err)
	}
	return &k, nil
}
