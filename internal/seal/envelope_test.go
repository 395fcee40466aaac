package seal

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// Canonical blobs built from the documented layout; the byte fields are base64 of
// 32 bytes of 'A' (salt), 12 of 'N' (nonce), 18 of 'C' (ciphertext), 4 of 'S'.
const (
	b64Salt   = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
	b64Nonce  = "Tk5OTk5OTk5OTk5O"
	b64CT     = "Q0NDQ0NDQ0NDQ0NDQ0NDQ0ND"
	b64Secret = "U1NTUw=="
	validIKM  = `{"version":1,"method":"ikm-hook","salt":"` + b64Salt + `","nonce":"` + b64Nonce + `","ciphertext":"` + b64CT + `"}` + "\n"
	validNone = `{"version":1,"method":"none","secret":"` + b64Secret + `"}` + "\n"
)

func TestParseEnvelopeAcceptsCanonicalBlobs(t *testing.T) {
	e, err := ParseEnvelope([]byte(validIKM))
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != 1 || e.Method != MethodIKMHook || !bytes.Equal(e.Salt, bytes.Repeat([]byte("A"), 32)) ||
		!bytes.Equal(e.Nonce, bytes.Repeat([]byte("N"), 12)) || !bytes.Equal(e.Ciphertext, bytes.Repeat([]byte("C"), 18)) || e.Secret != nil {
		t.Errorf("ikm-hook envelope parsed as %+v", e)
	}
	if got := string(e.Marshal()); got != validIKM {
		t.Errorf("ikm-hook envelope marshals as %q, want %q", got, validIKM)
	}

	e, err = ParseEnvelope([]byte(validNone))
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != 1 || e.Method != MethodNone || string(e.Secret) != "SSSS" || e.Salt != nil || e.Nonce != nil || e.Ciphertext != nil {
		t.Errorf("none envelope parsed as %+v", e)
	}
	if got := string(e.Marshal()); got != validNone {
		t.Errorf("none envelope marshals as %q, want %q", got, validNone)
	}
}

func TestParseEnvelopeRejects(t *testing.T) {
	ikm := func(old, new string) string { return strings.Replace(validIKM, old, new, 1) }
	for _, tc := range []struct {
		name string
		blob string
		want string // in the error message
	}{
		{"an empty file", "", "it is empty"},
		{"a truncated blob", validNone[:20], "ends early"},
		{"a blob over the size limit", validIKM[:len(validIKM)-2] + strings.Repeat(" ", maxEnvelopeSize) + "}\n", "more than the 65536"},
		{"something that is not JSON", "sealed\n", "not valid JSON"},
		{"a JSON array", "[1]\n", "not a JSON object"},
		{"a blob without version", `{"method":"none","secret":"` + b64Secret + `"}` + "\n", "no version"},
		{"version 0", strings.Replace(validNone, `"version":1`, `"version":0`, 1), "version 0 is not supported"},
		{"a newer version", strings.Replace(validNone, `"version":1`, `"version":2`, 1), "newer edgeseal"},
		{"a version that is a string", strings.Replace(validNone, `"version":1`, `"version":"1"`, 1), "field version has the wrong type"},
		{"a version that is a float", strings.Replace(validNone, `"version":1`, `"version":1.0`, 1), "wrong type"},
		{"a blob without method", `{"version":1,"secret":"` + b64Secret + `"}` + "\n", "no method"},
		{"an unknown method", strings.Replace(validNone, `"none"`, `"rot13"`, 1), `method "rot13" is not one`},
		{"a tpm2 blob with a none blob's field", strings.Replace(validNone, `"none"`, `"tpm2"`, 1), "field secret does not belong to method tpm2"},
		{"a method this build does not know", strings.Replace(validNone, `"none"`, `"tpm3"`, 1), `method "tpm3" is not one`},
		{"an unknown field", strings.Replace(validNone, `}`, `,"comment":"x"}`, 1), `unknown field "comment"`},
		{"a missing salt", ikm(`"salt":"`+b64Salt+`",`, ""), "field salt is missing"},
		{"a missing nonce", ikm(`"nonce":"`+b64Nonce+`",`, ""), "field nonce is missing"},
		{"a missing ciphertext", ikm(`,"ciphertext":"`+b64CT+`"`, ""), "field ciphertext is missing"},
		{"a missing secret", `{"version":1,"method":"none"}` + "\n", "field secret is missing"},
		{"a short salt", ikm(b64Salt, "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"), "field salt is 30 bytes, want 32"},
		{"a long nonce", ikm(b64Nonce, "Tk5OTk5OTk5OTk5OTk5O"), "field nonce is 15 bytes, want 12"},
		{"a ciphertext shorter than a tag and one byte", ikm(b64CT, "Q0NDQ0NDQ0NDQ0NDQ0ND"), "field ciphertext is 15 bytes, want at least 17"},
		{"a salt that is not base64", ikm(b64Salt, "!!!!"+b64Salt[4:]), "field salt is not valid base64"},
		{"unpadded base64", strings.Replace(validNone, b64Secret, "U1NTUw", 1), "field secret is not valid base64"},
		{"base64 with non-zero padding bits", strings.Replace(validNone, b64Secret, "U1NTUx==", 1), "field secret is not valid base64"},
		{"base64 with an escaped newline", strings.Replace(validNone, b64Secret, `U1NT\nUw==`, 1), "canonical"},
		{"URL-safe base64", ikm(b64Salt, strings.Repeat("_", 43)+"="), "field salt is not valid base64"},
		{"a secret in an ikm-hook blob", ikm(`"}`, `","secret":"`+b64Secret+`"}`), "field secret does not belong to method ikm-hook"},
		{"a salt in a none blob", strings.Replace(validNone, `"secret"`, `"salt":"`+b64Salt+`","secret"`, 1), "field salt does not belong to method none"},
		{"an empty secret", strings.Replace(validNone, b64Secret, "", 1), "field secret is missing"},
		{"a key in another case", strings.Replace(validNone, `"secret"`, `"Secret"`, 1), "canonical"},
		{"a duplicate key", strings.Replace(validNone, `"secret"`, `"secret":"QQ==","secret"`, 1), "canonical"},
		{"keys out of order", `{"method":"none","version":1,"secret":"` + b64Secret + `"}` + "\n", "canonical"},
		{"extra whitespace", strings.Replace(validNone, `,`, `, `, 1), "canonical"},
		{"no final newline", strings.TrimSuffix(validNone, "\n"), "canonical"},
		{"two final newlines", validNone + "\n", "canonical"},
		{"an escaped character in the method", strings.Replace(validNone, `"none"`, `"\u006eone"`, 1), "canonical"},
		{"data after the object", validNone + "{}\n", "not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseEnvelope([]byte(tc.blob))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestParseEnvelopeAcceptsBlobAtSizeLimit(t *testing.T) {
	// The largest secret Seal takes must make a blob ParseEnvelope reads.
	n, err := NewNone(true, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := n.Seal(t.Context(), bytes.Repeat([]byte{0xff}, maxSecretSize))
	if err != nil {
		t.Fatal(err)
	}
	if len(blob) > maxEnvelopeSize {
		t.Fatalf("largest none blob is %d bytes, over the limit", len(blob))
	}
	if _, err := ParseEnvelope(blob); err != nil {
		t.Fatal(err)
	}
	h, _ := memSealer("0123456789abcdef")
	blob, err = h.Seal(t.Context(), bytes.Repeat([]byte{0xff}, maxSecretSize))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseEnvelope(blob); err != nil {
		t.Fatal(err)
	}
}

func TestSealRefusesSecretsNoBlobCanHold(t *testing.T) {
	n, _ := NewNone(true, func(string) {})
	h, _ := memSealer("0123456789abcdef")
	for _, s := range []Sealer{n, h} {
		if _, err := s.Seal(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "secret is empty") {
			t.Errorf("%s: sealing an empty secret: %v", s.Method(), err)
		}
		if _, err := s.Seal(t.Context(), make([]byte, maxSecretSize+1)); err == nil || !strings.Contains(err.Error(), "more than the 16384") {
			t.Errorf("%s: sealing an oversized secret: %v", s.Method(), err)
		}
	}
}
