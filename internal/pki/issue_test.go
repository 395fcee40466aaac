package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustIssue(t *testing.T, o Options) *Bundle {
	t.Helper()
	b, err := Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func verifyOptions(t *testing.T, b *Bundle) x509.VerifyOptions {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b.CACertPEM) {
		t.Fatal("CACertPEM holds no certificate")
	}
	inter := x509.NewCertPool()
	if b.IntermediateCert != nil {
		inter.AppendCertsFromPEM(b.IntermediateCertPEM)
	}
	return x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
}

func TestTheChainVerifiesForEveryName(t *testing.T) {
	extra := []string{"vault.local", "10.1.2.3", "fd00::7"}
	want := []string{"127.0.0.1", "::1", "localhost", "vault.local", "10.1.2.3", "fd00::7"}
	for _, tc := range []struct {
		name         string
		intermediate bool
	}{
		{"a root CA signs the leaf", false},
		{"an issuing CA between root and leaf", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustIssue(t, Options{Validity: time.Hour, Intermediate: tc.intermediate, ExtraNames: extra})
			if (b.IntermediateCert != nil) != tc.intermediate || (b.IntermediateCertPEM != nil) != tc.intermediate {
				t.Fatalf("intermediate = %v, want %v", b.IntermediateCert != nil, tc.intermediate)
			}
			opts := verifyOptions(t, b)
			for _, name := range want {
				opts.DNSName = name
				chains, err := b.LeafCert.Verify(opts)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				if wantLen := map[bool]int{false: 2, true: 3}[tc.intermediate]; len(chains[0]) != wantLen {
					t.Errorf("%s: chain of %d, want %d", name, len(chains[0]), wantLen)
				}
			}
			opts.DNSName = "other.example"
			if _, err := b.LeafCert.Verify(opts); err == nil {
				t.Error("the certificate is valid for a name it was not issued for")
			}
		})
	}
}

func TestTheCertificatesHaveTheProfileClientsExpect(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	b := mustIssue(t, Options{Validity: 24 * time.Hour, Intermediate: true, Now: func() time.Time { return now }})
	for _, c := range []*x509.Certificate{b.CACert, b.IntermediateCert, b.LeafCert} {
		if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P384() {
			t.Errorf("%s: key %T, want ECDSA P-384", c.Subject.CommonName, c.PublicKey)
		}
		if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > serialBits {
			t.Errorf("%s: serial %v is not a positive %d-bit number", c.Subject.CommonName, c.SerialNumber, serialBits)
		}
		if !c.NotBefore.Equal(now.Add(-5*time.Minute)) || !c.NotAfter.Equal(now.Add(24*time.Hour)) {
			t.Errorf("%s: valid %v to %v", c.Subject.CommonName, c.NotBefore, c.NotAfter)
		}
	}
	cases := []struct {
		what string
		ok   bool
	}{
		{"the CA is named per boot", strings.HasPrefix(b.CACert.Subject.CommonName, "edgeseal per-boot CA ") && len(b.CACert.Subject.CommonName) > len("edgeseal per-boot CA ")},
		{"the CA signs certificates and CRLs only", b.CACert.KeyUsage == x509.KeyUsageCertSign|x509.KeyUsageCRLSign},
		{"the CA allows one CA below it", b.CACert.IsCA && b.CACert.BasicConstraintsValid && b.CACert.MaxPathLen == 1},
		{"the issuing CA allows none", b.IntermediateCert.IsCA && b.IntermediateCert.MaxPathLen == 0 && b.IntermediateCert.MaxPathLenZero},
		{"the issuing CA is signed by the CA", b.IntermediateCert.CheckSignatureFrom(b.CACert) == nil},
		{"the leaf is Vault's", b.LeafCert.Subject.CommonName == "vault"},
		{"the leaf is not a CA", !b.LeafCert.IsCA && b.LeafCert.BasicConstraintsValid},
		{"the leaf serves TLS and nothing else", slices.Equal(b.LeafCert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})},
		{"the leaf key is the leaf certificate's", b.LeafKey.PublicKey.Equal(b.LeafCert.PublicKey)},
	}
	for _, c := range cases {
		if !c.ok {
			t.Error(c.what + ": no")
		}
	}
	single := mustIssue(t, Options{Validity: time.Hour})
	if single.CACert.MaxPathLen != 0 || !single.CACert.MaxPathLenZero {
		t.Error("without an issuing CA, the CA allows a CA below it")
	}
}

func TestExtraNamesAreSortedIntoIPsAndDNSNamesWithoutRepeats(t *testing.T) {
	b := mustIssue(t, Options{Validity: time.Hour, ExtraNames: []string{"vault.local", "10.1.2.3", "127.0.0.1", "LOCALHOST", "fd00::1", "::1"}})
	if want := []string{"localhost", "vault.local"}; !slices.Equal(b.LeafCert.DNSNames, want) {
		t.Errorf("DNS names %v, want %v", b.LeafCert.DNSNames, want)
	}
	var ips []string
	for _, ip := range b.LeafCert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1", "10.1.2.3", "fd00::1"}; !slices.Equal(ips, want) {
		t.Errorf("IP addresses %v, want %v", ips, want)
	}
	if want := []string{"localhost", "vault.local", "127.0.0.1", "::1", "10.1.2.3", "fd00::1"}; !slices.Equal(b.Names(), want) {
		t.Errorf("Names() = %v, want %v", b.Names(), want)
	}
}

func TestIssueRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		says string
	}{
		{"no validity", Options{}, "validity 0s is not positive"},
		{"a negative validity", Options{Validity: -time.Hour}, "not positive"},
		{"a name with a space", Options{Validity: time.Hour, ExtraNames: []string{"bad name"}}, `"bad name": it is neither`},
		{"an empty name", Options{Validity: time.Hour, ExtraNames: []string{""}}, "neither an IP"},
		{"a wildcard", Options{Validity: time.Hour, ExtraNames: []string{"*.local"}}, "neither an IP"},
		{"an IPv6 address with a zone", Options{Validity: time.Hour, ExtraNames: []string{"fe80::1%eth0"}}, "neither an IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Issue(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want it to say %q", err, tc.says)
			}
		})
	}
}

func TestEveryBootHasANewCA(t *testing.T) {
	a := mustIssue(t, Options{Validity: time.Hour})
	b := mustIssue(t, Options{Validity: time.Hour})
	if a.CACert.PublicKey.(*ecdsa.PublicKey).Equal(b.CACert.PublicKey) {
		t.Error("two boots share a CA key")
	}
	if a.CACert.SerialNumber.Cmp(b.CACert.SerialNumber) == 0 || a.CACert.Subject.CommonName == b.CACert.Subject.CommonName {
		t.Error("two boots' CAs share a serial or a name")
	}
	if a.LeafKey.Equal(b.LeafKey) {
		t.Error("two boots share a Vault key")
	}
	opts := verifyOptions(t, a)
	opts.DNSName = "localhost"
	if _, err := b.LeafCert.Verify(opts); err == nil {
		t.Error("one boot's CA accepts another boot's Vault certificate")
	}
}

// The Bundle type is where a CA key would leak out of Issue: it has exactly one
// private key, the leaf's, and one PEM private key, the same.
func TestTheBundleCarriesNoCAKey(t *testing.T) {
	b := mustIssue(t, Options{Validity: time.Hour, Intermediate: true})
	bt := reflect.TypeFor[Bundle]()
	for i := range bt.NumField() {
		f := bt.Field(i)
		switch f.Type {
		case reflect.TypeFor[*x509.Certificate](), reflect.TypeFor[[]byte]():
		case reflect.TypeFor[*ecdsa.PrivateKey]():
			if f.Name != "LeafKey" {
				t.Errorf("Bundle.%s is a private key", f.Name)
			}
		default:
			t.Errorf("Bundle.%s has type %v: is it a key?", f.Name, f.Type)
		}
	}
	var keys int
	for _, data := range [][]byte{b.CACertPEM, b.IntermediateCertPEM, b.LeafCertPEM, b.LeafKeyPEM, b.ChainPEM()} {
		for rest := data; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			if strings.Contains(blk.Type, "PRIVATE KEY") {
				keys++
				k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
				if err != nil || !k.(*ecdsa.PrivateKey).PublicKey.Equal(b.LeafCert.PublicKey) {
					t.Errorf("a PEM private key that is not the Vault key: %v", err)
				}
			}
		}
	}
	if keys != 1 {
		t.Errorf("%d PEM private keys, want 1 (LeafKeyPEM)", keys)
	}
}

func TestTheChainIsLeafThenIssuingCA(t *testing.T) {
	b := mustIssue(t, Options{Validity: time.Hour, Intermediate: true})
	var got []*x509.Certificate
	for rest := b.ChainPEM(); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
	if len(got) != 2 || !got[0].Equal(b.LeafCert) || !got[1].Equal(b.IntermediateCert) {
		t.Errorf("chain of %d certificates, want leaf then issuing CA", len(got))
	}
	if single := mustIssue(t, Options{Validity: time.Hour}); string(single.ChainPEM()) != string(single.LeafCertPEM) {
		t.Error("without an issuing CA the chain is not the leaf alone")
	}
}

// outsideKey stands for a CA key kept outside the process (a TPM's): it
// counts its signatures and says when it was closed.
type outsideKey struct {
	*ecdsa.PrivateKey
	signed   int
	closed   bool
	closeErr error
}

func (k *outsideKey) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if k.closed {
		return nil, errors.New("closed")
	}
	k.signed++
	return k.PrivateKey.Sign(r, digest, opts)
}

func (k *outsideKey) Close() error {
	k.closed = true
	return k.closeErr
}

func TestCAKeysKeptOutsideTheProcessSignTheChainAndAreClosed(t *testing.T) {
	for _, intermediate := range []bool{false, true} {
		var made []*outsideKey
		b := mustIssue(t, Options{Validity: time.Hour, Intermediate: intermediate, NewCAKey: func() (CAKey, error) {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return nil, err
			}
			made = append(made, &outsideKey{PrivateKey: k})
			return made[len(made)-1], nil
		}})
		want := 1
		if intermediate {
			want = 2
		}
		if len(made) != want {
			t.Fatalf("intermediate %v: %d CA keys made, want %d", intermediate, len(made), want)
		}
		if !made[0].Public().(*ecdsa.PublicKey).Equal(b.CACert.PublicKey) {
			t.Errorf("intermediate %v: the CA certificate is not for the outside key", intermediate)
		}
		if intermediate && !made[1].Public().(*ecdsa.PublicKey).Equal(b.IntermediateCert.PublicKey) {
			t.Errorf("the issuing CA certificate is not for the second outside key")
		}
		for i, k := range made {
			if !k.closed || k.signed == 0 {
				t.Errorf("intermediate %v: CA key %d signed %d times, closed %v; want signed and closed", intermediate, i, k.signed, k.closed)
			}
		}
		if _, err := b.LeafCert.Verify(verifyOptions(t, b)); err != nil {
			t.Errorf("intermediate %v: %v", intermediate, err)
		}
	}
}

func TestACAKeyThatCannotBeMadeFailsTheIssue(t *testing.T) {
	boom := errors.New("no TPM")
	_, err := Issue(Options{Validity: time.Hour, NewCAKey: func() (CAKey, error) { return nil, boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the key's error", err)
	}
}

func TestACAKeyThatCannotBeClosedFailsTheIssue(t *testing.T) {
	for _, intermediate := range []bool{false, true} {
		n := 0
		b, err := Issue(Options{Validity: time.Hour, Intermediate: intermediate, NewCAKey: func() (CAKey, error) {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return nil, err
			}
			n++
			k2 := &outsideKey{PrivateKey: k}
			if n == 2 || !intermediate {
				k2.closeErr = errors.New("flush failed")
			}
			return k2, nil
		}})
		if b != nil || err == nil || !strings.Contains(err.Error(), "flush failed") {
			t.Errorf("intermediate %v: Issue = %v, %v; want the close error and no bundle", intermediate, b, err)
		}
	}
}
