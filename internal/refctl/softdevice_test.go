package refctl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/mu"
	"github.com/canonical/go-tpm2/policyutil"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// softAK is an attestation key in memory, for simulated devices: it signs
// TPM quotes (TPMS_ATTEST, TPMT_SIGNATURE) as a TPM's would, over PCR values
// the device claims. The controller cannot tell, and must not need to: it
// checks a quote against the key enrolled. Real devices (swtpm) are in the
// package's integration tests; this is for load.
type softAK struct {
	key *ecdsa.PrivateKey
	pem string
}

func newSoftAK(t testing.TB) *softAK {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &softAK{key: k, pem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
}

// quote quotes values (PCR index -> SHA-256 value) over nonce and claims.
func (a *softAK) quote(nonce []byte, claims map[string]string, values map[int][]byte) (*ctlproto.Quote, error) {
	sel := tpm2.PCRSelectionList{{Hash: tpm2.HashAlgorithmSHA256}}
	vals := tpm2.PCRValues{tpm2.HashAlgorithmSHA256: {}}
	for p, v := range values {
		sel[0].Select = append(sel[0].Select, p)
		vals[tpm2.HashAlgorithmSHA256][p] = v
	}
	digest, err := policyutil.ComputePCRDigest(tpm2.HashAlgorithmSHA256, sel, vals)
	if err != nil {
		return nil, err
	}
	attest := tpm2.Attest{Magic: tpm2.TPMGeneratedValue, Type: tpm2.TagAttestQuote,
		ExtraData: tpm.QualifyingData(nonce, claims),
		Attested:  &tpm2.AttestU{Quote: &tpm2.QuoteInfo{PCRSelect: sel, PCRDigest: digest}}}
	ab, err := mu.MarshalToBytes(&attest)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(ab)
	r, s, err := ecdsa.Sign(rand.Reader, a.key, h[:])
	if err != nil {
		return nil, err
	}
	sig := tpm2.Signature{SigAlg: tpm2.SigSchemeAlgECDSA, Signature: &tpm2.SignatureU{
		ECDSA: &tpm2.SignatureECDSA{Hash: tpm2.HashAlgorithmSHA256, SignatureR: pad(r), SignatureS: pad(s)}}}
	sb, err := mu.MarshalToBytes(&sig)
	if err != nil {
		return nil, err
	}
	q := &ctlproto.Quote{Nonce: nonce, AttestData: ab, Signature: sb, Claims: claims}
	for p, v := range values {
		q.PCRValues = append(q.PCRValues, ctlproto.PCRValue{Index: p, HashAlgo: "sha256", Value: v})
	}
	return q, nil
}

func pad(n *big.Int) tpm2.ECCParameter { return n.FillBytes(make([]byte, 32)) }

func TestASoftwareQuoteIsGenuineToTheController(t *testing.T) {
	ak := newSoftAK(t)
	nonce := make([]byte, ctlproto.NonceSize)
	rand.Read(nonce)
	vals := map[int][]byte{7: make([]byte, 32)}
	q, err := ak.quote(nonce, nil, vals)
	if err != nil {
		t.Fatal(err)
	}
	if why := checkGenuine(q, ak.pem, nonce, []int{7}); why != "" {
		t.Fatalf("a software quote is refused: %s", why)
	}
	other := make([]byte, ctlproto.NonceSize)
	if why := checkGenuine(q, ak.pem, other, []int{7}); why == "" {
		t.Fatal("a quote over another nonce is accepted")
	}
}
