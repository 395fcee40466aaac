package controller

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// The enrolment file (paths.Enrolment, described in docs/controller.md):
// JSON headed by its format and version. Version 1 names one controller URL
// ("url"); version 2 names the replicas of a controller fleet ("urls"). An
// enrolment with one URL is written as version 1, so a device that never had
// a fleet stays readable by an older edgeseal.
const (
	EnrolmentFormat = "edgeseal-controller-enrolment"
	// EnrolmentVersion is the newest version this build reads and writes.
	EnrolmentVersion = 2
	// maxEnrolment bounds the enrolment file: a CA bundle and two PEM blocks.
	maxEnrolment = 64 << 10
	// maxCA bounds the controller's CA bundle (the enrolment file's and --ca).
	maxCA = 32 << 10
	// maxURL bounds a controller URL.
	maxURL = 1024
	// MaxURLs bounds how many controller URLs a device has.
	MaxURLs = 16
	// maxClientKey bounds the TLS client key file.
	maxClientKey = 4 << 10
)

// Enrolment is what enrolment left on the device: where the controller is
// (one URL, or the URLs of its replicas, tried in turn), the CA its TLS
// certificates come from, the key its bundles are signed with (pinned), and
// the device's id and TLS client certificate. The client key is beside it,
// in paths.ClientKey.
type Enrolment struct {
	URLs       []string  // 1 to MaxURLs, each in its normal form (NormalURLs)
	DeviceID   string    // the controller's name for the device
	CA         string    // PEM CERTIFICATE(s): the only roots the controller's TLS certificate may chain to
	SigningKey string    // PEM PUBLIC KEY (ECDSA P-256): signs every key bundle
	ClientCert string    // PEM CERTIFICATE: the device's, CN = DeviceID
	Enrolled   time.Time // when
}

// enrolmentFile is the file's form: a format and version ahead of the fields.
type enrolmentFile struct {
	Format     string    `json:"format"`
	Version    int       `json:"version"`
	URL        string    `json:"url,omitempty"`  // version 1
	URLs       []string  `json:"urls,omitempty"` // version 2
	DeviceID   string    `json:"device_id"`
	CA         string    `json:"ca"`
	SigningKey string    `json:"signing_key"`
	ClientCert string    `json:"client_cert"`
	Enrolled   time.Time `json:"enrolled"`
}

// Marshal encodes e as the enrolment file: indented JSON ending in a
// newline; version 1 if e has one URL, 2 if several.
func (e *Enrolment) Marshal() []byte {
	f := enrolmentFile{Format: EnrolmentFormat, Version: 2, URLs: e.URLs, DeviceID: e.DeviceID, CA: e.CA,
		SigningKey: e.SigningKey, ClientCert: e.ClientCert, Enrolled: e.Enrolled}
	if len(e.URLs) == 1 {
		f.Version, f.URL, f.URLs = 1, e.URLs[0], nil
	}
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("internal error: cannot encode the enrolment: %v", err))
	}
	return append(out, '\n')
}

// ParseEnrolment decodes an enrolment file strictly: unknown fields, a second
// value, another format or version, or a field out of shape are
// ErrBadEnrolment, saying which.
func ParseEnrolment(data []byte) (*Enrolment, error) {
	var f enrolmentFile
	if err := strictjson.Decode(data, maxEnrolment, &f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEnrolment, err)
	}
	switch {
	case f.Format != EnrolmentFormat:
		return nil, fmt.Errorf("%w: format is %q, not %q", ErrBadEnrolment, f.Format, EnrolmentFormat)
	case f.Version == 1 && f.URLs != nil:
		return nil, fmt.Errorf("%w: version 1 has \"url\", not \"urls\"", ErrBadEnrolment)
	case f.Version == 1:
		f.URLs = []string{f.URL}
	case f.Version == 2 && f.URL != "":
		return nil, fmt.Errorf("%w: version 2 has \"urls\", not \"url\"", ErrBadEnrolment)
	case f.Version == 2 && len(f.URLs) < 2:
		return nil, fmt.Errorf("%w: version 2 has %d urls, at least 2 (one is version 1)", ErrBadEnrolment, len(f.URLs))
	case f.Version != 2:
		return nil, fmt.Errorf("%w: version %d: this build reads versions 1 and %d", ErrBadEnrolment, f.Version, EnrolmentVersion)
	}
	e := &Enrolment{URLs: f.URLs, DeviceID: f.DeviceID, CA: f.CA, SigningKey: f.SigningKey, ClientCert: f.ClientCert, Enrolled: f.Enrolled}
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEnrolment, err)
	}
	return e, nil
}

func (e *Enrolment) check() error {
	urls, err := NormalURLs(e.URLs)
	if err != nil {
		return err
	}
	for i := range urls {
		if urls[i] != e.URLs[i] {
			return fmt.Errorf("url %q is not in its normal form %q", e.URLs[i], urls[i])
		}
	}
	if err := (&ctlproto.Enrolled{DeviceID: e.DeviceID, ClientCert: e.ClientCert, SigningKey: e.SigningKey}).Validate(); err != nil {
		return err
	}
	if _, err := parseCA([]byte(e.CA)); err != nil {
		return fmt.Errorf("ca: %v", err)
	}
	if _, err := ctlproto.ParsePublicKey(e.SigningKey); err != nil {
		return fmt.Errorf("signing_key: %v", err)
	}
	if _, err := parseClientCert(e.ClientCert, e.DeviceID); err != nil {
		return fmt.Errorf("client_cert: %v", err)
	}
	if e.Enrolled.IsZero() {
		return errors.New("enrolled: missing")
	}
	return nil
}

// ClientCertificate is the device's TLS client certificate.
func (e *Enrolment) ClientCertificate() (*x509.Certificate, error) {
	return parseClientCert(e.ClientCert, e.DeviceID)
}

// LoadEnrolment reads the device's enrolment: ErrNotEnrolled if there is
// none, ErrBadEnrolment if it does not parse.
func LoadEnrolment(p paths.Paths) (*Enrolment, error) {
	// A replacement cut short is put right first (root only: another user
	// cannot look in the directory, and is told below to run as root).
	if err := RecoverReplacement(p); err != nil && !errors.Is(err, fs.ErrPermission) {
		return nil, err
	}
	data, err := fsutil.ReadBounded(p.Enrolment, maxEnrolment)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w (no %s): run edgeseal controller enrol", ErrNotEnrolled, p.Enrolment)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("cannot read the controller enrolment (run as root): %w", err)
	case err != nil:
		return nil, fmt.Errorf("cannot read the controller enrolment: %w", err)
	}
	e, err := ParseEnrolment(data)
	if err != nil {
		return nil, fmt.Errorf("cannot use %s: %w", p.Enrolment, err)
	}
	return e, nil
}

// writeEnrolment writes e to p.Enrolment, atomically, 0600.
func writeEnrolment(p paths.Paths, e *Enrolment) error {
	if err := makeControllerDir(p); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(p.Enrolment, e.Marshal(), 0o600, fsutil.Self)
}

// makeControllerDir makes p.Controller, root's only (0700).
func makeControllerDir(p paths.Paths) error {
	if err := os.MkdirAll(p.Controller, 0o700); err != nil {
		return fmt.Errorf("cannot make %s: %w", p.Controller, err)
	}
	if err := os.Chmod(p.Controller, 0o700); err != nil {
		return fmt.Errorf("cannot make %s private: %w", p.Controller, err)
	}
	return nil
}

// NormalURLs checks a device's controller URLs (1 to MaxURLs, no two the
// same) and returns them in their normal form.
func NormalURLs(urls []string) ([]string, error) {
	if len(urls) == 0 || len(urls) > MaxURLs {
		return nil, fmt.Errorf("urls: %d, 1 to %d", len(urls), MaxURLs)
	}
	out := make([]string, len(urls))
	for i, u := range urls {
		n, err := parseURL(u)
		if err != nil {
			return nil, err
		}
		if slices.Contains(out[:i], n) {
			return nil, fmt.Errorf("url %q: named twice", u)
		}
		out[i] = n
	}
	return out, nil
}

// parseURL checks a controller URL and returns its normal form (no trailing
// slash): https, a host, an optional path prefix; no user, query or fragment.
func parseURL(s string) (string, error) {
	if len(s) == 0 || len(s) > maxURL {
		return "", fmt.Errorf("url: %d bytes, 1 to %d", len(s), maxURL)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", fmt.Errorf("url %q: %v", s, err)
	case u.Scheme != "https":
		return "", fmt.Errorf("url %q: not https://HOST[:PORT]", s)
	case u.Hostname() == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "":
		return "", fmt.Errorf("url %q: want https://HOST[:PORT][/PATH], with no user, query or fragment", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// parseCA reads the controller's CA: one or more PEM CERTIFICATE blocks, and
// nothing else.
func parseCA(data []byte) (*x509.CertPool, error) {
	if len(data) > maxCA {
		return nil, fmt.Errorf("%d bytes, at most %d", len(data), maxCA)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; len(bytes.TrimSpace(rest)) > 0; n++ {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil, errors.New("not PEM CERTIFICATE blocks only")
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v", n+1, err)
		}
		pool.AddCert(c)
	}
	if n == 0 {
		return nil, errors.New("no PEM CERTIFICATE")
	}
	return pool, nil
}

// parseClientCert reads the device's TLS client certificate: one PEM
// CERTIFICATE, for an ECDSA P-256 key, whose common name is the device id.
func parseClientCert(data, deviceID string) (*x509.Certificate, error) {
	blk, rest := pem.Decode([]byte(data))
	if blk == nil || blk.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("not one PEM CERTIFICATE")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, err
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		return nil, errors.New("its key is not ECDSA P-256")
	}
	if c.Subject.CommonName != deviceID {
		return nil, fmt.Errorf("it is for %q, not the device id %q", c.Subject.CommonName, deviceID)
	}
	return c, nil
}
