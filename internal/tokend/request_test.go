package tokend

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/edgeseal/edgeseal/tokenclient"
)

func TestParseRequestAcceptsOneLineOfVersionOneJSON(t *testing.T) {
	for _, tc := range []struct{ line, service string }{
		{`{"v":1}` + "\n", ""},
		{`{"v":1,"service":"app-one"}` + "\n", "app-one"},
		{` { "service" : "a_b-9", "v" : 1 } ` + "\n", "a_b-9"},
	} {
		req, err := ParseRequest([]byte(tc.line))
		if err != nil {
			t.Fatalf("ParseRequest(%q): %v", tc.line, err)
		}
		if req.V != 1 || req.Service != tc.service {
			t.Errorf("ParseRequest(%q) = %+v, want service %q", tc.line, req, tc.service)
		}
	}
}

func TestParseRequestRefusesWhatIsNotExactlyARequest(t *testing.T) {
	for _, tc := range []struct{ name, line, want string }{
		{"no newline", `{"v":1}`, "one line"},
		{"two lines", `{"v":1}` + "\n" + `{"v":1}` + "\n", "one line"},
		{"unknown field", `{"v":1,"token":"x"}` + "\n", "unknown field"},
		{"wrong version", `{"v":2}` + "\n", "protocol version 2"},
		{"no version", `{}` + "\n", "protocol version 0"},
		{"two values", `{"v":1}{"v":1}` + "\n", "data after the JSON value"},
		{"not an object", `"v"` + "\n", "bad request"},
		{"bad service name", `{"v":1,"service":"../root"}` + "\n", "not a service name"},
		{"upper-case service", `{"v":1,"service":"App"}` + "\n", "not a service name"},
		{"too long", `{"v":1,"service":"` + strings.Repeat("a", tokenclient.MaxRequestSize) + `"}` + "\n", "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRequest([]byte(tc.line))
			if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseRequest(%q) = %v, want ErrBadRequest mentioning %q", tc.line, err, tc.want)
			}
		})
	}
}

func TestReadRequestStopsAtTheSizeBound(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 10*tokenclient.MaxRequestSize)
	if _, err := readRequest(bytes.NewReader(big)); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("readRequest(10 KiB without newline) = %v, want a size refusal", err)
	}
	if _, err := readRequest(strings.NewReader(`{"v":1}`)); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "ended before") {
		t.Fatalf("readRequest(no newline, EOF) = %v, want an early-EOF refusal", err)
	}
	req, err := readRequest(strings.NewReader(`{"v":1,"service":"x"}` + "\n" + "trailing garbage"))
	if err != nil || req.Service != "x" {
		t.Fatalf("readRequest(line + more) = %+v, %v; want the first line only", req, err)
	}
}

func TestARequestMayAskForTheServicesCertificate(t *testing.T) {
	req, err := ParseRequest([]byte(`{"v":1,"service":"orders","cert":true}` + "\n"))
	if err != nil || !req.Cert || req.Service != "orders" {
		t.Fatalf("ParseRequest = %+v, %v; want a certificate of orders", req, err)
	}
	if _, err := ParseRequest([]byte(`{"v":1,"cert":"yes"}` + "\n")); !errors.Is(err, ErrBadRequest) {
		t.Errorf("cert as a string: %v, want ErrBadRequest", err)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{`{"v":1}` + "\n", `{"v":1,"cert":true}` + "\n", `{"v":1,"service":"app-one"}` + "\n", `{"v":1,"service":""}` + "\n", "\n", `{"v":1e400}` + "\n", `{"v":1,"v":2}` + "\n"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := ParseRequest(line)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v is not ErrBadRequest", err)
			}
			if req != (tokenclient.Request{}) {
				t.Fatalf("a refused request returned %+v", req)
			}
			return
		}
		if req.V != tokenclient.ProtocolVersion {
			t.Fatalf("accepted version %d", req.V)
		}
		if req.Service != "" && !validServiceName(req.Service) {
			t.Fatalf("accepted service name %q", req.Service)
		}
		if !utf8.Valid([]byte(req.Service)) || len(line) > tokenclient.MaxRequestSize || line[len(line)-1] != '\n' {
			t.Fatalf("accepted %q", line)
		}
		// Reading it from a stream gives the same request.
		back, err := readRequest(bytes.NewReader(line))
		if err != nil || back != req {
			t.Fatalf("readRequest(%q) = %+v, %v; ParseRequest gave %+v", line, back, err, req)
		}
	})
}
