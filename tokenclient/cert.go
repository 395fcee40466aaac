package tokenclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// Certificate is a service's TLS certificate from the device's service CA
// (service_tls in edgeseal's config): its identity is the URI SAN
// spiffe://<trust domain>/<service>, and the DNS SAN is the service's name.
// Peers verify it with CA and check the URI SAN of the service they expect.
type Certificate struct {
	// Certificate is the PEM certificate.
	Certificate string `json:"certificate"`
	// PrivateKey is its PEM (PKCS #8) private key. Never logged by this package.
	PrivateKey string `json:"private_key"`
	// CA is the PEM certificate of the service CA, which verifies every
	// service's certificate of this device.
	CA string `json:"ca"`
	// IssuePath is where the service renews it with its own token:
	// <mount>/issue/<service>.
	IssuePath string `json:"issue_path"`
}

// MaxCertificateSize bounds each PEM field of a Certificate.
const MaxCertificateSize = 8 << 10

// ErrBadCertificate: a certificate that is not the service's own from the
// service CA of the pinned Vault.
var ErrBadCertificate = errors.New("not a certificate of this service from the device's service CA")

// IssueCertificate has c's server issue service's certificate at path (the
// service's role, which decides every name and the lifetime), with uri as its
// URI SAN. c's token is the token provider's or the service's own.
func IssueCertificate(ctx context.Context, c *api.Client, path, service, uri string) (*Certificate, error) {
	sec, err := c.Logical().WriteWithContext(ctx, path, map[string]any{
		"common_name":        service,
		"uri_sans":           uri,
		"format":             "pem",
		"private_key_format": "pkcs8",
	})
	if err != nil {
		return nil, fmt.Errorf("cannot issue the certificate of service %s: %w", service, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("cannot issue the certificate of service %s: the server's answer is empty", service)
	}
	str := func(k string) string { s, _ := sec.Data[k].(string); return s }
	cert := &Certificate{Certificate: str("certificate"), PrivateKey: str("private_key"), CA: str("issuing_ca"), IssuePath: path}
	if cert.Certificate == "" || cert.PrivateKey == "" || cert.CA == "" {
		return nil, fmt.Errorf("cannot issue the certificate of service %s: the server's answer lacks the certificate, key or CA", service)
	}
	return cert, nil
}

// Leaf parses the certificate.
func (c *Certificate) Leaf() (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(c.Certificate))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: no PEM certificate", ErrBadCertificate)
	}
	return x509.ParseCertificate(b.Bytes)
}

// KeyPairPEM is the certificate followed by its private key: one file that
// crypto/tls.LoadX509KeyPair(f, f), nginx and others read as both, and that
// can be replaced atomically as a pair.
func (c *Certificate) KeyPairPEM() []byte {
	var b bytes.Buffer
	b.WriteString(strings.TrimSpace(c.Certificate) + "\n")
	b.WriteString(strings.TrimSpace(c.PrivateKey) + "\n")
	return b.Bytes()
}

// SPIFFEID is the certificate's URI SAN.
func (c *Certificate) SPIFFEID() (string, error) {
	leaf, err := c.Leaf()
	if err != nil {
		return "", err
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].Scheme != "spiffe" {
		return "", fmt.Errorf("%w: it has %d URI SANs, not one spiffe:// ID", ErrBadCertificate, len(leaf.URIs))
	}
	return leaf.URIs[0].String(), nil
}

// check verifies c is service's: its key is the certificate's, it chains to
// trustedCA (PEM) for client and server use, and it names service (DNS SAN
// and common name) and spiffe://<some host>/<service>.
func (c *Certificate) check(service, trustedCA string) error {
	if len(c.Certificate) > MaxCertificateSize || len(c.PrivateKey) > MaxCertificateSize || len(c.CA) > MaxCertificateSize {
		return fmt.Errorf("%w: a field is longer than %d bytes", ErrBadCertificate, MaxCertificateSize)
	}
	pair, err := tls.X509KeyPair([]byte(c.Certificate), []byte(c.PrivateKey))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadCertificate, err)
	}
	if _, ok := pair.PrivateKey.(crypto.Signer); !ok {
		return fmt.Errorf("%w: the key cannot sign", ErrBadCertificate)
	}
	leaf, err := c.Leaf()
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(trustedCA)) {
		return fmt.Errorf("%w: the service CA's certificate does not parse", ErrBadCertificate)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadCertificate, err)
	}
	id, err := c.SPIFFEID()
	if err != nil {
		return err
	}
	if !strings.HasSuffix(id, "/"+service) || strings.Count(id, "/") != 3 {
		return fmt.Errorf("%w: it names %s, not service %s", ErrBadCertificate, id, service)
	}
	if leaf.Subject.CommonName != service || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != service {
		return fmt.Errorf("%w: its names are %q %q, not service %s", ErrBadCertificate, leaf.Subject.CommonName, leaf.DNSNames, service)
	}
	return nil
}

// issuePathRE is what an answer's IssuePath may be: a mount, then /issue/.
var issuePathRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}/issue/[a-z0-9][a-z0-9_-]{0,63}$`)

// mount is the service CA's mount of an IssuePath.
func (c *Certificate) mount(service string) (string, error) {
	mount, ok := strings.CutSuffix(c.IssuePath, "/issue/"+service)
	if !issuePathRE.MatchString(c.IssuePath) || !ok {
		return "", fmt.Errorf("%w: %q is not the issue path of service %s", ErrBadCertificate, c.IssuePath, service)
	}
	return mount, nil
}

// verifyCertificate checks the provider's certificate against the service CA
// of the pinned Vault (never the CA the answer names), and keeps that CA.
func (t *Token) verifyCertificate(ctx context.Context, c *Certificate) error {
	mount, err := c.mount(t.Service)
	if err != nil {
		return err
	}
	vc, err := t.Client()
	if err != nil {
		return err
	}
	ca, err := vc.Logical().ReadWithContext(ctx, mount+"/cert/ca")
	if err != nil {
		return fmt.Errorf("cannot read the service CA at %s/cert/ca: %w", mount, err)
	}
	var pemCA string
	if ca != nil {
		pemCA, _ = ca.Data["certificate"].(string)
	}
	if pemCA == "" {
		return fmt.Errorf("%w: Vault has no service CA at %s/", ErrBadCertificate, mount)
	}
	if err := c.check(t.Service, pemCA); err != nil {
		return err
	}
	c.CA = pemCA
	return nil
}

// RenewCertificate issues the service a new certificate with its own token,
// at the pinned Vault, for the same identity; t.Certificate is not changed.
func (t *Token) RenewCertificate(ctx context.Context) (*Certificate, error) {
	if t.Certificate == nil {
		return nil, errors.New("cannot renew the certificate: the token was fetched without one")
	}
	id, err := t.Certificate.SPIFFEID()
	if err != nil {
		return nil, err
	}
	vc, err := t.Client()
	if err != nil {
		return nil, err
	}
	c, err := IssueCertificate(ctx, vc, t.Certificate.IssuePath, t.Service, id)
	if err != nil {
		return nil, err
	}
	if err := c.check(t.Service, c.CA); err != nil {
		return nil, err
	}
	return c, nil
}

// certRetry bounds the wait between two failed renewals of a certificate.
const certRetry = 30 * time.Second

// KeepCertificateRenewed renews the certificate at two thirds of its
// lifetime, calling onRenew with each new one (to write it out), until ctx
// ends (nil) or renewing is refused (the token was revoked: fetch a new one)
// or has failed until the certificate expired. onRenew's error ends it.
func (t *Token) KeepCertificateRenewed(ctx context.Context, onRenew func(*Certificate) error) error {
	for {
		leaf, err := t.Certificate.Leaf()
		if err != nil {
			return err
		}
		at := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Until(at)):
			}
			c, err := t.RenewCertificate(ctx)
			if err == nil {
				if err := onRenew(c); err != nil {
					return err
				}
				t.Certificate = c
				break
			}
			var re *api.ResponseError
			if errors.As(err, &re) && re.StatusCode == http.StatusForbidden || !time.Now().Before(leaf.NotAfter) {
				return err
			}
			at = time.Now().Add(min(certRetry, time.Until(leaf.NotAfter)/4+time.Second))
		}
	}
}
