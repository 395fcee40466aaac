package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type inner struct {
	N int               `json:"n"`
	M map[string]string `json:"m,omitempty"`
}

type sample struct {
	A  int      `json:"a"`
	S  string   `json:"s,omitempty"`
	B  bool     `json:"b,omitempty"`
	F  float64  `json:"f,omitempty"`
	L  []string `json:"l,omitempty"`
	In *inner   `json:"in,omitempty"`
	By []byte   `json:"by,omitempty"`
}

func TestDecodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     error // a sentinel, or nil for a *json.SyntaxError
		text     string
	}{
		// The bug: Decoder.More says false before ']' and '}'.
		{"a trailing ] after the object", `{"a":1}]`, ErrTrailingData, "at byte 7"},
		{"a trailing } after the object", `{"a":1}}`, ErrTrailingData, "at byte 7"},
		{"a trailing } after whitespace", "{\"a\":1}\n }", ErrTrailingData, "at byte 9"},
		{"a second object", `{"a":1}{"a":2}`, ErrTrailingData, "at byte 7"},
		{"a trailing letter", `{"a":1}x`, ErrTrailingData, "at byte 7"},
		{"a trailing NUL", "{\"a\":1}\x00", ErrTrailingData, "at byte 7"},
		{"a trailing vertical tab, not JSON whitespace", "{\"a\":1}\v", ErrTrailingData, "at byte 7"},
		{"an unknown field", `{"a":1,"zz":2}`, ErrUnknownField, `unknown field "zz"`},
		{"an unknown nested field", `{"in":{"n":1,"q":2}}`, ErrUnknownField, `unknown field "q"`},
		{"nothing", ``, ErrEmpty, "no JSON value"},
		{"only whitespace", " \n\t", ErrEmpty, "no JSON value"},
		{"more than the limit", `{"a":1,"s":"` + strings.Repeat("x", 64) + `"}`, ErrTooLarge, "more than 64"},
		{"a truncated object", `{"a":1`, nil, "ends early"},
		{"invalid JSON", `{"a":1,,}`, nil, "at byte 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v sample
			err := Decode([]byte(tc.in), 64, &v)
			var syn *json.SyntaxError
			switch {
			case err == nil:
				t.Fatalf("Decode(%q) accepted it: %+v", tc.in, v)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Errorf("Decode(%q) = %v, want %v", tc.in, err, tc.want)
			case tc.want == nil && !errors.As(err, &syn) && !strings.Contains(err.Error(), "ends early"):
				t.Errorf("Decode(%q) = %v (%T), want a syntax error", tc.in, err, err)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Decode(%q) = %q, want it to say %q", tc.in, err, tc.text)
			}
		})
	}
}

func TestDecodeNamesTheFieldOfAWrongType(t *testing.T) {
	var v sample
	err := Decode([]byte(`{"a":"one"}`), 64, &v)
	var typ *json.UnmarshalTypeError
	if !errors.As(err, &typ) || !strings.Contains(err.Error(), "field a at byte") {
		t.Fatalf("Decode = %v, want a type error naming field a", err)
	}
}

func TestDecodeAcceptsOneValueAndWhitespace(t *testing.T) {
	for _, in := range []string{`{"a":1}`, " {\"a\":1}\r\n\t ", `{"a":1,"in":{"n":2}}`} {
		var v sample
		if err := Decode([]byte(in), 64, &v); err != nil || v.A != 1 {
			t.Errorf("Decode(%q) = %+v, %v; want a = 1", in, v, err)
		}
	}
}

// FuzzDecode: whatever Decode accepts re-encodes to a value it decodes to the
// same, and with any byte but whitespace appended it is refused.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1}]`, `{"a":1}}`, `{"s":"x","l":["a"],"in":{"n":1,"m":{"k":"v"}}}`,
		`{"f":1e3,"b":true,"by":"AAE="}`, `null`, ` {} `, `{"a":1}{}`, `[]`} {
		f.Add([]byte(s), byte(']'))
	}
	f.Fuzz(func(t *testing.T, data []byte, extra byte) {
		const limit = 1 << 16
		var v sample
		if err := Decode(data, limit, &v); err != nil {
			return
		}
		enc, err := json.Marshal(&v)
		if err != nil {
			t.Fatalf("cannot re-encode %+v: %v", v, err)
		}
		var w sample
		if err := Decode(enc, limit, &w); err != nil {
			t.Fatalf("the re-encoding %q of accepted %q is refused: %v", enc, data, err)
		}
		if enc2, _ := json.Marshal(&w); !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not stable: %q then %q", enc, enc2)
		}
		if isSpace(rune(extra)) {
			return
		}
		for _, in := range [][]byte{append(bytes.Clone(data), extra), append(bytes.Clone(enc), extra)} {
			if err := Decode(in, limit+1, new(sample)); err == nil {
				t.Fatalf("Decode(%q) accepted a value followed by %q", in, extra)
			}
		}
		for _, c := range []byte("]}") {
			if err := Decode(append(bytes.Clone(data), c), limit+1, new(sample)); !errors.Is(err, ErrTrailingData) {
				t.Fatalf("Decode of %q with %q appended = %v, want ErrTrailingData", data, c, err)
			}
		}
	})
}

// An input may hold a secret where a value or a name belongs (a file
// corrupted, or forged): no error quotes it.
func TestNoErrorQuotesAValueOfTheInput(t *testing.T) {
	type withTime struct {
		At time.Time `json:"at"`
		N  int       `json:"n"`
		S  string    `json:"s"`
	}
	const secret = "hvs.S3cretT0ken"
	for name, in := range map[string]string{
		"a secret as a time":           `{"at":"` + secret + `"}`,
		"a secret as a field name":     `{"` + secret + `":1}`,
		"a secret-like lower-case key": `{"` + "abc.def" + `":1}`,
		"a number where a string is":   `{"s":12345678901234567}`,
		"a string where a number is":   `{"n":"` + secret + `"}`,
		"a bare number":                `12345678901234567`,
	} {
		var v withTime
		err := Decode([]byte(in), 1024, &v)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, leak := range []string{secret, "12345678901234567", "abc.def"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("%s: the error quotes the input: %v", name, err)
			}
		}
	}
	// A type error is still one for errors.As, naming the field.
	var typ *json.UnmarshalTypeError
	if err := Decode([]byte(`{"n":"x"}`), 64, &withTime{}); !errors.As(err, &typ) || !strings.Contains(err.Error(), "field n") {
		t.Errorf("a string for a number: %v, want a type error naming field n", err)
	}
}
