// Package pkcs11proto is the protocol between the pkcs11 sealer (package seal,
// in edgeseal-unseal and the edgeseal CLI, both static) and edgeseal-pkcs11,
// the one cgo helper that loads a vendor's PKCS#11 module. The sealer runs the
// helper as a child for each operation: one Request on its stdin, one Answer
// on its stdout, both one object of strict JSON within fixed bounds. The
// helper reads the PIN from the request's PIN file itself, so the PIN is never
// in an argv, an environment or this pipe.
//
// The token does one thing: AES-GCM (CKM_AES_GCM) of a 32-byte data key with
// a non-extractable AES key of its own. Everything else (the envelope, the
// additional data, the secret's own encryption) is the sealer's.
package pkcs11proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// Version is the protocol's version, the "v" of every request and answer.
const Version = 1

// Operations of a Request.
const (
	// OpEncrypt encrypts Data with the key (AES-GCM, IV, AAD, 128-bit tag) and
	// answers the ciphertext followed by its tag, and the token's serial.
	OpEncrypt = "encrypt"
	// OpDecrypt checks that the token's serial is Serial, then decrypts Data.
	OpDecrypt = "decrypt"
	// OpGenerate makes the key: a token object, sensitive, not extractable,
	// AES-256, labelled KeyLabel (for device builders and tests; the sealer
	// never sends it).
	OpGenerate = "generate"
)

// Error codes of an Answer. The sealer maps each to one of its sentinels.
const (
	CodeModule      = "module"       // the module cannot be loaded or initialised
	CodeTokenAbsent = "token-absent" // no token with that label or serial
	CodeKeyAbsent   = "key-absent"   // no AES key with that label in the token
	CodeWrongPIN    = "wrong-pin"    // CKR_PIN_INCORRECT
	CodeLocked      = "locked"       // CKR_PIN_LOCKED
	CodeWrongDevice = "wrong-device" // another token, or the key does not open the data
	CodePINFile     = "pin-file"     // the PIN file cannot be read or is not a PIN
	CodeFailed      = "failed"       // anything else the token said
)

// ErrMalformed: a request or an answer that is not one of this protocol's,
// within its bounds. Every parse error wraps it.
var ErrMalformed = errors.New("malformed PKCS#11 helper message")

// Limits. A request carries a 32-byte key or its 48-byte ciphertext; the
// bounds keep a confused peer from costing more than a small, fixed amount.
const (
	MaxRequestSize = 8 << 10
	MaxAnswerSize  = 8 << 10
	// MaxLabel bounds a label or serial (PKCS#11 labels are 32 bytes, serials 16).
	MaxLabel = 64
	// MaxData bounds Data both ways.
	MaxData = 1024
	// MaxPath bounds the module and PIN file paths.
	MaxPath = 4096
	// MaxMessage bounds an answer's message: escaped for JSON (6 bytes a
	// control character at most), it leaves an answer within MaxAnswerSize.
	MaxMessage = 1024
	// IVSize is the AES-GCM IV the sealer sends; TagBits its tag.
	IVSize  = 12
	TagBits = 128
)

// Request is one operation on the token. Exactly one of TokenLabel and
// TokenSerial names the token.
type Request struct {
	V           int    `json:"v"`
	Op          string `json:"op"`
	Module      string `json:"module"`
	TokenLabel  string `json:"token_label,omitempty"`
	TokenSerial string `json:"token_serial,omitempty"`
	KeyLabel    string `json:"key_label"`
	PINFile     string `json:"pin_file"`
	// Serial (decrypt): the serial of the token that encrypted Data.
	Serial string `json:"serial,omitempty"`
	IV     []byte `json:"iv,omitempty"`
	AAD    []byte `json:"aad,omitempty"`
	Data   []byte `json:"data,omitempty"`
}

// Answer is the helper's reply: Error empty and the result, or an error code
// and a message for the operator (never a secret).
type Answer struct {
	V       int    `json:"v"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
	// Serial is the serial number of the token used.
	Serial string `json:"serial,omitempty"`
	Data   []byte `json:"data,omitempty"`
}

// Marshal encodes a request or an answer: one line of JSON, with <, > and &
// as they are (they are no HTML's, and escaping them would grow a message).
func Marshal(v any) []byte {
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("internal error: cannot encode a PKCS#11 helper message: " + err.Error())
	}
	return out.Bytes()
}

// Message returns s as an answer's message: valid UTF-8 (each invalid byte
// becomes U+FFFD, as JSON would make it) cut at a character boundary to at
// most MaxMessage bytes.
func Message(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= MaxMessage {
		return s
	}
	n := MaxMessage
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ParseRequest decodes and checks a request strictly.
func ParseRequest(data []byte) (*Request, error) {
	var r Request
	if err := strictjson.Decode(data, MaxRequestSize, &r); err != nil {
		return nil, fmt.Errorf("cannot read the request: %w: %w", ErrMalformed, err)
	}
	switch {
	case r.V != Version:
		return nil, fmt.Errorf("cannot read the request: %w: version %d, want %d", ErrMalformed, r.V, Version)
	case r.Op != OpEncrypt && r.Op != OpDecrypt && r.Op != OpGenerate:
		return nil, fmt.Errorf("cannot read the request: %w: unknown operation %q", ErrMalformed, r.Op)
	case r.Module == "" || len(r.Module) > MaxPath || r.Module[0] != '/':
		return nil, fmt.Errorf("cannot read the request: %w: module must be an absolute path", ErrMalformed)
	case (r.TokenLabel == "") == (r.TokenSerial == ""):
		return nil, fmt.Errorf("cannot read the request: %w: name the token by exactly one of token_label and token_serial", ErrMalformed)
	case len(r.TokenLabel) > MaxLabel || len(r.TokenSerial) > MaxLabel || len(r.KeyLabel) > MaxLabel || len(r.Serial) > MaxLabel:
		return nil, fmt.Errorf("cannot read the request: %w: a label or serial is longer than %d bytes", ErrMalformed, MaxLabel)
	case r.KeyLabel == "":
		return nil, fmt.Errorf("cannot read the request: %w: key_label is empty", ErrMalformed)
	case r.PINFile == "" || len(r.PINFile) > MaxPath || r.PINFile[0] != '/':
		return nil, fmt.Errorf("cannot read the request: %w: pin_file must be an absolute path", ErrMalformed)
	case len(r.Data) > MaxData || len(r.AAD) > MaxData:
		return nil, fmt.Errorf("cannot read the request: %w: data or aad longer than %d bytes", ErrMalformed, MaxData)
	}
	switch r.Op {
	case OpEncrypt, OpDecrypt:
		if len(r.IV) != IVSize || len(r.Data) == 0 {
			return nil, fmt.Errorf("cannot read the request: %w: %s needs a %d-byte iv and data", ErrMalformed, r.Op, IVSize)
		}
		if r.Op == OpDecrypt && r.Serial == "" {
			return nil, fmt.Errorf("cannot read the request: %w: decrypt needs the serial of the token that encrypted", ErrMalformed)
		}
	case OpGenerate:
		if len(r.IV) != 0 || len(r.Data) != 0 || len(r.AAD) != 0 || r.Serial != "" {
			return nil, fmt.Errorf("cannot read the request: %w: generate takes no iv, aad, data or serial", ErrMalformed)
		}
	}
	return &r, nil
}

// ParseAnswer decodes and checks an answer strictly.
func ParseAnswer(data []byte) (*Answer, error) {
	var a Answer
	if err := strictjson.Decode(data, MaxAnswerSize, &a); err != nil {
		return nil, fmt.Errorf("cannot read the answer: %w: %w", ErrMalformed, err)
	}
	switch {
	case a.V != Version:
		return nil, fmt.Errorf("cannot read the answer: %w: version %d, want %d", ErrMalformed, a.V, Version)
	case len(a.Message) > MaxMessage || len(a.Serial) > MaxLabel || len(a.Data) > MaxData:
		return nil, fmt.Errorf("cannot read the answer: %w: a field is too long", ErrMalformed)
	case a.Error == "" && a.Message != "":
		return nil, fmt.Errorf("cannot read the answer: %w: a message without an error", ErrMalformed)
	case a.Error != "" && (len(a.Data) != 0 || a.Message == ""):
		return nil, fmt.Errorf("cannot read the answer: %w: an error needs a message and no data", ErrMalformed)
	}
	switch a.Error {
	case "", CodeModule, CodeTokenAbsent, CodeKeyAbsent, CodeWrongPIN, CodeLocked, CodeWrongDevice, CodePINFile, CodeFailed:
	default:
		return nil, fmt.Errorf("cannot read the answer: %w: unknown error code %q", ErrMalformed, a.Error)
	}
	return &a, nil
}
