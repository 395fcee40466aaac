//go:build integration

package controller

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// swtpmDevice is a fresh software TPM: its spec, an opener that counts what
// it opens, and its storage root key's public area (what a controller seals
// to).
type swtpmDevice struct {
	spec  string
	opens int
	srk   *tpm2.Public
}

func startTPM(t *testing.T) *swtpmDevice {
	t.Helper()
	s := testbed.StartSWTPM(t)
	d := &swtpmDevice{spec: fmt.Sprintf("swtpm:127.0.0.1:%d", s.Port)}
	tc, err := tpm.Open(d.spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if d.srk, err = tpm.SRKPublic(tc); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *swtpmDevice) open() (*tpm2.TPMContext, error) {
	d.opens++
	return tpm.Open(d.spec)
}

// sealTo is what a controller sends: secret sealed to the TPM with srk.
func sealTo(t *testing.T, srk *tpm2.Public, secret []byte) []byte {
	t.Helper()
	imp, err := tpm.SealToTPM(srk, secret)
	if err != nil {
		t.Fatal(err)
	}
	b, err := imp.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// playController is a controller in the test's hands, behind the Transport
// seam: it answers what the test tells it, signed with the key the test
// gives, so a test can play an adversary at the protocol level.
type playController struct {
	t        *testing.T
	deviceID string
	signer   *ecdsa.PrivateKey
	// answer makes the bundle for a request (its nonce and device id filled
	// in after).
	answer func(req *ctlproto.KeysRequest) *ctlproto.Bundle
	// tamper, if set, changes the bundle after it is filled in.
	tamper func(b *ctlproto.Bundle)
	// mangle, if set, changes the signed payload (signed again after).
	mangle func(payload []byte) []byte
	// replay, if set, is sent instead of a fresh answer.
	replay *ctlproto.SignedBundle

	challenges []*ctlproto.Challenge
	requests   []*ctlproto.KeysRequest
	sent       []*ctlproto.SignedBundle
	reports    []*ctlproto.Report
}

func (c *playController) Challenge(context.Context) (*ctlproto.Challenge, error) {
	ch := &ctlproto.Challenge{Nonce: randomBytes(32), PCRs: []int{0, 7}, Claims: []string{"device_id", "site"}, Expires: time.Now().Add(time.Minute)}
	c.challenges = append(c.challenges, ch)
	return ch, nil
}

func (c *playController) Keys(_ context.Context, req *ctlproto.KeysRequest) (*ctlproto.SignedBundle, error) {
	if err := req.Validate(); err != nil {
		c.t.Errorf("the device sent a request out of shape: %v", err)
	}
	c.requests = append(c.requests, req)
	if c.replay != nil {
		return c.replay, nil
	}
	b := c.answer(req)
	b.Version, b.DeviceID, b.RequestNonce, b.Issued = ctlproto.Version, c.deviceID, req.RequestNonce, time.Now()
	if c.tamper != nil {
		c.tamper(b)
	}
	sb, err := ctlproto.Sign(c.signer, b)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.mangle != nil {
		sb = resign(c.t, c.signer, c.mangle(sb.Payload))
	}
	c.sent = append(c.sent, sb)
	return sb, nil
}

func (c *playController) Report(_ context.Context, r *ctlproto.Report) error {
	c.reports = append(c.reports, r)
	return nil
}

const (
	uuidA = "0f9c4a3e-2b7d-4e1a-9c55-3d2f8e6a1b70"
	uuidB = "1a2b3c4d-5e6f-4a0b-8c1d-2e3f4a5b6c7d"
	uuidC = "2b3c4d5e-6f70-4b1c-9d2e-3f4a5b6c7d8e"
	uuidD = "3c4d5e6f-7081-4c2d-8e3f-4a5b6c7d8e9f"
	uuidE = "4d5e6f70-8192-4d3e-9f40-5b6c7d8e9fa0"
)

// device is an enrolled device on a fresh software TPM, with a controller
// played by the test.
func device(t *testing.T) (*Device, *playController, *swtpmDevice) {
	t.Helper()
	tp := startTPM(t)
	en := enrolTestDevice(t, "https://127.0.0.1:1", newTestCA(t, "controller CA"), "gw-1")
	pc := &playController{t: t, deviceID: "gw-1", signer: en.signer}
	d := &Device{Paths: en.p, OpenTPM: tp.open, Transport: pc,
		Config: config.Controller{Claims: map[string]string{"site": "plant-7"}, Timeout: config.Duration(time.Second)}}
	return d, pc, tp
}

// A key released for each vault, both versions.
func releaseAll(srk *tpm2.Public, t *testing.T, cur, prev []byte) func(req *ctlproto.KeysRequest) *ctlproto.Bundle {
	return func(req *ctlproto.KeysRequest) *ctlproto.Bundle {
		b := &ctlproto.Bundle{Attestation: ctlproto.AttestResult{Status: ctlproto.AttestNotAsked}}
		for _, v := range req.Vaults {
			b.Vaults = append(b.Vaults, ctlproto.VaultRelease{UUID: v.UUID, Status: ctlproto.Released,
				Current: &ctlproto.Key{Version: 2, Sealed: sealTo(t, srk, cur)}, Previous: &ctlproto.Key{Version: 1, Sealed: sealTo(t, srk, prev)}})
		}
		return b
	}
}

// Given a device and a controller that releases some vaults' keys, withholds
// one, forgets one and adds one never asked for, when the device asks, then
// each vault asked for has what the controller released, opened by the TPM;
// the one forgotten is withheld; the one not asked for is not there; and the
// quote the device sent answers the challenge with its claims.
func TestKeysOpensWhatTheControllerReleased(t *testing.T) {
	d, pc, tp := device(t)
	cur, prev, escrow := randomBytes(32), randomBytes(32), randomBytes(64)
	pc.answer = func(req *ctlproto.KeysRequest) *ctlproto.Bundle {
		if req.Quote == nil {
			t.Error("no quote sent, though vault B needs attestation")
		}
		key := func(v int, s []byte) *ctlproto.Key { return &ctlproto.Key{Version: v, Sealed: sealTo(t, tp.srk, s)} }
		same := key(1, cur)
		return &ctlproto.Bundle{
			Attestation: ctlproto.AttestResult{Status: ctlproto.AttestVerified},
			Vaults: []ctlproto.VaultRelease{
				{UUID: uuidA, Status: ctlproto.Released, Current: same, Previous: same},
				{UUID: uuidB, Status: ctlproto.Released, Current: key(3, cur), Previous: key(2, prev), Escrow: sealTo(t, tp.srk, escrow)},
				{UUID: uuidC, Status: ctlproto.Withheld, Reason: "reported stolen"},
				{UUID: uuidE, Status: ctlproto.Released, Current: key(1, cur), Previous: key(1, cur)},
			},
		}
	}
	r, err := d.Keys(t.Context(), []ctlproto.VaultRequest{
		{UUID: uuidA, Name: "config", Keys: true},
		{UUID: uuidB, Name: "images", Keys: true, Escrow: true, Attestation: true, KeyVersion: 2},
		{UUID: uuidC, Name: "logs", Keys: true},
		{UUID: uuidD, Name: "models", Keys: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Clear()
	if tp.opens != 1 {
		t.Errorf("the TPM was opened %d times, want once", tp.opens)
	}
	if r.Attestation.Status != ctlproto.AttestVerified {
		t.Errorf("attestation %+v", r.Attestation)
	}
	if got := slices.Sorted(maps.Keys(r.Vaults)); !slices.Equal(got, []string{uuidA, uuidB, uuidC, uuidD}) {
		t.Errorf("vaults %v", got)
	}
	a, b, c, dd := r.Vaults[uuidA], r.Vaults[uuidB], r.Vaults[uuidC], r.Vaults[uuidD]
	if a.Err != nil || a.Status != ctlproto.Released || a.Current.Version != 1 || !bytes.Equal(a.Current.Secret, cur) ||
		a.Previous.Version != 1 || !bytes.Equal(a.Previous.Secret, cur) || a.Escrow != nil {
		t.Errorf("vault A: %+v", a)
	}
	if &a.Current.Secret[0] == &a.Previous.Secret[0] {
		t.Error("vault A's current and previous share memory: clearing one clears the other")
	}
	if b.Err != nil || b.Current.Version != 3 || !bytes.Equal(b.Current.Secret, cur) ||
		b.Previous.Version != 2 || !bytes.Equal(b.Previous.Secret, prev) || !bytes.Equal(b.Escrow, escrow) {
		t.Errorf("vault B: %+v", b)
	}
	if c.Status != ctlproto.Withheld || c.Reason != "reported stolen" || c.Current != nil || c.Err != nil {
		t.Errorf("vault C: %+v", c)
	}
	if dd.Status != ctlproto.Withheld || dd.Reason != "the controller did not answer for this vault" || dd.Current != nil {
		t.Errorf("vault D: %+v", dd)
	}

	// The quote answers the challenge, claims and all, and verifies.
	if len(pc.challenges) != 1 || len(pc.requests) != 1 {
		t.Fatalf("%d challenges, %d requests", len(pc.challenges), len(pc.requests))
	}
	q := pc.requests[0].Quote
	if !bytes.Equal(q.Nonce, pc.challenges[0].Nonce) || !maps.Equal(q.Claims, map[string]string{"site": "plant-7", "device_id": "gw-1"}) ||
		len(q.PCRValues) != 2 || q.PCRValues[0].Index != 0 || q.PCRValues[1].Index != 7 {
		t.Errorf("quote %+v", q)
	}
	tc, err := tpm.Open(tp.spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	te, err := tpm.MakeEnrolment(tc, randomBytes(32))
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tpm.ParseAKPublic([]byte(te.AKPublic))
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm.Verify(q.TPM(), ak, pc.challenges[0].Nonce, nil); err != nil {
		t.Errorf("the quote does not verify: %v", err)
	}

	// Clear wipes every secret.
	r.Clear()
	if !bytes.Equal(b.Current.Secret, make([]byte, 32)) || !bytes.Equal(b.Escrow, make([]byte, 64)) {
		t.Error("Clear left secrets")
	}
}

// Given vaults that need no attestation and no escrow, the device asks for
// no challenge and sends no quote.
func TestKeysWithoutAttestationSendsNoQuote(t *testing.T) {
	d, pc, tp := device(t)
	d.Config.LocationFile = "/nonexistent" // never read: no quote
	cur, prev := randomBytes(32), randomBytes(32)
	pc.answer = releaseAll(tp.srk, t, cur, prev)
	r, err := d.Keys(t.Context(), []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Keys: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Clear()
	if len(pc.challenges) != 0 || pc.requests[0].Quote != nil {
		t.Errorf("%d challenges, quote %v", len(pc.challenges), pc.requests[0].Quote)
	}
	if a := r.Vaults[uuidA]; a.Err != nil || !bytes.Equal(a.Current.Secret, cur) || !bytes.Equal(a.Previous.Secret, prev) {
		t.Errorf("vault A: %+v", a)
	}
}

// Given a controller's answer that must not be trusted (signed by another
// key, answering an earlier request, or made for another device), when the
// device asks, then it refuses the whole answer, saying why, and opens none
// of its keys.
func TestKeysRefusesAnAnswerItCannotTrust(t *testing.T) {
	cases := []struct {
		name  string
		setup func(d *Device, pc *playController)
		want  error
	}{
		{"signed by another key", func(d *Device, pc *playController) { pc.signer = newKey(t) }, ctlproto.ErrBundleSignature},
		{"replayed from an earlier request", func(d *Device, pc *playController) {
			r, err := d.Keys(t.Context(), []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Keys: true}})
			if err != nil {
				t.Fatal(err)
			}
			r.Clear()
			pc.replay = pc.sent[0]
		}, ctlproto.ErrReplay},
		{"for another device", func(d *Device, pc *playController) {
			pc.tamper = func(b *ctlproto.Bundle) { b.DeviceID = "gw-2" }
		}, ctlproto.ErrOtherDevice},
		{"signed but out of shape", func(d *Device, pc *playController) {
			pc.mangle = func(p []byte) []byte { return bytes.Replace(p, []byte(`"previous"`), []byte(`"previously"`), 1) }
		}, ctlproto.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, pc, tp := device(t)
			pc.answer = releaseAll(tp.srk, t, randomBytes(32), randomBytes(32))
			tc.setup(d, pc)
			r, err := d.Keys(t.Context(), []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Keys: true}})
			if !errors.Is(err, tc.want) || r != nil {
				t.Errorf("Keys = %+v, %v; want %v", r, err, tc.want)
			}
			t.Log(err)
		})
	}
}

func resign(t *testing.T, key *ecdsa.PrivateKey, payload []byte) *ctlproto.SignedBundle {
	t.Helper()
	// Sign as ctlproto.Sign does, over a payload it would refuse to make.
	h := sha256.New()
	h.Write([]byte(ctlproto.BundleDomain))
	h.Write(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, key, h.Sum(nil))
	if err != nil {
		t.Fatal(err)
	}
	return &ctlproto.SignedBundle{Payload: payload, Signature: sig}
}

// Given a bundle where one vault's key was sealed to another TPM, and
// another's holds a secret of the wrong size, when the device asks, then
// those vaults carry the error and no key from it, and the others open.
func TestAKeyThatDoesNotOpenIsThatVaultsError(t *testing.T) {
	d, pc, tp := device(t)
	other := startTPM(t)
	cur, prev := randomBytes(32), randomBytes(32)
	pc.answer = func(req *ctlproto.KeysRequest) *ctlproto.Bundle {
		b := releaseAll(tp.srk, t, cur, prev)(req)
		b.Vaults[0].Current.Sealed = sealTo(t, other.srk, cur)
		b.Vaults[1].Previous.Sealed = sealTo(t, tp.srk, randomBytes(16))
		return b
	}
	r, err := d.Keys(t.Context(), []ctlproto.VaultRequest{
		{UUID: uuidA, Name: "config", Keys: true},
		{UUID: uuidB, Name: "images", Keys: true},
		{UUID: uuidC, Name: "logs", Keys: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Clear()
	a, b, c := r.Vaults[uuidA], r.Vaults[uuidB], r.Vaults[uuidC]
	if !errors.Is(a.Err, tpm.ErrNotForThisTPM) || a.Current != nil || !strings.Contains(a.Err.Error(), "current controller key (version 2)") ||
		!bytes.Equal(a.Previous.Secret, prev) {
		t.Errorf("vault A: %+v", a)
	}
	if b.Err == nil || !strings.Contains(b.Err.Error(), "holds 16 bytes, not 32") || b.Previous != nil || !bytes.Equal(b.Current.Secret, cur) {
		t.Errorf("vault B: %+v", b)
	}
	if c.Err != nil || !bytes.Equal(c.Current.Secret, cur) || !bytes.Equal(c.Previous.Secret, prev) {
		t.Errorf("vault C: %+v", c)
	}
	t.Log(a.Err)
	t.Log(b.Err)
}

// A vault key sealed for escrow opens in this device's TPM, and in no other.
func TestSealForEscrowOpensOnlyInThisTPM(t *testing.T) {
	d, _, tp := device(t)
	key := randomBytes(EscrowKeySize)
	sealed, err := d.SealForEscrow(key)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, key) || len(sealed) > ctlproto.MaxSealed {
		t.Fatalf("%d bytes, the key in clear: %v", len(sealed), bytes.Contains(sealed, key))
	}
	imp, err := tpm.UnmarshalImportable(sealed)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec string
		want error
	}{{tp.spec, nil}, {startTPM(t).spec, tpm.ErrNotForThisTPM}} {
		tc2, err := tpm.Open(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tpm.OpenImported(tc2, imp)
		tc2.Close()
		switch {
		case tc.want == nil && (err != nil || !bytes.Equal(got, key)):
			t.Errorf("OpenImported in this TPM = %x, %v", got, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("OpenImported in another TPM: %v; want %v", err, tc.want)
		}
	}
}

// Given a vault key the device sealed for escrow, when the controller hands
// it back, then Keys opens it as the vault's escrowed key.
func TestAnEscrowedKeyComesBack(t *testing.T) {
	d, pc, _ := device(t)
	key := randomBytes(EscrowKeySize)
	sealed, err := d.SealForEscrow(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Report(t.Context(), &ctlproto.Report{Vaults: []ctlproto.VaultReport{{UUID: uuidA, KeyVersion: 1, Escrow: sealed}}}); err != nil {
		t.Fatal(err)
	}
	pc.answer = func(req *ctlproto.KeysRequest) *ctlproto.Bundle {
		return &ctlproto.Bundle{Attestation: ctlproto.AttestResult{Status: ctlproto.AttestVerified},
			Vaults: []ctlproto.VaultRelease{{UUID: uuidA, Status: ctlproto.Released, Escrow: pc.reports[0].Vaults[0].Escrow}}}
	}
	r, err := d.Keys(t.Context(), []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Escrow: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Clear()
	if a := r.Vaults[uuidA]; a.Err != nil || !bytes.Equal(a.Escrow, key) || a.Current != nil {
		t.Errorf("vault A: %+v", a)
	}
	if len(pc.challenges) != 1 || pc.requests[0].Quote == nil {
		t.Error("an escrowed key was asked for without a quote")
	}
}

// failing is a controller that cannot be reached.
type failing struct{ *playController }

func (failing) Keys(context.Context, *ctlproto.KeysRequest) (*ctlproto.SignedBundle, error) {
	return nil, fmt.Errorf("%w: dial tcp: connection refused", ErrUnreachable)
}

// Given a controller that cannot be reached, Keys says so (ErrUnreachable,
// so a caller may fall back to offline keys), and the TPM is closed: the
// next call opens it again.
func TestAnOutageStaysAnOutage(t *testing.T) {
	d, pc, tp := device(t)
	d.Transport = failing{pc}
	for range 2 {
		if _, err := d.Keys(t.Context(), []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Keys: true}}); !errors.Is(err, ErrUnreachable) {
			t.Errorf("Keys: %v; want ErrUnreachable", err)
		}
	}
	if tp.opens != 2 {
		t.Errorf("the TPM was opened %d times in 2 calls", tp.opens)
	}
}
