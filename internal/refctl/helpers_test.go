package refctl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/mu"
	"github.com/canonical/go-tpm2/objectutil"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
)

// Unit tests need no TPM: a storage root key's public area is made from a
// software key (SealToTPM needs nothing else), and an enrolled device is
// written into the state as enrolment would.

// fakeSRK is the public area of an edgeseal storage root key that no TPM
// holds.
func fakeSRK(t testing.TB) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := objectutil.NewECCStorageKeyTemplate(objectutil.WithoutDictionaryAttackProtection())
	pub.Unique = &tpm2.PublicIDU{ECC: &tpm2.ECCPoint{X: k.X.FillBytes(make([]byte, 32)), Y: k.Y.FillBytes(make([]byte, 32))}}
	b, err := mu.MarshalToBytes(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeAK is a PEM public key standing for an attestation key.
func fakeAK(t testing.TB) string { return newSoftAK(t).pem }

// lockedBuffer is a log read while the server writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// LockedBuffer is lockedBuffer for the integration tests (package
// refctl_test).
type LockedBuffer = lockedBuffer

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// ctl is a served controller with one device enrolled as "edge-7", by hand.
type ctl struct {
	t      *testing.T
	ctl    *Controller
	dir    string // a directory store's
	base   string
	log    *lockedBuffer
	clock  *clock
	client *http.Client // with edge-7's certificate
	anon   *http.Client // with none
	signer *ecdsa.PublicKey
}

const testDevice = "edge-7"

// mkCtl serves a new controller with testDevice enrolled: newCtl on a
// directory, or one on another store.
type mkCtl func(t *testing.T, opts Options) *ctl

func newCtl(t *testing.T, opts Options) *ctl {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ctl")
	if err := Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	c := newCtlOn(t, OpenDir(dir), opts)
	c.dir = dir
	return c
}

// newCtlOn serves the controller ctl (its store initialised), with
// testDevice enrolled by hand.
func newCtlOn(t *testing.T, on *Controller, opts Options) *ctl {
	t.Helper()
	c := &ctl{t: t, ctl: on, log: &lockedBuffer{}, clock: &clock{t: time.Now()}}
	ctx := context.Background()
	if _, err := on.AddDevice(ctx, testDevice, []int{7}, nil); err != nil {
		t.Fatal(err)
	}
	k, err := on.st.identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.signer = k.signingPublic()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := issueClientCert(k.caKey, k.ca, testDevice, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	err = on.st.update(ctx, testDevice, func(d *device) (bool, error) {
		d.Token.Used = true
		d.Enrolled, d.AKPublic, d.SRKPublic = time.Now(), fakeAK(t), fakeSRK(t)
		d.CertSerial = cert.SerialNumber.Text(16)
		d.Expected = map[int]string{7: strings.Repeat("00", 32)}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(k.ca)
	mk := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: certs}}}
	}
	c.client = mk(tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key})
	c.anon = mk()
	c.serve(opts)
	return c
}

// serve serves c.ctl on a loopback port, until the test ends.
func (c *ctl) serve(opts Options) {
	t := c.t
	t.Helper()
	opts.Log, opts.Now = c.log, c.clock.Now
	ready, done := make(chan string, 1), make(chan error, 1)
	opts.Ready = func(a string) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- c.ctl.Serve(ctx, "127.0.0.1:0", opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("controller log:\n%s", c.log)
		}
	})
	select {
	case addr := <-ready:
		c.base = "https://" + addr
	case err := <-done:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("the controller did not listen")
	}
}

// post sends a raw body; it returns the status and the body.
func (c *ctl) post(cl *http.Client, path string, body []byte) (int, []byte) {
	c.t.Helper()
	r, err := cl.Post(c.base+path, "application/json", bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	defer r.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(r.Body)
	return r.StatusCode, out.Bytes()
}

// errorOf is the error text of a non-200 answer.
func errorOf(t *testing.T, body []byte) string {
	t.Helper()
	var e ctlproto.ErrorBody
	if err := ctlproto.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an error body: %v: %s", err, body)
	}
	return e.Error
}

// keys asks for vaults without a quote, and opens the signed bundle.
func (c *ctl) keys(vaults ...ctlproto.VaultRequest) *ctlproto.Bundle {
	c.t.Helper()
	nonce := make([]byte, ctlproto.NonceSize)
	rand.Read(nonce)
	body, _ := json.Marshal(&ctlproto.KeysRequest{RequestNonce: nonce, Vaults: vaults})
	status, out := c.post(c.client, ctlproto.PathKeys, body)
	if status != http.StatusOK {
		c.t.Fatalf("keys: %d %s", status, out)
	}
	var sb ctlproto.SignedBundle
	if err := ctlproto.Unmarshal(out, &sb); err != nil {
		c.t.Fatal(err)
	}
	b, err := ctlproto.OpenBundle(&sb, c.signer, testDevice, nonce)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

func (c *ctl) report(vaults ...ctlproto.VaultReport) {
	c.t.Helper()
	body, _ := json.Marshal(&ctlproto.Report{Vaults: vaults})
	if status, out := c.post(c.client, ctlproto.PathReport, body); status != http.StatusOK {
		c.t.Fatalf("report: %d %s", status, out)
	}
}

func (c *ctl) device() *device {
	c.t.Helper()
	d, err := c.ctl.st.get(context.Background(), testDevice)
	if err != nil {
		c.t.Fatal(err)
	}
	return d
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }
