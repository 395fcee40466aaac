package refctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

const (
	alpha = "0b5e2a3c-1d4f-4a6b-8c9d-0e1f2a3b4c5d"
	beta  = "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910"
)

func TestTheServerAnswersOnlyPOSTsOfWellFormedMessages(t *testing.T) {
	testTheServerAnswersOnlyPOSTsOfWellFormedMessages(t, newCtl)
}

func testTheServerAnswersOnlyPOSTsOfWellFormedMessages(t *testing.T, mk mkCtl) {
	c := mk(t, Options{})
	cases := []struct {
		name   string
		do     func() (int, []byte)
		status int
		want   string
	}{{
		// A path ctlproto does not define.
		"unknown path", func() (int, []byte) { return c.post(c.client, "/v1/nope", []byte("{}")) },
		http.StatusNotFound, "no such path",
	}, {
		"GET", func() (int, []byte) {
			r, err := c.client.Get(c.base + ctlproto.PathChallenge)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Body.Close()
			if r.Header.Get("Allow") != "POST" {
				t.Errorf("GET: Allow %q", r.Header.Get("Allow"))
			}
			var e ctlproto.ErrorBody
			json.NewDecoder(r.Body).Decode(&e)
			b, _ := json.Marshal(e)
			return r.StatusCode, b
		},
		http.StatusMethodNotAllowed, "only POST",
	}, {
		// Strict decoding: a field the protocol does not have.
		"unknown field", func() (int, []byte) { return c.post(c.client, ctlproto.PathChallenge, []byte(`{"x":1}`)) },
		http.StatusBadRequest, `unknown field "x"`,
	}, {
		"a field out of shape", func() (int, []byte) {
			return c.post(c.client, ctlproto.PathKeys, []byte(`{"request_nonce":"AAAA","vaults":[]}`))
		},
		http.StatusBadRequest, "request_nonce: 3 bytes",
	}, {
		"a body over the bound", func() (int, []byte) {
			return c.post(c.client, ctlproto.PathReport, []byte(`{"vaults":[`+strings.Repeat(" ", ctlproto.MaxBody)+`]}`))
		},
		http.StatusBadRequest, "malformed",
	}, {
		// The device paths need the certificate from enrolment.
		"no client certificate", func() (int, []byte) { return c.post(c.anon, ctlproto.PathChallenge, []byte("{}")) },
		http.StatusUnauthorized, "client certificate",
	}, {
		"an enrolment token never issued", func() (int, []byte) {
			return c.post(c.anon, ctlproto.PathEnrolNonce, []byte(`{"token":"`+strings.Repeat("a", 43)+`"}`))
		},
		http.StatusUnauthorized, "not one this controller issued",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := tc.do()
			if status != tc.status {
				t.Errorf("status %d, want %d (%s)", status, tc.status, body)
			}
			if msg := errorOf(t, body); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to say %q", msg, tc.want)
			}
		})
	}
}

func TestKeysAreReleasedSealedAndFollowTheDevicesReports(t *testing.T) {
	testKeysAreReleasedSealedAndFollowTheDevicesReports(t, newCtl)
}

func testKeysAreReleasedSealedAndFollowTheDevicesReports(t *testing.T, mk mkCtl) {
	c := mk(t, Options{})
	a := ctlproto.VaultRequest{UUID: alpha, Name: "alpha", Attestation: true, Keys: true}
	b := ctlproto.VaultRequest{UUID: beta, Name: "beta", Keys: true}

	got := c.keys(a, b)
	if got.Attestation.Status != ctlproto.AttestRequired {
		t.Errorf("attestation %+v, want required", got.Attestation)
	}
	ra, rb := got.Vaults[0], got.Vaults[1]
	if ra.Status != ctlproto.Withheld || ra.Reason != "awaiting attestation: "+reasonNeedQuote {
		t.Errorf("alpha: %s %q", ra.Status, ra.Reason)
	}
	if rb.Status != ctlproto.Released || rb.Current.Version != 1 || rb.Previous.Version != 1 {
		t.Fatalf("beta: %+v", rb)
	}
	if _, err := tpm.UnmarshalImportable(rb.Current.Sealed); err != nil {
		t.Errorf("beta's key is not sealed for a TPM: %v", err)
	}

	// The flag is the controller's record: a device cannot lower it.
	a.Attestation = false
	if r := c.keys(a).Vaults[0]; r.Status != ctlproto.Withheld {
		t.Errorf("alpha asked without attestation: %s, want still withheld", r.Status)
	}

	// Rotation waits for the device to report the version it is at.
	if _, err := c.ctl.Rotate(context.Background(), testDevice, "beta"); err != nil {
		t.Fatal(err)
	}
	if r := c.keys(b).Vaults[0]; r.Current.Version != 1 {
		t.Errorf("rotated before the device reported version 1: current %d", r.Current.Version)
	}
	c.report(ctlproto.VaultReport{UUID: beta, KeyVersion: 1})
	b.KeyVersion = 1
	r := c.keys(b).Vaults[0]
	if r.Current.Version != 2 || r.Previous.Version != 1 {
		t.Errorf("after the report: current %d previous %d, want 2 and 1", r.Current.Version, r.Previous.Version)
	}
	// Reports of versions not kept, or of vaults not known, change nothing.
	c.report(ctlproto.VaultReport{UUID: beta, KeyVersion: 7}, ctlproto.VaultReport{UUID: "00000000-0000-4000-8000-000000000000", KeyVersion: 1})
	if v := c.device().Vaults[beta]; v.Acked != 1 || len(v.Keys) != 2 {
		t.Errorf("after a bogus report: acked %d, %d keys", v.Acked, len(v.Keys))
	}
	c.report(ctlproto.VaultReport{UUID: beta, KeyVersion: 2, Unlocked: "controller-key"})
	v := c.device().Vaults[beta]
	if v.Acked != 2 || len(v.Keys) != 1 || v.Keys[0].Version != 2 || v.LastUnlock != "controller-key" {
		t.Errorf("after the rotation: %+v", v)
	}
	b.KeyVersion = 2
	if r := c.keys(b).Vaults[0]; r.Current.Version != 2 || r.Previous.Version != 2 {
		t.Errorf("after the rotation: current %d previous %d", r.Current.Version, r.Previous.Version)
	}
}

func TestRotationByAgeNeverGoesTwoVersionsAheadOfTheDevice(t *testing.T) {
	testRotationByAgeNeverGoesTwoVersionsAheadOfTheDevice(t, newCtl)
}

func testRotationByAgeNeverGoesTwoVersionsAheadOfTheDevice(t *testing.T, mk mkCtl) {
	c := mk(t, Options{RotateEvery: time.Hour})
	b := ctlproto.VaultRequest{UUID: beta, Name: "beta", Keys: true}
	c.keys(b)
	c.clock.Add(2 * time.Hour)
	if r := c.keys(b).Vaults[0]; r.Current.Version != 1 {
		t.Errorf("rotated before the device reported: %d", r.Current.Version)
	}
	c.report(ctlproto.VaultReport{UUID: beta, KeyVersion: 1})
	if r := c.keys(b).Vaults[0]; r.Current.Version != 2 {
		t.Errorf("an old key, acked: current %d, want 2", r.Current.Version)
	}
	c.clock.Add(2 * time.Hour)
	if r := c.keys(b).Vaults[0]; r.Current.Version != 2 {
		t.Errorf("the device has not moved to 2: current %d, want still 2", r.Current.Version)
	}
}

func TestAStolenDeviceIsToldWhyAndOnlyItsUnlocksAreRecorded(t *testing.T) {
	testAStolenDeviceIsToldWhyAndOnlyItsUnlocksAreRecorded(t, newCtl)
}

func testAStolenDeviceIsToldWhyAndOnlyItsUnlocksAreRecorded(t *testing.T, mk mkCtl) {
	c := mk(t, Options{})
	b := ctlproto.VaultRequest{UUID: beta, Name: "beta", Keys: true}
	c.keys(b)
	if err := c.ctl.Revoke(context.Background(), testDevice, true); err != nil {
		t.Fatal(err)
	}
	if r := c.keys(b).Vaults[0]; r.Status != ctlproto.Withheld || r.Reason != reasonStolen {
		t.Errorf("stolen: %s %q", r.Status, r.Reason)
	}
	c.report(ctlproto.VaultReport{UUID: beta, KeyVersion: 1, Unlocked: "tpm"})
	if v := c.device().Vaults[beta]; v.Acked != 0 || v.LastUnlock != "tpm" {
		t.Errorf("a stolen device's report: acked %d, last unlock %q", v.Acked, v.LastUnlock)
	}
}

// The most vaults a request may name fit in one signed answer that a device
// accepts (ctlproto.MaxVaults is chosen so).
func TestTheLargestRequestFitsInOneAnswer(t *testing.T) {
	testTheLargestRequestFitsInOneAnswer(t, newCtl)
}

func testTheLargestRequestFitsInOneAnswer(t *testing.T, mk mkCtl) {
	c := mk(t, Options{})
	var vaults []ctlproto.VaultRequest
	for i := range ctlproto.MaxVaults {
		vaults = append(vaults, ctlproto.VaultRequest{UUID: fmt.Sprintf("00000000-0000-4000-8000-%012x", i), Name: fmt.Sprintf("v%d", i), Keys: true})
	}
	body, _ := json.Marshal(&ctlproto.KeysRequest{RequestNonce: make([]byte, 32), Vaults: vaults})
	status, out := c.post(c.client, ctlproto.PathKeys, body)
	if status != http.StatusOK {
		t.Fatalf("%d vaults: %d %.200s", len(vaults), status, out)
	}
	var sb ctlproto.SignedBundle
	if err := ctlproto.Unmarshal(out, &sb); err != nil {
		t.Fatalf("%d vaults: the answer does not decode: %v", len(vaults), err)
	}
	var b ctlproto.Bundle
	if err := ctlproto.Unmarshal(sb.Payload, &b); err != nil || len(b.Vaults) != len(vaults) {
		t.Fatalf("%d vaults: the bundle: %v, %d vaults", len(vaults), err, len(b.Vaults))
	}
	t.Logf("%d vaults: a payload of %d bytes (at most %d)", len(vaults), len(sb.Payload), ctlproto.MaxBody/2)
}

func TestChallengesAreBoundedAndExpire(t *testing.T) { testChallengesAreBoundedAndExpire(t, newCtl) }

func testChallengesAreBoundedAndExpire(t *testing.T, mk mkCtl) {
	c := mk(t, Options{})
	for range maxChallenges + 6 {
		if status, out := c.post(c.client, ctlproto.PathChallenge, []byte("{}")); status != http.StatusOK {
			t.Fatalf("challenge: %d %s", status, out)
		}
	}
	if n := len(c.device().Challenges); n != maxChallenges {
		t.Errorf("%d challenges kept, want %d", n, maxChallenges)
	}
	c.clock.Add(nonceLifetime)
	c.post(c.client, ctlproto.PathChallenge, []byte("{}"))
	if n := len(c.device().Challenges); n != 1 {
		t.Errorf("%d challenges kept after they expired, want 1", n)
	}
}

func TestTheLogNamesDevicesAndVerdictsNeverSecrets(t *testing.T) {
	testTheLogNamesDevicesAndVerdictsNeverSecrets(t, newCtl)
}

func testTheLogNamesDevicesAndVerdictsNeverSecrets(t *testing.T, mk mkCtl) {
	c := mk(t, Options{})
	tok, err := c.ctl.AddDevice(context.Background(), "edge-8", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	status, out := c.post(c.anon, ctlproto.PathEnrolNonce, []byte(`{"token":"`+tok+`"}`))
	if status != http.StatusOK {
		t.Fatalf("enrol nonce: %d %s", status, out)
	}
	var n ctlproto.EnrolNonce
	if err := ctlproto.Unmarshal(out, &n); err != nil || !slices.Equal(n.PCRs, DefaultPCRs) {
		t.Fatalf("enrol nonce: %v %v", n.PCRs, err)
	}
	status, out = c.post(c.client, ctlproto.PathChallenge, []byte("{}"))
	var ch ctlproto.Challenge
	if status != http.StatusOK || ctlproto.Unmarshal(out, &ch) != nil {
		t.Fatalf("challenge: %d %s", status, out)
	}
	log := c.log.String()
	for what, secret := range map[string]string{"token": tok, "enrolment nonce": hexOf(n.Nonce), "challenge nonce": hexOf(ch.Nonce)} {
		if strings.Contains(log, secret) {
			t.Errorf("the log holds the %s", what)
		}
	}
	for _, want := range []string{"listening on 127.0.0.1:", "device=edge-8", "enrolment nonce issued", "device=edge-7", "challenge issued"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
}
