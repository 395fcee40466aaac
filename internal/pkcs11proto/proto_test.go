package pkcs11proto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

const goodRequest = `{"v":1,"op":"decrypt","module":"/usr/lib/p11.so","token_label":"dev","key_label":"k","pin_file":"/etc/edgeseal/pkcs11-pin","serial":"0a","iv":"AAAAAAAAAAAAAAAA","aad":"YQ==","data":"AAAA"}`

func TestRequestsAreCheckedStrictly(t *testing.T) {
	if _, err := ParseRequest([]byte(goodRequest)); err != nil {
		t.Fatalf("a good request: %v", err)
	}
	for _, tc := range []struct{ name, doc, says string }{
		{"another version", strings.Replace(goodRequest, `"v":1`, `"v":2`, 1), "version 2"},
		{"an unknown operation", strings.Replace(goodRequest, `"decrypt"`, `"export"`, 1), "unknown operation"},
		{"a relative module", strings.Replace(goodRequest, `"/usr/lib/p11.so"`, `"p11.so"`, 1), "module must be an absolute path"},
		{"two token names", strings.Replace(goodRequest, `"token_label":"dev"`, `"token_label":"dev","token_serial":"0a"`, 1), "exactly one"},
		{"no token name", strings.Replace(goodRequest, `"token_label":"dev",`, ``, 1), "exactly one"},
		{"a relative PIN file", strings.Replace(goodRequest, `"/etc/edgeseal/pkcs11-pin"`, `"pin"`, 1), "pin_file"},
		{"a short IV", strings.Replace(goodRequest, `"AAAAAAAAAAAAAAAA"`, `"AAAA"`, 1), "12-byte iv"},
		{"decrypt without serial", strings.Replace(goodRequest, `"serial":"0a",`, ``, 1), "serial"},
		{"an unknown field", strings.Replace(goodRequest, `"v":1`, `"v":1,"pin":"1234"`, 1), "unknown field"},
		{"trailing data", goodRequest + "{}", "after the JSON value"},
		{"a long key label", strings.Replace(goodRequest, `"key_label":"k"`, `"key_label":"`+strings.Repeat("k", 65)+`"`, 1), "longer than 64"},
	} {
		if _, err := ParseRequest([]byte(tc.doc)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.says)
		}
	}
}

func TestAnswersAreCheckedStrictly(t *testing.T) {
	for _, good := range []string{`{"v":1,"serial":"0a","data":"AAAA"}`, `{"v":1,"error":"wrong-pin","message":"CKR_PIN_INCORRECT"}`} {
		if _, err := ParseAnswer([]byte(good)); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
	for _, tc := range []struct{ name, doc, says string }{
		{"an unknown code", `{"v":1,"error":"oops","message":"m"}`, "unknown error code"},
		{"an error without message", `{"v":1,"error":"locked"}`, "needs a message"},
		{"an error with data", `{"v":1,"error":"locked","message":"m","data":"AAAA"}`, "needs a message and no data"},
		{"a message without error", `{"v":1,"message":"m"}`, "without an error"},
		{"too large", `{"v":1,"message":"` + strings.Repeat("m", MaxAnswerSize) + `"}`, "more than"},
		{"another version", `{"v":0}`, "version 0"},
	} {
		if _, err := ParseAnswer([]byte(tc.doc)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.says)
		}
	}
}

func FuzzParseAnswer(f *testing.F) {
	for _, s := range []string{`{"v":1,"serial":"0a","data":"AAAA"}`, `{"v":1,"error":"wrong-pin","message":"x"}`, `{}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAnswer(data)
		if err != nil {
			return
		}
		// What parses encodes to an answer that parses to the same.
		b, err := ParseAnswer(Marshal(a))
		if err != nil || b.Error != a.Error || b.Message != a.Message || b.Serial != a.Serial || !bytes.Equal(b.Data, a.Data) {
			t.Fatalf("%q parses as %+v, which does not round-trip: %+v, %v", data, a, b, err)
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(goodRequest))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRequest(data)
		if err != nil {
			return
		}
		if _, err := ParseRequest(Marshal(r)); err != nil {
			t.Fatalf("%q parses as %+v, which does not round-trip: %v", data, r, err)
		}
	})
}

// A message is cut to the bound at a character boundary, invalid UTF-8
// replaced, so that it survives JSON and ParseAnswer's bound.
func TestMessageIsValidUTF8WithinTheBound(t *testing.T) {
	for _, s := range []string{
		"short",
		"a" + strings.Repeat("€", MaxMessage),
		strings.Repeat("\xff", MaxMessage*2),
		strings.Repeat("<", MaxMessage*2),
	} {
		m := Message(s)
		if len(m) > MaxMessage || !utf8.ValidString(m) {
			t.Errorf("Message(%.8q...) = %d bytes, valid UTF-8 %v", s, len(m), utf8.ValidString(m))
		}
		a, err := ParseAnswer(Marshal(&Answer{V: Version, Error: CodeFailed, Message: m}))
		if err != nil || a.Message != m {
			t.Errorf("Message(%.8q...) does not round-trip: %v", s, err)
		}
	}
}

// The data key an answer carries is decoded into memory of its own: the
// caller clears it, and clearing the answer's bytes leaves it whole.
func TestAnAnswersDataIsNotTheBytesItWasParsedFrom(t *testing.T) {
	raw := Marshal(&Answer{V: Version, Serial: "s", Data: bytes.Repeat([]byte{7}, 32)})
	a, err := ParseAnswer(raw)
	if err != nil {
		t.Fatal(err)
	}
	clear(raw)
	if !bytes.Equal(a.Data, bytes.Repeat([]byte{7}, 32)) {
		t.Errorf("the data changed with the bytes parsed: %x", a.Data)
	}
}
