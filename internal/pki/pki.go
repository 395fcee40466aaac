// Package pki makes edgeseal's per-boot PKI: at every boot, a new root CA, an
// optional issuing (intermediate) CA and the certificate of the local Vault
// server's TLS listener. Clients verify Vault against this boot's CA certificate
// only, so a certificate from an earlier boot, or a key stolen in one, is worth
// nothing after the next reboot.
//
// # Why the CA keys are never written
//
// Threats k1 and l1 of the threat model are the CA and issuing CA private keys
// (assets S-8, S-9) read at rest by file system inspection. EdgeX's mitigation is
// to delete the CA key securely after generating the PKI; shredding is unreliable
// on flash, journalled and copy-on-write file systems, and in swapped tmpfs.
// edgeseal never serialises the CA keys at all: they exist only as values in the
// memory of one Issue call and are neither returned nor written. There is nothing
// to shred because nothing ever touches a file system. The cost is deliberate:
// after Issue returns nobody, root included, can sign another certificate that
// chains to this boot's CA; the next boot makes a new one.
//
// The tests prove it on a running device with tests/keyscan: no file anywhere
// holds a private key matching the CA certificate.
//
// # The CA keys in the TPM
//
// With pki.ca_key tpm (Options.NewCAKey), the CA keys are not in this process
// either: each is made in the TPM (a null-hierarchy primary, not duplicable:
// tpm.CAKey), signs there, and is flushed once it has signed. Root reading
// this process's memory then finds no CA key; what is left is root using the
// TPM key during the step's run (or saving its context, which the TPM refuses
// to load after the reset of the next boot). The keys are ECDSA P-256 (every
// TPM 2.0 of the PC Client profile has it; P-384 is optional) where the
// in-memory keys are P-384.
//
// # What remains
//
// The CA keys live in the heap of the edgeseal-pki process, a oneshot that exits
// within a second. Go offers no way to wipe an ecdsa.PrivateKey reliably (its
// scalar is copied into big.Int and internal forms), so this package does not
// pretend to; when the process exits the kernel frees its pages and zeroes them
// before any other process gets them. The command makes itself non-dumpable (no
// core dump, no ptrace by other processes of its user). What is left is root
// reading that process's memory during its short life, and swap if the device
// swaps in that window (the unit can forbid it with MemorySwapMax=0).
//
// The Vault leaf key (asset S-10, threat m1) must be written: Vault reads its
// TLS key from a file, unencrypted. Bundle.Write puts it in tmpfs
// (/run/edgeseal/pki/vault.key, 0600, owned by root), never on persistent
// storage; Vault gets its own copy through systemd's LoadCredential=.
//
// # Files
//
//	ca.crt      the CA certificate every client verifies Vault with (0644)
//	vault.crt   Vault's chain: leaf, then the issuing CA if any (0644)
//	vault.key   Vault's key, PKCS#8 PEM (0600)
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// clockSkew backdates every certificate, so a verifier whose clock is a little
// behind the signer's still accepts it.
const clockSkew = 5 * time.Minute

// Options describe one boot's PKI.
type Options struct {
	// Validity of the CA, issuing CA and leaf certificates, from now.
	Validity time.Duration
	// Intermediate puts an issuing CA between the root CA and the leaf.
	Intermediate bool
	// ExtraNames are DNS names or IP addresses the Vault certificate is valid
	// for, besides 127.0.0.1, ::1 and localhost.
	ExtraNames []string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NewCAKey makes each CA key (the root's, and the issuing CA's if any)
	// somewhere other than this process's memory: a TPM's (pki.ca_key tpm,
	// tpm.NewCAKey). Each is closed once it has signed what it signs. nil:
	// the CA keys are made in this process's memory.
	NewCAKey func() (CAKey, error)
}

// CAKey is a CA's signing key kept outside the process (in a TPM); Close makes
// it unusable for good.
type CAKey interface {
	crypto.Signer
	Close() error
}

// memoryCAKey is a CA key in this process's memory, garbage after Issue.
type memoryCAKey struct{ *ecdsa.PrivateKey }

func (memoryCAKey) Close() error { return nil }

// newCAKey makes one CA key, as opts say.
func (opts Options) newCAKey() (CAKey, error) {
	if opts.NewCAKey != nil {
		return opts.NewCAKey()
	}
	k, err := newKey()
	if err != nil {
		return nil, err
	}
	return memoryCAKey{k}, nil
}

// Bundle is what a boot's PKI leaves behind: certificates and the leaf key. It
// has no field for a CA private key, by design.
type Bundle struct {
	CACert           *x509.Certificate
	IntermediateCert *x509.Certificate // nil without an issuing CA
	LeafCert         *x509.Certificate
	LeafKey          *ecdsa.PrivateKey

	CACertPEM           []byte
	IntermediateCertPEM []byte // nil without an issuing CA
	LeafCertPEM         []byte // the leaf certificate alone
	LeafKeyPEM          []byte // PKCS#8 "PRIVATE KEY"
}

// ChainPEM is the chain a TLS server sends: the leaf, then the issuing CA if
// any. It is what vault.crt holds.
func (b *Bundle) ChainPEM() []byte {
	return append(append([]byte{}, b.LeafCertPEM...), b.IntermediateCertPEM...)
}

// Issue makes a new PKI. The CA (and issuing CA) private keys are local to this
// call: they sign, then become garbage (or, kept outside the process, are
// closed before it returns: a key that cannot be closed fails the call).
func Issue(opts Options) (b *Bundle, err error) {
	if opts.Validity <= 0 {
		return nil, fmt.Errorf("cannot issue the per-boot PKI: validity %v is not positive", opts.Validity)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	t := now()
	life := lifetime{notBefore: t.Add(-clockSkew), notAfter: t.Add(opts.Validity)}
	names, err := leafNames(opts.ExtraNames)
	if err != nil {
		return nil, err
	}
	id := shortID()

	caKey, err := opts.newCAKey()
	if err != nil {
		return nil, err
	}
	defer closeKey(caKey, &b, &err)
	maxPathLen := 0
	if opts.Intermediate {
		maxPathLen = 1
	}
	caTmpl := caTemplate(rootCAName+id, life, maxPathLen)
	ca, err := sign(caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("cannot sign the per-boot CA certificate: %w", err)
	}
	b = &Bundle{CACert: ca}

	issuer, issuerKey := ca, caKey
	if opts.Intermediate {
		var intKey CAKey
		if intKey, err = opts.newCAKey(); err != nil {
			return nil, err
		}
		defer closeKey(intKey, &b, &err)
		if b.IntermediateCert, err = sign(caTemplate(issuingCAName+id, life, 0), ca, intKey.Public(), caKey); err != nil {
			return nil, fmt.Errorf("cannot sign the issuing CA certificate: %w", err)
		}
		issuer, issuerKey = b.IntermediateCert, intKey
	}

	leafKey, err := newKey()
	if err != nil {
		return nil, err
	}
	if b.LeafCert, err = sign(leafTemplate(life, names), issuer, &leafKey.PublicKey, issuerKey); err != nil {
		return nil, fmt.Errorf("cannot sign the Vault certificate: %w", err)
	}
	b.LeafKey = leafKey
	if err := b.encode(); err != nil {
		return nil, err
	}
	if err := b.verify(t); err != nil {
		return nil, fmt.Errorf("internal error: the issued chain does not verify: %w", err)
	}
	return b, nil
}

// closeKey closes a CA key when Issue returns; if it cannot, Issue fails.
func closeKey(k CAKey, b **Bundle, err *error) {
	if cerr := k.Close(); cerr != nil && *err == nil {
		*b, *err = nil, fmt.Errorf("cannot finish the per-boot PKI: %w", cerr)
	}
}

// verify checks the chain for every name of the leaf, as a client would.
func (b *Bundle) verify(at time.Time) error {
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	opts.Roots.AddCert(b.CACert)
	if b.IntermediateCert != nil {
		opts.Intermediates.AddCert(b.IntermediateCert)
	}
	var errs []error
	for _, name := range b.Names() {
		opts.DNSName = name
		if _, err := b.LeafCert.Verify(opts); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Names are the DNS names, then the IP addresses, the Vault certificate is valid
// for.
func (b *Bundle) Names() []string {
	out := append([]string{}, b.LeafCert.DNSNames...)
	for _, ip := range b.LeafCert.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}
