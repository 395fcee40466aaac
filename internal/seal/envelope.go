package seal

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// EnvelopeVersion is the only envelope layout this edgeseal reads and writes. New
// methods may be added under it; changing the fields, the AAD or the KDF of an
// existing method takes a new version (see docs/sealed-blob.md).
const EnvelopeVersion = 1

// Limits of the envelope. A sealed blob is a few hundred bytes; the bounds keep a
// damaged or hostile file from costing more than a small, fixed amount of memory.
const (
	// maxEnvelopeSize bounds the whole blob.
	maxEnvelopeSize = 64 << 10
	// maxSecretSize bounds what Seal accepts, so that every blob Seal writes stays
	// well within maxEnvelopeSize once base64-encoded.
	maxSecretSize = 16 << 10
	// saltSize is the HKDF salt of ikm-hook blobs.
	saltSize = 32
	// nonceSize is the AES-GCM nonce of ikm-hook blobs.
	nonceSize = 12
	// maxTPM2Size bounds the TPM sealed object's binary form.
	maxTPM2Size = 4096
	// tagSize is the AES-GCM authentication tag that ends the ciphertext.
	tagSize = 16
)

// Envelope is a parsed sealed blob. Which byte fields are set depends on Method:
// ikm-hook has Salt, Nonce and Ciphertext; none has Secret; tpm2 has TPM2;
// pkcs11 has Nonce, Ciphertext, Token and Wrapped. ParseEnvelope
// guarantees exactly those are set and have valid lengths.
type Envelope struct {
	Version int
	Method  string

	// ikm-hook
	Salt       []byte // HKDF salt, saltSize bytes
	Nonce      []byte // AES-GCM nonce, nonceSize bytes
	Ciphertext []byte // AES-GCM ciphertext followed by its tag

	// none
	Secret []byte // the secret, in clear

	TPM2 []byte // tpm2: the TPM sealed object, in its binary form (internal/tpm)

	// pkcs11 has Nonce and Ciphertext (the secret under the data key) and:
	Token   []byte // the serial number of the token, 1 to maxSerialSize bytes
	Wrapped []byte // the token's AES-GCM of the data key: IV, ciphertext, tag
}

// wireEnvelope is the JSON form of Envelope. Its field order is the key order of
// the canonical encoding: do not reorder.
type wireEnvelope struct {
	Version    int    `json:"version"`
	Method     string `json:"method"`
	Salt       string `json:"salt,omitempty"`
	Nonce      string `json:"nonce,omitempty"`
	Ciphertext string `json:"ciphertext,omitempty"`
	Secret     string `json:"secret,omitempty"`
	TPM2       string `json:"tpm2,omitempty"`
	Token      string `json:"token,omitempty"`
	Wrapped    string `json:"wrapped,omitempty"`
}

// only refuses the fields of w that method does not have.
func (w *wireEnvelope) only(method string, names ...string) error {
	for _, f := range [...]struct{ name, value string }{{"salt", w.Salt}, {"nonce", w.Nonce}, {"ciphertext", w.Ciphertext},
		{"secret", w.Secret}, {"tpm2", w.TPM2}, {"token", w.Token}, {"wrapped", w.Wrapped}} {
		if f.value != "" && !slices.Contains(names, f.name) {
			return corrupt("field %s does not belong to method %s", f.name, method)
		}
	}
	return nil
}

// Marshal returns the canonical encoding of e: one line of compact JSON with the
// keys in a fixed order and standard, padded base64, then a newline. ParseEnvelope
// accepts exactly these bytes and no other spelling of the same envelope.
func (e *Envelope) Marshal() []byte {
	w := wireEnvelope{
		Version:    e.Version,
		Method:     e.Method,
		Salt:       encodeField(e.Salt),
		Nonce:      encodeField(e.Nonce),
		Ciphertext: encodeField(e.Ciphertext),
		Secret:     encodeField(e.Secret),
		TPM2:       encodeField(e.TPM2),
		Token:      encodeField(e.Token),
		Wrapped:    encodeField(e.Wrapped),
	}
	out, err := json.Marshal(w)
	if err != nil {
		// Only ints and plain strings: json.Marshal cannot fail on them.
		panic("internal error: cannot encode sealed blob: " + err.Error())
	}
	return append(out, '\n')
}

// ParseEnvelope parses a sealed blob strictly: it must be at most maxEnvelopeSize
// bytes, of a version and a method this edgeseal knows, have exactly the fields of
// its method with valid base64 and lengths, and be in the canonical encoding that
// Marshal writes. Every failure wraps ErrCorrupt with the reason.
func ParseEnvelope(data []byte) (*Envelope, error) {
	if len(data) > maxEnvelopeSize {
		return nil, corrupt("it is %d bytes, more than the %d a sealed blob may have", len(data), maxEnvelopeSize)
	}
	// The header first, leniently, so that a blob of another version is reported
	// as such rather than as a field this version does not know.
	var h struct {
		Version *int    `json:"version"`
		Method  *string `json:"method"`
	}
	if len(data) == 0 {
		return nil, corrupt("it is empty")
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, corrupt("%s", jsonReason(err, len(data)))
	}
	switch {
	case h.Version == nil:
		return nil, corrupt("it has no version")
	case *h.Version > EnvelopeVersion:
		return nil, corrupt("its version %d is newer than this edgeseal reads (%d): it was written by a newer edgeseal", *h.Version, EnvelopeVersion)
	case *h.Version != EnvelopeVersion:
		return nil, corrupt("its version %d is not supported (this edgeseal reads version %d)", *h.Version, EnvelopeVersion)
	case h.Method == nil:
		return nil, corrupt("it has no method")
	case *h.Method != MethodIKMHook && *h.Method != MethodNone && *h.Method != MethodTPM2 && *h.Method != MethodPKCS11:
		return nil, corrupt("its method %q is not one this edgeseal knows (%s, %s, %s, %s)", *h.Method, MethodIKMHook, MethodTPM2, MethodPKCS11, MethodNone)
	}

	var w wireEnvelope
	if err := strictjson.Decode(data, maxEnvelopeSize, &w); err != nil {
		return nil, corrupt("%s", jsonReason(err, len(data)))
	}

	e := &Envelope{Version: w.Version, Method: w.Method}
	var err error
	switch e.Method {
	case MethodIKMHook:
		if err := w.only(e.Method, "salt", "nonce", "ciphertext"); err != nil {
			return nil, err
		}
		if e.Salt, err = decodeField("salt", w.Salt, saltSize, saltSize); err != nil {
			return nil, err
		}
		if e.Nonce, err = decodeField("nonce", w.Nonce, nonceSize, nonceSize); err != nil {
			return nil, err
		}
		if e.Ciphertext, err = decodeField("ciphertext", w.Ciphertext, 1+tagSize, maxSecretSize+tagSize); err != nil {
			return nil, err
		}
	case MethodTPM2:
		if err := w.only(e.Method, "tpm2"); err != nil {
			return nil, err
		}
		if e.TPM2, err = decodeField("tpm2", w.TPM2, 1, maxTPM2Size); err != nil {
			return nil, err
		}
	case MethodPKCS11:
		if err := w.only(e.Method, "nonce", "ciphertext", "token", "wrapped"); err != nil {
			return nil, err
		}
		if e.Nonce, err = decodeField("nonce", w.Nonce, nonceSize, nonceSize); err != nil {
			return nil, err
		}
		if e.Ciphertext, err = decodeField("ciphertext", w.Ciphertext, 1+tagSize, maxSecretSize+tagSize); err != nil {
			return nil, err
		}
		if e.Token, err = decodeField("token", w.Token, 1, maxSerialSize); err != nil {
			return nil, err
		}
		if e.Wrapped, err = decodeField("wrapped", w.Wrapped, wrappedSize, wrappedSize); err != nil {
			return nil, err
		}
	case MethodNone:
		if err := w.only(e.Method, "secret"); err != nil {
			return nil, err
		}
		if e.Secret, err = decodeField("secret", w.Secret, 1, maxSecretSize); err != nil {
			return nil, err
		}
	}

	// Keys differing only in case, duplicate keys, whitespace, escapes, a missing
	// final newline: the decoder forgives them all, edgeseal does not. A sealed blob
	// has one spelling, so no change to its bytes goes unnoticed.
	if !bytes.Equal(e.Marshal(), data) {
		return nil, corrupt("it is not in the canonical form edgeseal writes (one line of compact JSON, keys in order, a final newline)")
	}
	return e, nil
}

// parseFor parses blob and checks that it was sealed by method.
func parseFor(method string, blob []byte) (*Envelope, error) {
	e, err := ParseEnvelope(blob)
	if err != nil {
		return nil, err
	}
	if e.Method != method {
		return nil, fmt.Errorf("%w: it was sealed with method %s, but this sealer is %s; set seal.method to %s or restore the blob sealed with %s",
			ErrWrongMethod, e.Method, method, e.Method, method)
	}
	return e, nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// jsonReason describes a decoding error without quoting the blob's values: a
// SyntaxError names at most one character and a type error names only the field.
// size is the length of the input.
func jsonReason(err error, size int) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn) && syn.Offset >= int64(size):
		return "it ends early (truncated?)"
	case errors.As(err, &syn):
		return fmt.Sprintf("it is not valid JSON (error at byte %d)", syn.Offset)
	case errors.As(err, &typ) && typ.Field == "":
		return "it is not a JSON object"
	case errors.As(err, &typ):
		return fmt.Sprintf("its field %s has the wrong type", typ.Field)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, strictjson.ErrEmpty):
		return "it ends early (truncated?)"
	case errors.Is(err, strictjson.ErrTrailingData):
		return "it has data after the JSON object"
	}
	// An unknown field error names the field, which is one of the blob's keys.
	return "it has an " + strings.TrimPrefix(err.Error(), "json: ")
}

func encodeField(b []byte) string {
	return base64.StdEncoding.EncodeToString(b)
}

// decodeField decodes the standard, padded base64 of a field and checks that its
// length is within [minLen, maxLen].
func decodeField(name, s string, minLen, maxLen int) ([]byte, error) {
	if s == "" {
		return nil, corrupt("field %s is missing", name)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, corrupt("field %s is not valid base64", name)
	}
	switch {
	case minLen == maxLen && len(b) != minLen:
		return nil, corrupt("field %s is %d bytes, want %d", name, len(b), minLen)
	case len(b) < minLen:
		return nil, corrupt("field %s is %d bytes, want at least %d", name, len(b), minLen)
	case len(b) > maxLen:
		return nil, corrupt("field %s is %d bytes, want at most %d", name, len(b), maxLen)
	}
	return b, nil
}
