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
	"strings"
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
// offset) or a *json.UnmarshalTypeError (naming the field); their text never
// quotes a value of the input, only field names and offsets.
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
	switch {
	case errors.Is(err, io.EOF):
		return ErrEmpty
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("invalid JSON: it ends early at byte %d (truncated?): %w", size, err)
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at byte %d: %w", syn.Offset, err)
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Errorf("field %s at byte %d: %w", typ.Field, typ.Offset, err)
	case errors.As(err, &typ):
		return fmt.Errorf("at byte %d: %w", typ.Offset, err)
	}
	// encoding/json reports an unknown field as a plain error,
	// `json: unknown field "NAME"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("%w %s", ErrUnknownField, name)
	}
	return err
}
