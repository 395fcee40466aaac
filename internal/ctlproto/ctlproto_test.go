package ctlproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

const uuid1 = "6b1f9f5e-3c1a-4e7b-9a52-0d4c2f7e8a11"

func nonce(b byte) []byte { return bytes.Repeat([]byte{b}, NonceSize) }

func goodBundle() *Bundle {
	return &Bundle{Version: Version, DeviceID: "edge-1", RequestNonce: nonce(1), Issued: time.Date(2026, 11, 30, 21, 0, 0, 0, time.UTC),
		Attestation: AttestResult{Status: AttestVerified},
		Vaults:      []VaultRelease{{UUID: uuid1, Status: Released, Current: &Key{Version: 2, Sealed: []byte{1}}, Previous: &Key{Version: 1, Sealed: []byte{2}}}}}
}

// A bundle is used only if the enrolled controller signed it, for this
// device, in answer to this request.
func TestABundleIsCheckedBeforeUse(t *testing.T) {
	key, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSigningKey()
	sb, err := Sign(key, goodBundle())
	if err != nil {
		t.Fatal(err)
	}
	if b, err := OpenBundle(sb, &key.PublicKey, "edge-1", nonce(1)); err != nil || b.Vaults[0].Current.Version != 2 {
		t.Fatalf("a good bundle: %+v, %v", b, err)
	}
	flipped := &SignedBundle{Payload: bytes.Clone(sb.Payload), Signature: sb.Signature}
	flipped.Payload[10] ^= 1
	cases := []struct {
		name   string
		sb     *SignedBundle
		signer bool // signed by another key
		device string
		nonce  []byte
		want   error
	}{
		{"another signer", sb, true, "edge-1", nonce(1), ErrBundleSignature},
		{"a byte changed", flipped, false, "edge-1", nonce(1), ErrBundleSignature},
		{"another request (replayed)", sb, false, "edge-1", nonce(2), ErrReplay},
		{"another device", sb, false, "edge-2", nonce(1), ErrOtherDevice},
		{"no signature", &SignedBundle{Payload: sb.Payload}, false, "edge-1", nonce(1), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pub := &key.PublicKey
			if tc.signer {
				pub = &other.PublicKey
			}
			if _, err := OpenBundle(tc.sb, pub, tc.device, tc.nonce); !errors.Is(err, tc.want) {
				t.Errorf("OpenBundle: %v, want %v", err, tc.want)
			}
		})
	}
}

// Messages out of shape are ErrMalformed, naming the field.
func TestMessagesOutOfShapeAreRefused(t *testing.T) {
	cases := []struct {
		name string
		msg  Message
		data string
		want string
	}{
		{"an unknown field", &KeysRequest{}, `{"request_nonce":"` + b64(nonce(1)) + `","vaults":[],"extra":1}`, "unknown field"},
		{"two values", &ChallengeRequest{}, `{}{}`, "data after the JSON value"},
		{"a short nonce", &KeysRequest{}, `{"request_nonce":"AAAA","vaults":[{"uuid":"` + uuid1 + `","name":"a","keys":true}]}`, "request_nonce: 3 bytes"},
		{"no vault", &KeysRequest{}, `{"request_nonce":"` + b64(nonce(1)) + `","vaults":[]}`, "vaults: 0"},
		{"a vault asking nothing", &KeysRequest{}, `{"request_nonce":"` + b64(nonce(1)) + `","vaults":[{"uuid":"` + uuid1 + `","name":"a"}]}`, "asks for neither"},
		{"a repeated vault", &Report{}, `{"vaults":[{"uuid":"` + uuid1 + `"},{"uuid":"` + uuid1 + `"}]}`, "repeated"},
		{"an unknown unlock method", &Report{}, `{"vaults":[{"uuid":"` + uuid1 + `","unlocked":"magic"}]}`, `unlocked "magic"`},
		{"a PCR out of range", &Challenge{}, `{"nonce":"` + b64(nonce(1)) + `","pcrs":[24],"expires":"2026-11-30T21:00:00Z"}`, "pcrs: 24"},
		{"a claim name", &Challenge{}, `{"nonce":"` + b64(nonce(1)) + `","pcrs":[7],"claims":["Loc"],"expires":"2026-11-30T21:00:00Z"}`, `"Loc" is not a claim name`},
		{"a control character", &ErrorBody{}, `{"error":"a\u0007b"}`, "control character"},
		{"a withheld vault with keys", &Bundle{}, bundleWith(func(b *Bundle) { b.Vaults[0].Status = Withheld }), "withheld, yet with keys"},
		{"a current key without a previous", &Bundle{}, bundleWith(func(b *Bundle) { b.Vaults[0].Previous = nil }), "with no previous"},
		{"a previous after the current", &Bundle{}, bundleWith(func(b *Bundle) { b.Vaults[0].Previous.Version = 3 }), "is after current"},
		{"another protocol version", &Bundle{}, bundleWith(func(b *Bundle) { b.Version = 2 }), "this device speaks 1"},
		{"an unknown attestation status", &Bundle{}, bundleWith(func(b *Bundle) { b.Attestation.Status = "fine" }), `"fine" is unknown`},
		{"too large", &ErrorBody{}, `{"error":"` + strings.Repeat("x", MaxBody) + `"}`, "more than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Unmarshal([]byte(tc.data), tc.msg)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Unmarshal: %v; want ErrMalformed with %q", err, tc.want)
			}
		})
	}
}

func b64(b []byte) string {
	out, _ := json.Marshal(b)
	return strings.Trim(string(out), `"`)
}

func bundleWith(edit func(*Bundle)) string {
	b := goodBundle()
	edit(b)
	out, _ := json.Marshal(b)
	return string(out)
}

// Every message a peer sends is decoded without panicking, and what decodes
// is in shape.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(0), []byte(bundleWith(func(*Bundle) {})))
	f.Add(uint8(1), []byte(`{"request_nonce":"`+b64(nonce(1))+`","vaults":[{"uuid":"`+uuid1+`","name":"a","keys":true,"escrow":true}]}`))
	f.Add(uint8(2), []byte(`{"vaults":[{"uuid":"`+uuid1+`","name":"a","key_version":2,"escrow":"AQID","unlocked":"tpm"}]}`))
	f.Add(uint8(3), []byte(`{"nonce":"`+b64(nonce(1))+`","pcrs":[7,16],"claims":["location"],"expires":"2026-11-30T21:00:00Z"}`))
	f.Add(uint8(4), []byte(`{"payload":"e30=","signature":"AQID"}`))
	f.Add(uint8(5), []byte(`{"token":"abcdefghijklmnopqrstuvwxyz","nonce":"`+b64(nonce(1))+`","enrolment":{},"quote":{"nonce":"`+b64(nonce(1))+`","attest_data":"AQ==","signature":"AQ==","pcr_values":[{"index":7,"hash_algo":"sha256","value":"`+b64(nonce(2))+`"}]},"client_key":"x"}`))
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		msgs := []func() Message{
			func() Message { return &Bundle{} }, func() Message { return &KeysRequest{} }, func() Message { return &Report{} },
			func() Message { return &Challenge{} }, func() Message { return &SignedBundle{} }, func() Message { return &EnrolRequest{} },
			func() Message { return &Enrolled{} }, func() Message { return &EnrolNonce{} }, func() Message { return &ErrorBody{} },
		}
		m := msgs[int(kind)%len(msgs)]()
		if err := Unmarshal(data, m); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that is not ErrMalformed: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded, yet out of shape: %v", err)
		}
	})
}
