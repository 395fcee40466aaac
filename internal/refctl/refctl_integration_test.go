//go:build integration

package refctl_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/refctl"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// These tests run the controller in-process on a loopback port and play the
// device against it with a real TPM (swtpm): enrolment, quotes, keys sealed
// to the TPM and opened by it.

const devName = "edge-7"

const (
	alpha = "0b5e2a3c-1d4f-4a6b-8c9d-0e1f2a3b4c5d" // a vault that needs attestation
	beta  = "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910" // one that does not
)

// bed is a controller and a device with a TPM.
type bed struct {
	t       *testing.T
	ctl     *refctl.Controller
	caFile  string // the CA devices trust
	dir     string // a directory store's
	base    string // https://127.0.0.1:PORT
	log     *refctl.LockedBuffer
	tpm     *tpm2.TPMContext
	token   string
	claims  map[string]string // what the device claims in its quotes
	client  *http.Client      // with the client certificate, once enrolled
	signing *ecdsa.PublicKey  // pinned at enrolment
}

// mkBed makes a bed: newBed on a directory, or one on another store.
type mkBed func(t *testing.T, pcrs []int, claims map[string]string) *bed

// newBed initialises a controller, adds the device (pcrs, expected
// claims), serves, and starts the device's TPM.
func newBed(t *testing.T, pcrs []int, claims map[string]string) *bed {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ctl")
	if err := refctl.Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	b := newBedOn(t, refctl.OpenDir(dir), refctl.CACertPath(dir), pcrs, claims)
	b.dir = dir
	return b
}

// newBedOn is newBed on the controller ctl (initialised), whose devices
// trust caFile.
func newBedOn(t *testing.T, ctl *refctl.Controller, caFile string, pcrs []int, claims map[string]string) *bed {
	t.Helper()
	b := &bed{t: t, ctl: ctl, caFile: caFile, log: &refctl.LockedBuffer{}, claims: claims}
	tok, err := ctl.AddDevice(context.Background(), devName, pcrs, claims)
	if err != nil {
		t.Fatal(err)
	}
	b.token = tok
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreeLoopbackPort(t))
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- ctl.Serve(ctx, listen, refctl.Options{Log: b.log, Ready: func(a string) { ready <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("controller log:\n%s", b.log)
		}
	})
	select {
	case addr := <-ready:
		b.base = "https://" + addr
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the controller did not start listening")
	}
	sw := testbed.StartSWTPM(t)
	b.tpm, err = tpm.Open(fmt.Sprintf("swtpm:127.0.0.1:%d", sw.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.tpm.Close() })
	return b
}

func (b *bed) caPool() *x509.CertPool {
	data, err := os.ReadFile(b.caFile)
	if err != nil {
		b.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		b.t.Fatal("no CA certificate")
	}
	return pool
}

func (b *bed) httpClient(certs ...tls.Certificate) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: b.caPool(), Certificates: certs}}}
}

// post sends req; a 200 answer is decoded into resp, anything else is
// returned as the status and the error text.
func (b *bed) post(c *http.Client, path string, req any, resp ctlproto.Message) (int, string) {
	b.t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		b.t.Fatal(err)
	}
	r, err := c.Post(b.base+path, "application/json", bytes.NewReader(body))
	if err != nil {
		b.t.Fatalf("POST %s: %v", path, err)
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		var e ctlproto.ErrorBody
		if err := ctlproto.Decode(r.Body, &e); err != nil {
			b.t.Fatalf("POST %s: %s, and the body is not an error: %v", path, r.Status, err)
		}
		return r.StatusCode, e.Error
	}
	if err := ctlproto.Decode(r.Body, resp); err != nil {
		b.t.Fatalf("POST %s: %v", path, err)
	}
	return r.StatusCode, ""
}

func (b *bed) mustPost(c *http.Client, path string, req any, resp ctlproto.Message) {
	b.t.Helper()
	if status, msg := b.post(c, path, req, resp); status != http.StatusOK {
		b.t.Fatalf("POST %s: %d %s", path, status, msg)
	}
}

// enrol enrols the device with tok and a new client key.
func (b *bed) enrol(tok string) {
	b.t.Helper()
	anon := b.httpClient()
	var n ctlproto.EnrolNonce
	b.mustPost(anon, ctlproto.PathEnrolNonce, &ctlproto.EnrolNonceRequest{Token: tok}, &n)
	e, err := tpm.MakeEnrolment(b.tpm, n.Nonce)
	if err != nil {
		b.t.Fatal(err)
	}
	q, err := tpm.MakeQuote(b.tpm, n.Nonce, nil, n.PCRs)
	if err != nil {
		b.t.Fatal(err)
	}
	wq, err := ctlproto.QuoteFromTPM(q)
	if err != nil {
		b.t.Fatal(err)
	}
	ej, _ := json.Marshal(e)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	pub, err := ctlproto.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		b.t.Fatal(err)
	}
	var done ctlproto.Enrolled
	b.mustPost(anon, ctlproto.PathEnrol, &ctlproto.EnrolRequest{Token: tok, Nonce: n.Nonce, Enrolment: ej, Quote: wq, ClientKey: pub}, &done)
	if done.DeviceID != devName {
		b.t.Fatalf("enrolled as %q", done.DeviceID)
	}
	if b.signing, err = ctlproto.ParsePublicKey(done.SigningKey); err != nil {
		b.t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair([]byte(done.ClientCert), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		b.t.Fatal(err)
	}
	b.client = b.httpClient(cert)
}

// quote answers a new challenge with the device's claims.
func (b *bed) quote() *ctlproto.Quote {
	b.t.Helper()
	var c ctlproto.Challenge
	b.mustPost(b.client, ctlproto.PathChallenge, &ctlproto.ChallengeRequest{}, &c)
	q, err := tpm.MakeQuote(b.tpm, c.Nonce, b.claims, c.PCRs)
	if err != nil {
		b.t.Fatal(err)
	}
	wq, err := ctlproto.QuoteFromTPM(q)
	if err != nil {
		b.t.Fatal(err)
	}
	return wq
}

// keys asks for vaults, and checks the answer is the controller's, for
// this request and this device.
func (b *bed) keys(q *ctlproto.Quote, vaults ...ctlproto.VaultRequest) *ctlproto.Bundle {
	b.t.Helper()
	bundle, status, msg := b.tryKeys(q, vaults...)
	if status != http.StatusOK {
		b.t.Fatalf("keys: %d %s", status, msg)
	}
	return bundle
}

func (b *bed) tryKeys(q *ctlproto.Quote, vaults ...ctlproto.VaultRequest) (*ctlproto.Bundle, int, string) {
	b.t.Helper()
	nonce := make([]byte, ctlproto.NonceSize)
	rand.Read(nonce)
	var sb ctlproto.SignedBundle
	status, msg := b.post(b.client, ctlproto.PathKeys, &ctlproto.KeysRequest{RequestNonce: nonce, Quote: q, Vaults: vaults}, &sb)
	if status != http.StatusOK {
		return nil, status, msg
	}
	bundle, err := ctlproto.OpenBundle(&sb, b.signing, devName, nonce)
	if err != nil {
		b.t.Fatalf("keys: %v", err)
	}
	return bundle, status, ""
}

func (b *bed) report(vaults ...ctlproto.VaultReport) (int, string) {
	b.t.Helper()
	return b.post(b.client, ctlproto.PathReport, &ctlproto.Report{Vaults: vaults}, &ctlproto.ReportAck{})
}

// open has the TPM open a key sealed to it.
func (b *bed) open(sealed []byte) []byte {
	b.t.Helper()
	imp, err := tpm.UnmarshalImportable(sealed)
	if err != nil {
		b.t.Fatal(err)
	}
	secret, err := tpm.OpenImported(b.tpm, imp)
	if err != nil {
		b.t.Fatal(err)
	}
	return secret
}

func (b *bed) extendPCR(pcr int, data string) {
	b.t.Helper()
	d := sha256.Sum256([]byte(data))
	if err := b.tpm.PCRExtend(b.tpm.PCRHandleContext(pcr), tpm2.TaggedHashList{tpm2.MakeTaggedHash(tpm2.HashAlgorithmSHA256, d[:])}, nil); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bed) show() *refctl.DeviceView {
	b.t.Helper()
	d, err := b.ctl.Show(context.Background(), devName)
	if err != nil {
		b.t.Fatal(err)
	}
	return d
}

func release(b *ctlproto.Bundle, id string) ctlproto.VaultRelease {
	for _, v := range b.Vaults {
		if v.UUID == id {
			return v
		}
	}
	return ctlproto.VaultRelease{}
}

func vaultView(d *refctl.DeviceView, id string) refctl.VaultView {
	for _, v := range d.Vaults {
		if v.UUID == id {
			return v
		}
	}
	return refctl.VaultView{}
}

func TestADeviceEnrolsAttestsAndFollowsAKeyRotation(t *testing.T) {
	testADeviceEnrolsAttestsAndFollowsAKeyRotation(t, newBed)
}

func testADeviceEnrolsAttestsAndFollowsAKeyRotation(t *testing.T, mk mkBed) {
	b := mk(t, nil, nil)
	b.enrol(b.token)
	a := ctlproto.VaultRequest{UUID: alpha, Name: "alpha", Attestation: true, Keys: true}
	bv := ctlproto.VaultRequest{UUID: beta, Name: "beta", Keys: true}

	t.Log("When the device asks without a quote, Then the vault that needs attestation waits for one")
	got := b.keys(nil, a, bv)
	if got.Attestation.Status != ctlproto.AttestRequired {
		t.Errorf("attestation %+v, want required", got.Attestation)
	}
	if r := release(got, alpha); r.Status != ctlproto.Withheld || !strings.HasPrefix(r.Reason, "awaiting attestation: ") {
		t.Errorf("alpha: %s %q, want withheld awaiting attestation", r.Status, r.Reason)
	}
	if r := release(got, beta); r.Status != ctlproto.Released || r.Current == nil {
		t.Errorf("beta: %s %q, want released", r.Status, r.Reason)
	}

	t.Log("When it answers a challenge, Then both are released, current and previous the same version 1")
	got = b.keys(b.quote(), a, bv)
	if got.Attestation.Status != ctlproto.AttestVerified {
		t.Fatalf("attestation %+v, want verified", got.Attestation)
	}
	r := release(got, alpha)
	if r.Status != ctlproto.Released || r.Current.Version != 1 || r.Previous.Version != 1 {
		t.Fatalf("alpha: %+v", r)
	}
	k1 := b.open(r.Current.Sealed)
	if len(k1) != ctlproto.KeySize || !bytes.Equal(b.open(r.Previous.Sealed), k1) {
		t.Fatalf("alpha's key: %d bytes, previous the same: %v", len(k1), bytes.Equal(b.open(r.Previous.Sealed), k1))
	}
	if status, msg := b.report(ctlproto.VaultReport{UUID: alpha, KeyVersion: 1, Unlocked: "controller-key"}); status != http.StatusOK {
		t.Fatalf("report: %d %s", status, msg)
	}

	t.Log("Given an operator rotates alpha, When the device asks, Then it gets version 2 as current and its version 1 as previous")
	if _, err := b.ctl.Rotate(context.Background(), devName, "alpha"); err != nil {
		t.Fatal(err)
	}
	a.KeyVersion = 1
	r = release(b.keys(b.quote(), a), alpha)
	if r.Status != ctlproto.Released || r.Current.Version != 2 || r.Previous.Version != 1 {
		t.Fatalf("after rotate: %+v", r)
	}
	k2 := b.open(r.Current.Sealed)
	if bytes.Equal(k2, k1) || !bytes.Equal(b.open(r.Previous.Sealed), k1) {
		t.Fatal("after rotate: current is not a new key, or previous is not the old one")
	}
	if v := vaultView(b.show(), alpha); !slices.Equal(v.Versions, []int{1, 2}) || v.Acked != 1 {
		t.Errorf("during the rotation: versions %v acked %d", v.Versions, v.Acked)
	}

	t.Log("When the device reports version 2, Then version 1 exists nowhere, and it gets version 2 as both")
	if status, msg := b.report(ctlproto.VaultReport{UUID: alpha, KeyVersion: 2}); status != http.StatusOK {
		t.Fatalf("report: %d %s", status, msg)
	}
	v := vaultView(b.show(), alpha)
	if !slices.Equal(v.Versions, []int{2}) || v.Acked != 2 || v.LastUnlock != "controller-key" {
		t.Errorf("after the rotation: %+v", v)
	}
	if b.dir != "" {
		state, err := os.ReadFile(filepath.Join(b.dir, "state.json"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(state, []byte(base64.StdEncoding.EncodeToString(k1))) {
			t.Error("the old key is still in state.json")
		}
	}
	a.KeyVersion = 2
	r = release(b.keys(b.quote(), a), alpha)
	if r.Current.Version != 2 || r.Previous.Version != 2 || !bytes.Equal(b.open(r.Current.Sealed), k2) {
		t.Errorf("after the rotation: current %d previous %d", r.Current.Version, r.Previous.Version)
	}
}

func TestAChangedPCRIsRefusedByNameUntilAnOperatorApprovesIt(t *testing.T) {
	testAChangedPCRIsRefusedByNameUntilAnOperatorApprovesIt(t, newBed)
}

func testAChangedPCRIsRefusedByNameUntilAnOperatorApprovesIt(t *testing.T, mk mkBed) {
	b := mk(t, []int{7, 16}, nil)
	b.enrol(b.token)
	a := ctlproto.VaultRequest{UUID: alpha, Name: "alpha", Attestation: true, Keys: true}
	if got := b.keys(b.quote(), a); got.Attestation.Status != ctlproto.AttestVerified {
		t.Fatalf("before: %+v", got.Attestation)
	}

	t.Log("Given a debug tool measured into PCR 16, When the device attests, Then it is refused naming PCR 16")
	b.extendPCR(16, "a debug tool nobody approved")
	got := b.keys(b.quote(), a)
	if got.Attestation.Status != ctlproto.AttestRefused || !slices.Equal(got.Attestation.ChangedPCRs, []int{16}) ||
		!strings.Contains(got.Attestation.Reason, "PCR 16 differs from the expected value") {
		t.Errorf("attestation %+v, want refused for PCR 16", got.Attestation)
	}
	if r := release(got, alpha); r.Status != ctlproto.Withheld || !strings.HasPrefix(r.Reason, "awaiting attestation: PCR 16") {
		t.Errorf("alpha: %s %q", r.Status, r.Reason)
	}
	if d := b.show(); d.Refused == nil || !slices.Equal(d.Refused.Changed, []int{16}) {
		t.Errorf("the operator sees refused %+v", d.Refused)
	}

	t.Log("When the operator approves, Then the next quote is verified, saying PCR 16 changed, and the key released")
	changed, err := b.ctl.Approve(context.Background(), devName)
	if err != nil || !slices.Equal(changed, []int{16}) {
		t.Fatalf("approve: %v %v", changed, err)
	}
	got = b.keys(b.quote(), a)
	if got.Attestation.Status != ctlproto.AttestVerified || !slices.Equal(got.Attestation.ChangedPCRs, []int{16}) {
		t.Errorf("after approve: %+v", got.Attestation)
	}
	if r := release(got, alpha); r.Status != ctlproto.Released {
		t.Errorf("after approve: alpha %s %q", r.Status, r.Reason)
	}
	if _, err := b.ctl.Approve(context.Background(), devName); err == nil {
		t.Error("approve with no refused quote: no error")
	}
}

func TestClaimsAreSignedAndChecked(t *testing.T) { testClaimsAreSignedAndChecked(t, newBed) }

func testClaimsAreSignedAndChecked(t *testing.T, mk mkBed) {
	b := mk(t, []int{7}, map[string]string{"location": "hall-3"})
	b.enrol(b.token)
	a := ctlproto.VaultRequest{UUID: alpha, Name: "alpha", Attestation: true, Keys: true}
	if got := b.keys(b.quote(), a); got.Attestation.Status != ctlproto.AttestVerified {
		t.Fatalf("with the expected claims: %+v", got.Attestation)
	}

	t.Log("When the device is elsewhere, Then its quote is refused naming the claim")
	b.claims = map[string]string{"location": "hall-4"}
	got := b.keys(b.quote(), a)
	if got.Attestation.Status != ctlproto.AttestRefused || got.Attestation.Reason != `claim location is "hall-4", expected "hall-3"` {
		t.Errorf("moved: %+v", got.Attestation)
	}

	t.Log("When a claim is changed after the TPM signed it, Then the quote is refused as not over these claims")
	q := b.quote()
	q.Claims = map[string]string{"location": "hall-3"}
	if got := b.keys(q, a); got.Attestation.Status != ctlproto.AttestRefused || !strings.Contains(got.Attestation.Reason, "not over this challenge and these claims") {
		t.Errorf("forged claim: %+v", got.Attestation)
	}

	t.Log("When the operator expects the new location, Then the quote is verified")
	if err := b.ctl.Expect(context.Background(), devName, map[string]string{"location": "hall-4"}); err != nil {
		t.Fatal(err)
	}
	if got := b.keys(b.quote(), a); got.Attestation.Status != ctlproto.AttestVerified {
		t.Errorf("after expect: %+v", got.Attestation)
	}
}

func TestAnEscrowedKeyIsReturnedOnlyAfterAVerifiedQuote(t *testing.T) {
	testAnEscrowedKeyIsReturnedOnlyAfterAVerifiedQuote(t, newBed)
}

func testAnEscrowedKeyIsReturnedOnlyAfterAVerifiedQuote(t *testing.T, mk mkBed) {
	b := mk(t, nil, nil)
	b.enrol(b.token)
	esc := ctlproto.VaultRequest{UUID: beta, Name: "beta", Escrow: true}

	t.Log("Given nothing escrowed, Then the escrow is withheld, saying so")
	if r := release(b.keys(b.quote(), esc), beta); r.Status != ctlproto.Withheld || r.Reason != "no escrowed key for this vault" {
		t.Errorf("nothing escrowed: %s %q", r.Status, r.Reason)
	}

	t.Log("When the device escrows its vault key, sealed to its own TPM")
	srk, err := tpm.SRKPublic(b.tpm)
	if err != nil {
		t.Fatal(err)
	}
	vaultKey := bytes.Repeat([]byte{0x5a}, 32)
	imp, err := tpm.SealToTPM(srk, vaultKey)
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := imp.MarshalBinary()
	if status, msg := b.report(ctlproto.VaultReport{UUID: beta, Escrow: []byte("not an importable object"), Unlocked: "tpm"}); status != http.StatusBadRequest || !strings.Contains(msg, "escrow") {
		t.Errorf("a malformed escrow: %d %q, want 400 naming escrow", status, msg)
	}
	if status, msg := b.report(ctlproto.VaultReport{UUID: beta, Escrow: blob, Unlocked: "tpm"}); status != http.StatusOK {
		t.Fatalf("report: %d %s", status, msg)
	}
	if v := vaultView(b.show(), beta); !v.Escrowed || v.LastUnlock != "tpm" {
		t.Errorf("the operator sees %+v", v)
	}

	t.Log("Then without a quote it is withheld; with a verified one it is given back as deposited")
	got := b.keys(nil, esc)
	if r := release(got, beta); got.Attestation.Status != ctlproto.AttestRequired || r.Status != ctlproto.Withheld || !strings.HasPrefix(r.Reason, "awaiting attestation: ") {
		t.Errorf("no quote: %+v %s %q", got.Attestation, r.Status, r.Reason)
	}
	r := release(b.keys(b.quote(), esc), beta)
	if r.Status != ctlproto.Released || !bytes.Equal(r.Escrow, blob) || r.Current != nil {
		t.Fatalf("with a quote: %s %q", r.Status, r.Reason)
	}
	if !bytes.Equal(b.open(r.Escrow), vaultKey) {
		t.Error("the escrowed key does not open to the vault key")
	}
}

func TestAChallengeNonceIsUsedOnce(t *testing.T) { testAChallengeNonceIsUsedOnce(t, newBed) }

func testAChallengeNonceIsUsedOnce(t *testing.T, mk mkBed) {
	b := mk(t, nil, nil)
	b.enrol(b.token)
	bv := ctlproto.VaultRequest{UUID: beta, Name: "beta", Keys: true}

	q := b.quote()
	if got := b.keys(q, bv); got.Attestation.Status != ctlproto.AttestVerified {
		t.Fatalf("first use: %+v", got.Attestation)
	}
	t.Log("When the same quote is sent again, Then it is refused as a used nonce")
	if _, status, msg := b.tryKeys(q, bv); status != http.StatusConflict || !strings.Contains(msg, "nonce already used") {
		t.Errorf("replayed: %d %q, want 409 nonce already used", status, msg)
	}

	t.Log("When a quote fails, Then its nonce is spent all the same")
	q = b.quote()
	good := slices.Clone(q.PCRValues[0].Value)
	q.PCRValues[0].Value[0] ^= 1
	if got := b.keys(q, bv); got.Attestation.Status != ctlproto.AttestRefused || !strings.Contains(got.Attestation.Reason, "not the ones the TPM quoted") {
		t.Errorf("tampered: %+v", got.Attestation)
	}
	q.PCRValues[0].Value = good
	if _, status, _ := b.tryKeys(q, bv); status != http.StatusConflict {
		t.Errorf("the genuine quote after a failed one: %d, want 409", status)
	}

	t.Log("When a quote answers a nonce the controller never issued, Then it is refused")
	fresh := make([]byte, 32)
	rand.Read(fresh)
	tq, err := tpm.MakeQuote(b.tpm, fresh, nil, refctl.DefaultPCRs)
	if err != nil {
		t.Fatal(err)
	}
	wq, _ := ctlproto.QuoteFromTPM(tq)
	if got := b.keys(wq, bv); got.Attestation.Status != ctlproto.AttestRefused || !strings.Contains(got.Attestation.Reason, "no challenge") {
		t.Errorf("unissued nonce: %+v", got.Attestation)
	}
	if strings.Contains(b.log.String(), hex.EncodeToString(q.Nonce)) {
		t.Error("the log holds a nonce")
	}
}

func TestAStolenDeviceGetsEveryVaultWithheldAndIsToldWhy(t *testing.T) {
	testAStolenDeviceGetsEveryVaultWithheldAndIsToldWhy(t, newBed)
}

func testAStolenDeviceGetsEveryVaultWithheldAndIsToldWhy(t *testing.T, mk mkBed) {
	b := mk(t, nil, nil)
	b.enrol(b.token)
	a := ctlproto.VaultRequest{UUID: alpha, Name: "alpha", Attestation: true, Keys: true}
	bv := ctlproto.VaultRequest{UUID: beta, Name: "beta", Keys: true}
	b.keys(b.quote(), a, bv)

	t.Log("Given the device is reported stolen, When it attests and asks, Then every vault is withheld, saying why")
	if err := b.ctl.Revoke(context.Background(), devName, true); err != nil {
		t.Fatal(err)
	}
	got := b.keys(b.quote(), a, bv)
	for _, id := range []string{alpha, beta} {
		if r := release(got, id); r.Status != ctlproto.Withheld || r.Reason != "the device is reported stolen: keys withheld" {
			t.Errorf("%s: %s %q", id, r.Status, r.Reason)
		}
	}
	if v := b.show(); !v.Revoked {
		t.Error("the operator does not see it stolen")
	}

	t.Log("When it is restored, Then it gets its keys again")
	if err := b.ctl.Revoke(context.Background(), devName, false); err != nil {
		t.Fatal(err)
	}
	got = b.keys(b.quote(), a, bv)
	for _, id := range []string{alpha, beta} {
		if r := release(got, id); r.Status != ctlproto.Released {
			t.Errorf("restored: %s: %s %q", id, r.Status, r.Reason)
		}
	}
}

func TestAnEnrolmentTokenEnrolsOnce(t *testing.T) { testAnEnrolmentTokenEnrolsOnce(t, newBed) }

func testAnEnrolmentTokenEnrolsOnce(t *testing.T, mk mkBed) {
	b := mk(t, nil, nil)
	b.enrol(b.token)
	anon := b.httpClient()
	var n ctlproto.EnrolNonce

	t.Log("When the token is used again, Then it is refused, saying it was used")
	if status, msg := b.post(anon, ctlproto.PathEnrolNonce, &ctlproto.EnrolNonceRequest{Token: b.token}, &n); status != http.StatusUnauthorized || !strings.Contains(msg, "used already") {
		t.Errorf("token used twice: %d %q", status, msg)
	}
	if status, msg := b.post(anon, ctlproto.PathEnrolNonce, &ctlproto.EnrolNonceRequest{Token: strings.Repeat("A", 43)}, &n); status != http.StatusUnauthorized || !strings.Contains(msg, "not one this controller issued") {
		t.Errorf("unknown token: %d %q", status, msg)
	}
	if strings.Contains(b.log.String(), b.token) {
		t.Error("the log holds the token")
	}
}

func TestOnlyTheCurrentCertificateFromThisControllersCAIsAccepted(t *testing.T) {
	testOnlyTheCurrentCertificateFromThisControllersCAIsAccepted(t, newBed)
}

func testOnlyTheCurrentCertificateFromThisControllersCAIsAccepted(t *testing.T, mk mkBed) {
	b := mk(t, nil, nil)
	b.enrol(b.token)
	var c ctlproto.Challenge

	t.Log("When the device has no client certificate, Then it is refused")
	if status, msg := b.post(b.httpClient(), ctlproto.PathChallenge, &ctlproto.ChallengeRequest{}, &c); status != http.StatusUnauthorized {
		t.Errorf("no certificate: %d %q", status, msg)
	}

	t.Log("When a certificate naming the device comes from another CA, Then the TLS handshake refuses it")
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: devName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, ca, &key.PublicKey, caKey)
	other := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
	// A Go client sends no certificate the server's CA list does not name;
	// another client may.
	if status, msg := b.post(b.httpClient(other), ctlproto.PathChallenge, &ctlproto.ChallengeRequest{}, &c); status != http.StatusUnauthorized {
		t.Errorf("another CA's certificate, not sent: %d %q", status, msg)
	}
	forced := b.httpClient()
	forced.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &other, nil
	}
	r, err := forced.Post(b.base+ctlproto.PathChallenge, "application/json", strings.NewReader("{}"))
	if err == nil {
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		t.Errorf("another CA's certificate, sent: %s %s, want a TLS error", r.Status, body)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("another CA's certificate, sent: %v, want a TLS certificate error", err)
	}

	t.Log("When the device enrols again, Then its old certificate is refused")
	old := b.client
	tok, err := b.ctl.Reenrol(context.Background(), devName)
	if err != nil {
		t.Fatal(err)
	}
	b.enrol(tok)
	if status, msg := b.post(old, ctlproto.PathChallenge, &ctlproto.ChallengeRequest{}, &c); status != http.StatusForbidden || !strings.Contains(msg, "replaced") {
		t.Errorf("old certificate: %d %q", status, msg)
	}
	b.mustPost(b.client, ctlproto.PathChallenge, &ctlproto.ChallengeRequest{}, &c)
}

// deviceSuite are the stories above, to run on every store (the OpenBao
// store's run them in its own test).
var deviceSuite = map[string]func(*testing.T, mkBed){
	"ADeviceEnrolsAttestsAndFollowsAKeyRotation":               testADeviceEnrolsAttestsAndFollowsAKeyRotation,
	"AChangedPCRIsRefusedByNameUntilAnOperatorApprovesIt":      testAChangedPCRIsRefusedByNameUntilAnOperatorApprovesIt,
	"ClaimsAreSignedAndChecked":                                testClaimsAreSignedAndChecked,
	"AnEscrowedKeyIsReturnedOnlyAfterAVerifiedQuote":           testAnEscrowedKeyIsReturnedOnlyAfterAVerifiedQuote,
	"AChallengeNonceIsUsedOnce":                                testAChallengeNonceIsUsedOnce,
	"AStolenDeviceGetsEveryVaultWithheldAndIsToldWhy":          testAStolenDeviceGetsEveryVaultWithheldAndIsToldWhy,
	"AnEnrolmentTokenEnrolsOnce":                               testAnEnrolmentTokenEnrolsOnce,
	"OnlyTheCurrentCertificateFromThisControllersCAIsAccepted": testOnlyTheCurrentCertificateFromThisControllersCAIsAccepted,
}

func TestTheDeviceStoriesOnAnOpenBaoStore(t *testing.T) {
	cl := refctl.StartCluster(t)
	for name, test := range deviceSuite {
		t.Run(name, func(t *testing.T) {
			test(t, func(t *testing.T, pcrs []int, claims map[string]string) *bed {
				ctl, _, ca := refctl.OnBao(t, cl)
				return newBedOn(t, ctl, ca, pcrs, claims)
			})
		})
	}
}
