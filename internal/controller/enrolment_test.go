package controller

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/paths"
)

var update = flag.Bool("update", false, "write testdata/enrolment-v1.json again (a new format version needs a new file, never this)")

const (
	fixture  = "testdata/enrolment-v1.json"
	fixture2 = "testdata/enrolment-v2.json" // the v1 fixture's, with two URLs
)

func TestMain(m *testing.M) {
	flag.Parse()
	if *update {
		if err := os.WriteFile(fixture, makeFixture(), 0o644); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

// makeFixture is a version 1 enrolment as Enrol writes it.
func makeFixture() []byte {
	t := &testing.T{}
	ca := newTestCA(t, "controller CA")
	signer := newKey(t)
	pub, _ := ctlproto.MarshalPublicKey(&signer.PublicKey)
	e := &Enrolment{URLs: []string{"https://controller.example:8443"}, DeviceID: "plant7-gw-01", CA: string(ca.PEM),
		SigningKey: pub, ClientCert: string(ca.issue(t, "plant7-gw-01", &newKey(t).PublicKey, false)),
		Enrolled: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}
	return e.Marshal()
}

// The version 1 enrolment file keeps parsing, field for field, and encodes
// back byte for byte.
func TestVersion1EnrolmentKeepsParsing(t *testing.T) {
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseEnrolment(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.URLs) != 1 || e.URLs[0] != "https://controller.example:8443" || e.DeviceID != "plant7-gw-01" ||
		!e.Enrolled.Equal(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("parsed %+v", e)
	}
	if c, err := e.ClientCertificate(); err != nil || c.Subject.CommonName != "plant7-gw-01" {
		t.Errorf("client certificate: %v, %v", c, err)
	}
	if out := e.Marshal(); !bytes.Equal(out, data) {
		t.Errorf("encodes back as\n%s\nnot\n%s", out, data)
	}
}

// The version 2 enrolment file (a controller fleet's replicas) keeps
// parsing and encodes back byte for byte; an enrolment that has one URL
// again is written as version 1.
func TestVersion2EnrolmentKeepsParsingAndOneURLIsVersion1(t *testing.T) {
	data, err := os.ReadFile(fixture2)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseEnrolment(data)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.URLs, []string{"https://controller-a.example:8443", "https://controller-b.example:8443"}) || e.DeviceID != "plant7-gw-01" {
		t.Errorf("parsed %+v", e)
	}
	if out := e.Marshal(); !bytes.Equal(out, data) {
		t.Errorf("encodes back as\n%s\nnot\n%s", out, data)
	}
	e.URLs = []string{"https://controller.example:8443"}
	if v1, _ := os.ReadFile(fixture); !bytes.Equal(e.Marshal(), v1) {
		t.Errorf("one URL encodes as\n%s\nnot as version 1", e.Marshal())
	}
}

// An enrolment out of shape is ErrBadEnrolment, saying what is wrong.
func TestEnrolmentOutOfShapeIsBad(t *testing.T) {
	good, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(from, to string) []byte {
		if !bytes.Contains(good, []byte(from)) {
			t.Fatalf("the fixture lacks %q", from)
		}
		return bytes.Replace(good, []byte(from), []byte(to), 1)
	}
	reshape := func(f func(e *Enrolment)) []byte {
		e, err := ParseEnrolment(good)
		if err != nil {
			t.Fatal(err)
		}
		f(e)
		return e.Marshal()
	}
	other := newTestCA(t, "another CA")
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no JSON value"},
		{"another format", edit(`"edgeseal-controller-enrolment"`, `"edgeseal-fsvault"`), `format is "edgeseal-fsvault"`},
		{"a newer version", edit(`"version": 1`, `"version": 3`), "version 3: this build reads versions 1 and 2"},
		{"version 2 naming one url", edit(`"version": 1`, `"version": 2`), `version 2 has "urls", not "url"`},
		{"version 1 naming urls", edit(`"url": "https://controller.example:8443"`, `"urls": ["https://controller.example:8443"]`), `version 1 has "url", not "urls"`},
		{"version 2 with one of its urls", reshape(func(e *Enrolment) { e.URLs = []string{e.URLs[0], e.URLs[0]} }), "named twice"},
		{"version 2 with a url out of shape", reshape(func(e *Enrolment) { e.URLs = append(e.URLs, "http://b") }), "not https"},
		{"more urls than a device takes", reshape(func(e *Enrolment) {
			for i := range MaxURLs {
				e.URLs = append(e.URLs, fmt.Sprintf("https://replica-%d", i))
			}
		}), "urls: 17, 1 to 16"},
		{"an unknown field", edit(`"url"`, `"colour": 1, "url"`), "unknown field"},
		{"two values", append(bytes.Clone(good), good...), "data after the JSON value"},
		{"too big", append(bytes.Repeat([]byte(" "), maxEnrolment), good...), "more than"},
		{"plain http", edit(`"https://controller`, `"http://controller`), "not https"},
		{"a query in the url", edit(`:8443"`, `:8443?x=1"`), "no user, query or fragment"},
		{"a user in the url", edit(`https://controller`, `https://me@controller`), "no user, query or fragment"},
		{"a trailing slash", edit(`:8443"`, `:8443/"`), "not in its normal form"},
		{"a bad device id", reshape(func(e *Enrolment) { e.DeviceID = "Plant 7" }), "not a device id"},
		{"a certificate for another device", reshape(func(e *Enrolment) { e.DeviceID = "plant7-gw-02" }), `not the device id "plant7-gw-02"`},
		{"a CA that is a key", reshape(func(e *Enrolment) { e.CA = e.SigningKey }), "ca: not PEM CERTIFICATE blocks only"},
		{"no CA", reshape(func(e *Enrolment) { e.CA = "" }), "ca: no PEM CERTIFICATE"},
		{"a CA bundle with garbage after it", reshape(func(e *Enrolment) { e.CA += "garbage" }), "ca: not PEM CERTIFICATE blocks only"},
		{"a signing key that is a certificate", reshape(func(e *Enrolment) { e.SigningKey = e.ClientCert }), "signing_key"},
		{"two client certificates", reshape(func(e *Enrolment) { e.ClientCert += e.ClientCert }), "client_cert: not one PEM CERTIFICATE"},
		{"a client certificate that is a CA's", reshape(func(e *Enrolment) { e.ClientCert = string(other.PEM) }), "client_cert"},
		{"no enrolment time", reshape(func(e *Enrolment) { e.Enrolled = time.Time{} }), "enrolled: missing"},
		{"a control character", reshape(func(e *Enrolment) { e.SigningKey += "\x01" }), "control character"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseEnrolment(tc.data)
			if !errors.Is(err, ErrBadEnrolment) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseEnrolment: %v; want ErrBadEnrolment with %q", err, tc.want)
			}
		})
	}
}

// No enrolment is ErrNotEnrolled, naming the command to run; one written is
// private to root and reads back as written.
func TestEnrolmentIsWrittenPrivateAndLoadsBack(t *testing.T) {
	p := paths.New(t.TempDir())
	if _, err := LoadEnrolment(p); !errors.Is(err, ErrNotEnrolled) || !strings.Contains(err.Error(), "edgeseal controller enrol") {
		t.Errorf("LoadEnrolment with none: %v", err)
	}
	want, err := ParseEnrolment(mustRead(t, fixture))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeEnrolment(p, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadEnrolment(p)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("LoadEnrolment = %+v, %v", got, err)
	}
	for path, mode := range map[string]os.FileMode{p.Controller: 0o700 | os.ModeDir, p.Enrolment: 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode(), err, mode)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(p.Controller, ".*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	// A corrupt file names itself and says what to do.
	writeFile(t, p.Enrolment, "{}")
	if _, err := LoadEnrolment(p); !errors.Is(err, ErrBadEnrolment) || !strings.Contains(err.Error(), p.Enrolment) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("LoadEnrolment of a corrupt file: %v", err)
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Enrol refuses, before anything is sent or the TPM touched, to replace an
// enrolment, or to start with a URL, CA or token out of shape.
func TestEnrolChecksEverythingLocalFirst(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	token := strings.Repeat("tok3n", 5)
	enrolledP := paths.New(t.TempDir())
	if err := writeEnrolment(enrolledP, mustParse(t, mustRead(t, fixture))); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		p     paths.Paths
		url   string
		ca    []byte
		token string
		want  string
	}{
		{"an existing enrolment", enrolledP, "https://127.0.0.1:1", ca.PEM, token, "already enrolled"},
		{"plain http", paths.New(t.TempDir()), "http://127.0.0.1:1", ca.PEM, token, "not https"},
		{"no CA", paths.New(t.TempDir()), "https://127.0.0.1:1", nil, token, "no PEM CERTIFICATE"},
		{"a short token", paths.New(t.TempDir()), "https://127.0.0.1:1", ca.PEM, "short", "not an enrolment token"},
		{"a token with a space", paths.New(t.TempDir()), "https://127.0.0.1:1", ca.PEM, token + " x", "not an enrolment token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A nil TPM: touching it would panic.
			_, err := Enrol(t.Context(), tc.p, nil, []string{tc.url}, tc.ca, tc.token, time.Second)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Enrol: %v; want %q", err, tc.want)
			}
			if tc.want == "already enrolled" && !strings.Contains(err.Error(), "edgeseal controller enrol --force") {
				t.Errorf("Enrol: %v; want the --force hint", err)
			}
		})
	}
}

func mustParse(t testing.TB, data []byte) *Enrolment {
	t.Helper()
	e, err := ParseEnrolment(data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// ParseEnrolment never panics, and what it accepts encodes back to what
// parses the same.
func FuzzParseEnrolment(f *testing.F) {
	good, err := os.ReadFile(fixture)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	if v2, err := os.ReadFile(fixture2); err == nil {
		f.Add(v2)
	}
	f.Add([]byte(`{"format":"edgeseal-controller-enrolment","version":1}`))
	f.Add([]byte(`{"format":"edgeseal-controller-enrolment","version":2,"urls":["https://a","https://a/"]}`))
	f.Add([]byte(`{"format":"edgeseal-controller-enrolment","version":1,"url":"https://a","ca":"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEnrolment(data)
		if err != nil {
			if !errors.Is(err, ErrBadEnrolment) {
				t.Fatalf("error not ErrBadEnrolment: %v", err)
			}
			return
		}
		again, err := ParseEnrolment(e.Marshal())
		if err != nil {
			t.Fatalf("what parsed does not parse once encoded: %v", err)
		}
		a, _ := json.Marshal(e)
		b, _ := json.Marshal(again)
		if !bytes.Equal(a, b) {
			t.Fatalf("changed on the way: %s / %s", a, b)
		}
	})
}
