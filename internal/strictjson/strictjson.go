// Package strictjson is edgeseal's one strict JSON decoder, for every input
// that crosses a trust boundary or that edgeseal reads back from disk: a
// request on the token socket, a controller message, an enrolment, a vault's
// metadata, a sealed envelope, a recovery copy, a quote.
//
// Strict means exactly one JSON value, no field the Go type does not name,
// nothing after the value but JSON whitespace, and no more bytes than the
// caller allows. encoding/json's Decoder.More, which the callers used before,
// reports false for a trailing ']' or '}', so `{"v":1}]` passed as one value;
// this package checks every byte after the value instead.
//
// It imports nothing of edgeseal's.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrTooLarge: the input is longer than the caller's limit.
	ErrTooLarge = errors.New("too large")
	// ErrEmpty: the input holds no JSON value, only whitespace or nothing.
	ErrEmpty = errors.New("no JSON value")
	// ErrUnknownField: an object has a field the Go type does not name.
	ErrUnknownField = errors.New("unknown field")
	// ErrTrailingData: something other than whitespace follows the value.
	ErrTrailingData = errors.New("data after the JSON value")
)

// Decode decodes data, at most limit bytes, into v, strictly. Its errors wrap
// one of the package's sentinels, or a *json.SyntaxError (naming the byte
// offset) or a *json.UnmarshalTypeError (naming the field). Their text never
// quotes a value of the input: a syntax error names at most one character,
// a type error the field and the JSON kind found (not the number or string),
// an unknown field its name only when it reads as a field name (see
// fieldName), a value a type refused to parse (a time) only the field's
// offset. An input may hold a secret that a corruption moved where a value
// or a name is expected, and errors reach the journal.
func Decode(data []byte, limit int, v any) error {
	if len(data) > limit {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(data), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describe(err, len(data))
	}
	off := dec.InputOffset()
	if i := bytes.IndexFunc(data[off:], func(r rune) bool { return !isSpace(r) }); i >= 0 {
		return fmt.Errorf("%w at byte %d", ErrTrailingData, off+int64(i))
	}
	return nil
}

// isSpace is JSON's whitespace (RFC 8259, section 2).
func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

func describe(err error, size int) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tim *time.ParseError
	switch {
	case errors.Is(err, io.EOF):
		return ErrEmpty
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("invalid JSON: it ends early at byte %d (truncated?): %w", size, err)
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at byte %d: %w", syn.Offset, err)
	case errors.As(err, &typ):
		return typeError{typ}
	case errors.As(err, &tim):
		return errors.New("invalid JSON: a value is not a time as RFC 3339 writes it")
	}
	// encoding/json reports an unknown field as a plain error,
	// `json: unknown field "NAME"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if n, err := strconv.Unquote(name); err == nil && fieldName(n) {
			return fmt.Errorf("%w %q", ErrUnknownField, n)
		}
		return fmt.Errorf("%w (its name is not shown: it does not read as a field name)", ErrUnknownField)
	}
	return err
}

// fieldName tells whether an unknown field's name may be shown: lower-case
// letters, digits and underscores, as every field of edgeseal's formats, at
// most 40 of them; a token or a key (mixed case, dots, slashes, padding) is
// not one.
func fieldName(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// typeError is a *json.UnmarshalTypeError (errors.As finds it) whose text
// names the field, the offset and the kind of JSON value found, never the
// value: encoding/json's own text quotes a number it found.
type typeError struct{ err *json.UnmarshalTypeError }

func (e typeError) Error() string {
	kind, _, _ := strings.Cut(e.err.Value, " ")
	want := "another type"
	if e.err.Type != nil {
		want = e.err.Type.String()
	}
	if e.err.Field == "" {
		return fmt.Sprintf("at byte %d: a JSON %s where %s belongs", e.err.Offset, kind, want)
	}
	return fmt.Sprintf("field %s at byte %d: a JSON %s where %s belongs", e.err.Field, e.err.Offset, kind, want)
}

func (e typeError) Unwrap() error { return e.err }
