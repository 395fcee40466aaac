package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

const (
	// rootCAName and issuingCAName are followed by a short random id, so an
	// operator can tell one boot's CA from another's at a glance.
	rootCAName    = "edgeseal per-boot CA "
	issuingCAName = "edgeseal per-boot issuing CA "
	leafName      = "vault"
	// shortIDBytes of randomness in the CA names (8 hex digits).
	shortIDBytes = 4
	// serialBits of randomness in every serial number.
	serialBits = 128
	// maxDNSNameLen is the longest DNS name (RFC 1035).
	maxDNSNameLen = 253
)

// defaultDNSNames and defaultIPs are the names every Vault certificate has: the
// local clients' ways to reach a loopback listener.
var (
	defaultDNSNames = []string{"localhost"}
	defaultIPs      = []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
)

type lifetime struct{ notBefore, notAfter time.Time }

// subjectNames are the subject alternative names of the leaf.
type subjectNames struct {
	dns []string
	ips []net.IP
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cannot generate an ECDSA P-384 key: %w", err)
	}
	return k, nil
}

func shortID() string {
	id := make([]byte, shortIDBytes)
	rand.Read(id) // never fails since Go 1.24: it crashes the program instead
	return hex.EncodeToString(id)
}

// randomSerial is a positive serial number of serialBits random bits.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), serialBits)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("cannot make a serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// caTemplate is a CA that may have maxPathLen CAs below it.
func caTemplate(cn string, life lifetime, maxPathLen int) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             life.notBefore,
		NotAfter:              life.notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
}

func leafTemplate(life lifetime, names subjectNames) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: leafName},
		NotBefore:             life.notBefore,
		NotAfter:              life.notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names.dns,
		IPAddresses:           names.ips,
	}
}

// leafNames sorts the defaults and extra into DNS names and IP addresses, without
// repeats.
func leafNames(extra []string) (subjectNames, error) {
	n := subjectNames{dns: slices.Clone(defaultDNSNames), ips: slices.Clone(defaultIPs)}
	for _, name := range extra {
		if ip := net.ParseIP(name); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if !slices.ContainsFunc(n.ips, ip.Equal) {
				n.ips = append(n.ips, ip)
			}
			continue
		}
		if !plausibleDNSName(name) {
			return subjectNames{}, fmt.Errorf("cannot issue the Vault certificate for %q: it is neither an IP address nor a DNS name", name)
		}
		if !slices.ContainsFunc(n.dns, func(d string) bool { return strings.EqualFold(d, name) }) {
			n.dns = append(n.dns, name)
		}
	}
	return n, nil
}

// plausibleDNSName accepts dot-separated labels of letters, digits and hyphens
// (config validates names properly; this keeps garbage out of a certificate).
func plausibleDNSName(s string) bool {
	if s == "" || len(s) > maxDNSNameLen {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// sign makes the certificate tmpl for the subject's public key, signed by signer as parent.
func sign(tmpl, parent *x509.Certificate, subject crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, subject, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// encode fills the PEM forms of the bundle.
func (b *Bundle) encode() error {
	b.CACertPEM = certPEM(b.CACert)
	if b.IntermediateCert != nil {
		b.IntermediateCertPEM = certPEM(b.IntermediateCert)
	}
	b.LeafCertPEM = certPEM(b.LeafCert)
	der, err := x509.MarshalPKCS8PrivateKey(b.LeafKey)
	if err != nil {
		return fmt.Errorf("cannot encode the Vault key: %w", err)
	}
	b.LeafKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	return nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// Fingerprint is the SHA-256 of a certificate in hex, for logs: what
// `openssl x509 -noout -fingerprint -sha256` prints, without the colons.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
