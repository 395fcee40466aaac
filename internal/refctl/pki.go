package refctl

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
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
	p := newPaths(dir)
	if _, err := os.Stat(p.state); err == nil {
		return fmt.Errorf("cannot initialise the controller in %s: %w", dir, ErrInitialised)
	}
	id, err := makeIdentity(hosts)
	if err != nil {
		return fmt.Errorf("cannot initialise the controller: %w", err)
	}
	signer, err := ctlproto.NewSigningKey()
	if err != nil {
		return fmt.Errorf("cannot make the bundle signing key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot initialise the controller: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("cannot initialise the controller: %w", err)
	}
	files := []struct {
		path string
		data func() ([]byte, error)
		mode os.FileMode
	}{
		{p.caKey, func() ([]byte, error) { return []byte(id.CAKey), nil }, 0o600},
		{p.caCert, func() ([]byte, error) { return []byte(id.CACert), nil }, 0o644},
		{p.serverKey, func() ([]byte, error) { return []byte(id.ServerKey), nil }, 0o600},
		{p.serverCert, func() ([]byte, error) { return []byte(id.ServerCert), nil }, 0o644},
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

// identity is the controller's CA and server certificate, as PEM: what
// replicas share (the bundle signing key is apart: a file, or a transit key).
type identity struct {
	CACert     string `json:"ca_cert"`
	CAKey      string `json:"ca_key"`
	ServerCert string `json:"server_cert"`
	ServerKey  string `json:"server_key"`
}

// makeIdentity makes a CA and a server certificate for hosts (IP addresses
// or DNS names; nil for DefaultHosts).
func makeIdentity(hosts []string) (*identity, error) {
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
			return nil, fmt.Errorf("%w: host %q is neither an IP address nor a DNS name", ErrInvalid, h)
		}
	}
	now := time.Now()
	caKey, caCert, err := makeCA(now)
	if err != nil {
		return nil, fmt.Errorf("cannot make the controller's CA: %w", err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cannot make the server key: %w", err)
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
		return nil, fmt.Errorf("cannot make the server certificate: %w", err)
	}
	caPEM, err := keyPEM(caKey)
	if err != nil {
		return nil, err
	}
	srvPEM, err := keyPEM(srvKey)
	if err != nil {
		return nil, err
	}
	return &identity{CACert: string(certPEM(caCert.Raw)), CAKey: string(caPEM),
		ServerCert: string(certPEM(srvDER)), ServerKey: string(srvPEM)}, nil
}

// keys reads an identity into what serving needs, with signer.
func (id *identity) keys(signer crypto.Signer) (*keys, error) {
	k := &keys{signer: signer, server: []byte(id.ServerCert), srvKey: []byte(id.ServerKey)}
	var err error
	if k.ca, err = parseCert([]byte(id.CACert)); err != nil {
		return nil, fmt.Errorf("the CA certificate: %w", err)
	}
	if k.caKey, err = parseKey([]byte(id.CAKey)); err != nil {
		return nil, fmt.Errorf("the CA key: %w", err)
	}
	if _, err := tls.X509KeyPair(k.server, k.srvKey); err != nil {
		return nil, fmt.Errorf("the server certificate and key: %w", err)
	}
	return k, nil
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
	k, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 key")
	}
	return ek, nil
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := parseCert(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func parseCert(data []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// keys are what serving needs from the store, read once: the CA that
// certifies devices' client keys, the server's certificate and key, and the
// bundle signing key (in the directory, a file; with OpenBao, a transit key
// that never leaves it).
type keys struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	signer crypto.Signer // ECDSA P-256
	server []byte        // PEM certificate
	srvKey []byte        // PEM key
}

// signingPublic is the bundle signing key's public half.
func (k *keys) signingPublic() *ecdsa.PublicKey { return k.signer.Public().(*ecdsa.PublicKey) }

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
