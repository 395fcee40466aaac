// Package pki makes the per-boot PKI: a new root CA (ECDSA P-384), optionally an
// issuing CA, and the Vault listener's certificate, at every boot, in tmpfs.
//
// The CA and issuing CA private keys are never serialised: they exist only in the
// memory of this call, in a oneshot process that exits right after. There is
// nothing to shred because nothing touches a filesystem (threat k1/l1 of the
// threat model: "secure deletion of CA private key after PKI generation" is
// replaced by never writing it). No one can issue another certificate this boot
// chains to; the next boot makes a new CA.
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
	"os"
	"slices"
	"time"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
)

// backdate covers small clock differences between the signer and a verifier.
const backdate = 5 * time.Minute

// Options of one PKI.
type Options struct {
	Validity     time.Duration
	Intermediate bool
	ExtraNames   []string // DNS names or IP addresses for the Vault certificate
	Now          func() time.Time
}

// Bundle is what a boot's PKI leaves behind: certificates and the leaf key only.
type Bundle struct {
	CACert           *x509.Certificate
	IntermediateCert *x509.Certificate // nil without an intermediate
	LeafCert         *x509.Certificate
	LeafKey          *ecdsa.PrivateKey
}

// Issue makes a new PKI. The CA keys die with this call.
func Issue(o Options) (*Bundle, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	notBefore := now().Add(-backdate)
	notAfter := notBefore.Add(o.Validity + backdate)
	id := make([]byte, 4)
	rand.Read(id)

	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	maxPath := 0
	if o.Intermediate {
		maxPath = 1
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "edgeseal per-boot CA " + hex.EncodeToString(id)},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPath,
		MaxPathLenZero:        maxPath == 0,
	}
	ca, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("cannot make the per-boot CA: %w", err)
	}
	b := &Bundle{CACert: ca}
	issuer, issuerKey := ca, caKey
	if o.Intermediate {
		intKey, err := newKey()
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			Subject:               pkix.Name{CommonName: "edgeseal per-boot issuing CA " + hex.EncodeToString(id)},
			NotBefore:             notBefore,
			NotAfter:              notAfter,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}
		if b.IntermediateCert, err = sign(tmpl, ca, &intKey.PublicKey, caKey); err != nil {
			return nil, fmt.Errorf("cannot make the issuing CA: %w", err)
		}
		issuer, issuerKey = b.IntermediateCert, intKey
	}
	leafKey, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "vault"},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, n := range o.ExtraNames {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if !slices.Contains(tmpl.DNSNames, n) {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if b.LeafCert, err = sign(tmpl, issuer, &leafKey.PublicKey, issuerKey); err != nil {
		return nil, fmt.Errorf("cannot make the Vault certificate: %w", err)
	}
	b.LeafKey = leafKey
	return b, nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cannot generate an ECDSA P-384 key: %w", err)
	}
	return k, nil
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Fingerprint is the SHA-256 of a certificate, for logs.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:8])
}

func certPEM(cs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cs {
		if c != nil {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
	}
	return out
}

// Write puts the bundle in p.PKIDir: ca.crt (0644), vault.crt (leaf then issuing
// CA: the chain a server sends, 0644) and vault.key (PKCS#8, 0600), atomically.
func (b *Bundle) Write(p paths.Paths) error {
	if err := os.MkdirAll(p.PKIDir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", p.PKIDir, err)
	}
	if err := os.Chmod(p.PKIDir, 0o755); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", p.PKIDir, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(b.LeafKey)
	if err != nil {
		return fmt.Errorf("cannot encode the Vault key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	defer clear(keyPEM)
	// The key first: a certificate without its key is useless, the reverse harmless.
	if err := fsutil.WriteFileAtomic(p.VaultKey, keyPEM, 0o600, fsutil.Self); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(p.VaultCert, certPEM(b.LeafCert, b.IntermediateCert), 0o644, fsutil.Self); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(p.CACert, certPEM(b.CACert), 0o644, fsutil.Self)
}

// LoadCAPool reads the per-boot CA certificate that clients trust.
func LoadCAPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the per-boot CA certificate %s (has edgeseal-pki.service run this boot?): %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("cannot use the per-boot CA certificate %s: no PEM certificate in it", path)
	}
	return pool, nil
}
