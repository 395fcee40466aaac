package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/objectutil"
)

// CAKey is a per-boot CA's signing key that lives in the TPM (pki.ca_key tpm):
// a primary ECC P-256 key of the null hierarchy, made with a random unique
// value that is not kept. Its private part never leaves the TPM: it is not
// duplicable (fixedTPM, fixedParent), and there is no context of it saved
// anywhere. Close flushes it, and then it is gone for good: the null
// hierarchy's seed is replaced at every TPM reset (every boot), and even
// within this boot the key cannot be made again without the unique value,
// which existed only in this process. A CAKey is a crypto.Signer, so
// crypto/x509 signs certificates with it.
type CAKey struct {
	tpm *tpm2.TPMContext
	key tpm2.ResourceContext
	pub *ecdsa.PublicKey
}

// ErrCAKeyUnsupported: the TPM cannot make the CA key (no ECC P-256 signing,
// or no null-hierarchy primaries).
var ErrCAKeyUnsupported = errors.New("the TPM cannot make an ECC P-256 signing key")

// caKeyTemplate is an unrestricted ECDSA-SHA256 signing key (it signs digests
// it did not make: the certificates' TBS hashes), exempt from dictionary-attack
// protection (it has no authorization value to guess), with unique as its
// unique field.
func caKeyTemplate(unique []byte) *tpm2.Public {
	return objectutil.NewECCKeyTemplate(objectutil.UsageSign,
		objectutil.WithoutDictionaryAttackProtection(),
		objectutil.WithECCScheme(tpm2.ECCSchemeECDSA, tpm2.HashAlgorithmSHA256),
		objectutil.WithECCUnique(&tpm2.ECCPoint{X: unique, Y: make([]byte, 32)}))
}

// NewCAKey makes a new CA signing key in the TPM. The caller must Close it.
//
// The unique value comes from this process's random source, not the TPM's
// (whose answer would cross the bus before the key is made). It still crosses
// the bus in the command that makes the key: someone who reads the bus (or
// replaces the TPM's answers) during the boot could make the key again until
// the TPM's next reset. That attacker has the device in hand; the key is in
// no file and in no process either way.
func NewCAKey(t *tpm2.TPMContext) (*CAKey, error) {
	unique := make([]byte, 32)
	if _, err := rand.Read(unique); err != nil {
		return nil, fmt.Errorf("cannot make the CA key in the TPM: cannot get random bytes: %w", err)
	}
	key, pub, _, _, _, err := t.CreatePrimary(t.NullHandleContext(), nil, caKeyTemplate(unique), nil, nil, nil)
	if err != nil {
		if tpm2.IsTPMParameterError(err, tpm2.AnyErrorCode, tpm2.CommandCreatePrimary, tpm2.AnyParameterIndex) {
			return nil, fmt.Errorf("cannot make the CA key in the TPM: %w: %v", ErrCAKeyUnsupported, err)
		}
		return nil, fmt.Errorf("cannot make the CA key in the TPM: %w", err)
	}
	ec, ok := pub.Public().(*ecdsa.PublicKey)
	if !ok || pub.Attrs&(tpm2.AttrFixedTPM|tpm2.AttrFixedParent|tpm2.AttrSensitiveDataOrigin) != tpm2.AttrFixedTPM|tpm2.AttrFixedParent|tpm2.AttrSensitiveDataOrigin {
		t.FlushContext(key)
		return nil, fmt.Errorf("cannot make the CA key in the TPM: it answered with a key of another shape (%v, %v)", pub.Type, pub.Attrs)
	}
	return &CAKey{tpm: t, key: key, pub: ec}, nil
}

// Public is the CA key's public key.
func (k *CAKey) Public() crypto.PublicKey { return k.pub }

// Sign signs a SHA-256 digest with the TPM (ECDSA), returning the ASN.1 form
// crypto/x509 expects. rand is not used: the TPM makes the nonce.
func (k *CAKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if k.key == nil {
		return nil, errors.New("cannot sign with the TPM's CA key: it was flushed")
	}
	if opts.HashFunc() != crypto.SHA256 || len(digest) != crypto.SHA256.Size() {
		return nil, fmt.Errorf("cannot sign with the TPM's CA key: it signs SHA-256 digests only, not %v", opts.HashFunc())
	}
	sig, err := k.tpm.Sign(k.key, digest, nil, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot sign with the TPM's CA key: %w", err)
	}
	if sig.SigAlg != tpm2.SigSchemeAlgECDSA || sig.Signature.ECDSA == nil {
		return nil, fmt.Errorf("cannot sign with the TPM's CA key: the TPM answered with a %v signature", sig.SigAlg)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig.Signature.ECDSA.SignatureR),
		new(big.Int).SetBytes(sig.Signature.ECDSA.SignatureS),
	})
}

// Close flushes the key from the TPM: no one can sign with it again.
func (k *CAKey) Close() error {
	if k.key == nil {
		return nil
	}
	err := k.tpm.FlushContext(k.key)
	k.key = nil
	if err != nil {
		return fmt.Errorf("cannot flush the CA key from the TPM: %w", err)
	}
	return nil
}
