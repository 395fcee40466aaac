package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
)

// controllerAt starts a TLS server on loopback with a certificate from ca,
// asking for client certificates from clients (nil: none), answering with h.
func controllerAt(t *testing.T, ca, clients *testCA, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.TLS = ca.serverTLS(t, clients)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes refused on purpose
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func goodChallenge(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != ctlproto.PathChallenge || len(r.TLS.PeerCertificates) == 0 ||
		r.TLS.PeerCertificates[0].Subject.CommonName != "gw-1" {
		http.Error(w, `{"error":"wrong request"}`, http.StatusBadRequest)
		return
	}
	json.NewEncoder(w).Encode(&ctlproto.Challenge{Nonce: bytes.Repeat([]byte{1}, 32), PCRs: []int{0, 7},
		Claims: []string{"device_id"}, Expires: time.Now().Add(time.Minute)})
}

// stall answers after the client is gone (or 5s).
func stall(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body) // the server notices the client gone only once the body is read
	select {
	case <-r.Context().Done():
	case <-time.After(5 * time.Second):
	}
}

// Each way an exchange fails is told apart: an outage (ErrUnreachable, which
// may fall back to offline keys) from a controller that is not the enrolled
// one, one that said no, and an answer out of shape (none of which may).
func TestHTTPSErrorsAreClassified(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	impostor := newTestCA(t, "impostor CA")
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		return "https://" + l.Addr().String()
	}()
	answer := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			w.Write([]byte(body))
		}
	}
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	cases := []struct {
		name   string
		url    func() string
		is     error
		isNot  error
		text   string
		server *testCA // the CA the server's certificate is from
		wants  *testCA // the CA the server wants client certificates from
		h      http.HandlerFunc
	}{
		{"a good answer decodes", nil, nil, nil, "", ca, ca, goodChallenge},
		{"a closed port is unreachable", func() string { return closed }, ErrUnreachable, nil, "connection refused", nil, nil, nil},
		{"a server certificate from another CA is not trusted, and not an outage", nil,
			ErrServerCertificate, ErrUnreachable, "certificate signed by unknown authority", impostor, ca, goodChallenge},
		{"a controller that refuses the device's certificate refuses", nil,
			ErrRefused, ErrUnreachable, "refused this device's TLS certificate", ca, impostor, goodChallenge},
		{"an ErrorBody is refused, with its text and status", nil, ErrRefused, ErrUnreachable,
			"HTTP 403 Forbidden: device revoked by the operator", ca, ca, answer(403, `{"error":"device revoked by the operator"}`)},
		{"an error page that is not an ErrorBody is refused, without its text", nil, ErrRefused, nil,
			"HTTP 502 Bad Gateway: no error message", ca, ca, answer(502, "<html>"+strings.Repeat("x", 1<<20))},
		{"a redirect is refused", nil, ErrRefused, nil, "HTTP 307", ca, ca,
			func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://elsewhere/", http.StatusTemporaryRedirect)
			}},
		{"an oversize body is malformed", nil, ctlproto.ErrMalformed, ErrUnreachable, "more than", ca, ca,
			answer(200, `{"nonce":"`+strings.Repeat("A", ctlproto.MaxBody)+`"}`)},
		{"trailing garbage is malformed", nil, ctlproto.ErrMalformed, nil, "data after the JSON value", ca, ca,
			func(w http.ResponseWriter, r *http.Request) { goodChallenge(w, r); w.Write([]byte(`{}`)) }},
		{"an unknown field is malformed", nil, ctlproto.ErrMalformed, nil, "unknown field", ca, ca,
			answer(200, `{"nonce":"AQ==","pcrs":[0],"expires":"2026-01-01T00:00:00Z","keys":1}`)},
		{"an answer out of shape is malformed", nil, ctlproto.ErrMalformed, nil, "nonce: 1 bytes", ca, ca,
			answer(200, `{"nonce":"AQ==","pcrs":[0],"expires":"2026-01-01T00:00:00Z"}`)},
		{"a slow controller is unreachable", nil, ErrUnreachable, nil, "Timeout", ca, ca,
			stall},
		{"a server that does not speak TLS is not an outage", func() string { return strings.Replace(plain.URL, "http:", "https:", 1) },
			nil, ErrUnreachable, "does not speak TLS", nil, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := ""
			if tc.url != nil {
				url = tc.url()
			} else {
				url = controllerAt(t, tc.server, tc.wants, tc.h).URL
			}
			d := enrolTestDevice(t, url, ca, "gw-1")
			tr, err := NewHTTPS(d.p, d.e, 300*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			c, err := tr.Challenge(t.Context())
			if tc.is == nil && tc.text == "" {
				if err != nil || len(c.PCRs) != 2 {
					t.Fatalf("Challenge = %+v, %v", c, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Challenge = %+v; want an error", c)
			}
			t.Log(err)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Challenge: %v; want %v", err, tc.is)
			}
			if tc.isNot != nil && errors.Is(err, tc.isNot) {
				t.Errorf("Challenge: %v; must not be %v", err, tc.isNot)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Challenge: %v; want it to say %q", err, tc.text)
			}
			if len(err.Error()) > 2048 {
				t.Errorf("the error is %d bytes long", len(err.Error()))
			}
		})
	}
}

// A cancelled call is neither an outage nor a refusal.
func TestHTTPSCancelledIsNotUnreachable(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	s := controllerAt(t, ca, ca, stall)
	d := enrolTestDevice(t, s.URL, ca, "gw-1")
	tr, err := NewHTTPS(d.p, d.e, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = tr.Challenge(ctx)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnreachable) || errors.Is(err, ErrRefused) {
		t.Errorf("Challenge: %v; want context.Canceled only", err)
	}
}

// The client key must be there, and be the certificate's.
func TestHTTPSNeedsTheEnrolledClientKey(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	d := enrolTestDevice(t, "https://127.0.0.1:1", ca, "gw-1")
	other := enrolTestDevice(t, "https://127.0.0.1:1", ca, "gw-1")
	if _, err := NewHTTPS(d.p, other.e, time.Second); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("NewHTTPS with another device's certificate: %v", err)
	}
	d.p.ClientKey += ".gone"
	if _, err := NewHTTPS(d.p, d.e, time.Second); err == nil || !strings.Contains(err.Error(), "TLS client key") {
		t.Errorf("NewHTTPS with no client key: %v", err)
	}
}

// A Device checks locally what it can before it touches the TPM or asks the
// controller anything.
func TestKeysChecksLocallyFirst(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	noTPM := func() (*tpm2.TPMContext, error) { t.Error("the TPM was opened"); return nil, errors.New("no") }
	good := ctlproto.VaultRequest{UUID: "0f9c4a3e-2b7d-4e1a-9c55-3d2f8e6a1b70", Name: "images", Keys: true}
	t.Run("not enrolled", func(t *testing.T) {
		d := &Device{Paths: enrolTestDevice(t, "https://127.0.0.1:1", ca, "gw-1").p, OpenTPM: noTPM}
		d.Paths.Enrolment += ".gone"
		if _, err := d.Keys(t.Context(), []ctlproto.VaultRequest{good}); !errors.Is(err, ErrNotEnrolled) {
			t.Errorf("Keys: %v; want ErrNotEnrolled", err)
		}
		if err := d.Report(t.Context(), &ctlproto.Report{Vaults: []ctlproto.VaultReport{{UUID: good.UUID, KeyVersion: 1}}}); !errors.Is(err, ErrNotEnrolled) {
			t.Errorf("Report: %v; want ErrNotEnrolled", err)
		}
	})
	d := &Device{Paths: enrolTestDevice(t, "https://127.0.0.1:1", ca, "gw-1").p, OpenTPM: noTPM}
	cases := []struct {
		name   string
		cfg    string
		vaults []ctlproto.VaultRequest
		want   string
	}{
		{"no vault", "", nil, "vaults: 0"},
		{"a vault asking for nothing", "", []ctlproto.VaultRequest{{UUID: good.UUID, Name: "images"}}, "neither keys nor escrow"},
		{"a repeated vault", "", []ctlproto.VaultRequest{good, good}, "repeated"},
		{"an unreadable location file", "/nonexistent/location",
			[]ctlproto.VaultRequest{{UUID: good.UUID, Name: "images", Keys: true, Attestation: true}}, "/nonexistent/location"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d.Config.LocationFile = tc.cfg
			if _, err := d.Keys(t.Context(), tc.vaults); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Keys: %v; want %q", err, tc.want)
			}
		})
	}
	if _, err := d.SealForEscrow(make([]byte, 32)); err == nil || !strings.Contains(err.Error(), "not 64") {
		t.Errorf("SealForEscrow of 32 bytes: %v", err)
	}
}

// At boot the network, or the controller, may come up after the device asks:
// the dial is repeated while it is refused, within the exchange's timeout.
func TestHTTPSWaitsForAControllerThatComesUpWithinTheTimeout(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: connection refused, as before the network is up
	d := enrolTestDevice(t, "https://"+addr, ca, "gw-1")
	tr, err := NewHTTPS(d.p, d.e, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(goodChallenge))
	s.Listener.Close()
	s.TLS = ca.serverTLS(t, ca)
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	const late = 700 * time.Millisecond
	up := make(chan error, 1)
	go func() {
		time.Sleep(late)
		l, err := net.Listen("tcp", addr)
		if err == nil {
			s.Listener = l
			s.StartTLS()
		}
		up <- err
	}()
	t0 := time.Now()
	c, err := tr.Challenge(t.Context())
	if uerr := <-up; uerr != nil {
		t.Fatalf("cannot start the late controller: %v", uerr)
	}
	defer s.Close()
	if err != nil || len(c.PCRs) != 2 {
		t.Fatalf("Challenge to a controller up %v late = %+v, %v; want its challenge", late, c, err)
	}
	t.Logf("the challenge came %v after the first dial", time.Since(t0).Round(time.Millisecond))
}

// The wait is bounded: a controller that never comes up is unreachable once
// the exchange's timeout has passed, no sooner and not much later.
func TestHTTPSStopsWaitingForAControllerAtTheTimeout(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := enrolTestDevice(t, "https://"+addr, ca, "gw-1")
	const timeout = 1500 * time.Millisecond
	tr, err := NewHTTPS(d.p, d.e, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	_, err = tr.Challenge(t.Context())
	took := time.Since(t0)
	// Its text names the last dial's failure (connection refused) unless that
	// dial ends after the timeout on a loaded machine; the kind is what a
	// caller acts on (an offline copy of the key).
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("Challenge = %v; want ErrUnreachable", err)
	}
	t.Logf("after %v: %v", took.Round(time.Millisecond), err)
	if took < timeout-lastDialMargin-firstDialPause || took > timeout+200*time.Millisecond {
		t.Errorf("gave up after %v; want about the timeout, %v", took, timeout)
	}
}

// replicaAt is controllerAt that counts the requests it was sent.
func replicaAt(t *testing.T, ca *testCA, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	s := controllerAt(t, ca, ca, func(w http.ResponseWriter, r *http.Request) { n.Add(1); h(w, r) })
	return s, &n
}

func closedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return "https://" + l.Addr().String()
}

func answerWith(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(status)
		w.Write([]byte(body))
	}
}

// A device of a controller fleet names its replicas: an exchange moves on
// from a replica that is down or whose store cannot serve, and the next
// exchange starts with the replica that answered.
func TestHTTPSFailsOverToTheNextReplicaWhenOneIsDownOrUnavailable(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	for _, tc := range []struct {
		name  string
		first func(t *testing.T) (string, *atomic.Int32)
	}{
		{"down (connection refused)", func(t *testing.T) (string, *atomic.Int32) { return closedURL(t), nil }},
		{"unavailable (503: its store cannot serve)", func(t *testing.T) (string, *atomic.Int32) {
			s, n := replicaAt(t, ca, answerWith(503, `{"error":"the controller's store is unavailable"}`))
			return s.URL, n
		}},
		{"behind a proxy with no backend (502)", func(t *testing.T) (string, *atomic.Int32) {
			s, n := replicaAt(t, ca, answerWith(502, "<html>bad gateway</html>"))
			return s.URL, n
		}},
		{"too slow to answer", func(t *testing.T) (string, *atomic.Int32) {
			s, n := replicaAt(t, ca, stall)
			return s.URL, n
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, firstHits := tc.first(t)
			good, goodHits := replicaAt(t, ca, goodChallenge)
			d := enrolTestDevice(t, first, ca, "gw-1")
			d.e.URLs = []string{first, good.URL}
			const timeout = 2 * time.Second
			tr, err := NewHTTPS(d.p, d.e, timeout)
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			if c, err := tr.Challenge(t.Context()); err != nil || len(c.PCRs) != 2 {
				t.Fatalf("Challenge = %+v, %v; want the second replica's", c, err)
			}
			t.Logf("answered by the second replica after %v", time.Since(t0).Round(time.Millisecond))
			if time.Since(t0) > timeout {
				t.Errorf("the exchange took %v, more than its timeout %v", time.Since(t0), timeout)
			}
			if _, err := tr.Challenge(t.Context()); err != nil {
				t.Fatal(err)
			}
			if goodHits.Load() != 2 || firstHits != nil && firstHits.Load() != 1 {
				t.Errorf("the second exchange did not start with the replica that answered: good %d, first %v", goodHits.Load(), firstHits)
			}
		})
	}
}

// A refusal is the controller's word, the same from every replica, and a
// certificate from another CA is to be seen, not routed around: neither is
// sent on to another replica.
func TestHTTPSNeverAsksAnotherReplicaAfterARefusalOrABadCertificate(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	impostor := newTestCA(t, "impostor CA")
	for _, tc := range []struct {
		name  string
		first func(t *testing.T) string
		is    error
	}{
		{"403 revoked", func(t *testing.T) string {
			s, _ := replicaAt(t, ca, answerWith(403, `{"error":"device revoked by the operator"}`))
			return s.URL
		}, ErrRefused},
		{"409 a spent nonce", func(t *testing.T) string {
			s, _ := replicaAt(t, ca, answerWith(409, `{"error":"nonce already used"}`))
			return s.URL
		}, ErrRefused},
		{"500 an internal error", func(t *testing.T) string {
			s, _ := replicaAt(t, ca, answerWith(500, `{"error":"internal error"}`))
			return s.URL
		}, ErrRefused},
		{"a certificate from another CA", func(t *testing.T) string {
			return controllerAt(t, impostor, ca, goodChallenge).URL
		}, ErrServerCertificate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := tc.first(t)
			good, goodHits := replicaAt(t, ca, goodChallenge)
			d := enrolTestDevice(t, first, ca, "gw-1")
			d.e.URLs = []string{first, good.URL}
			tr, err := NewHTTPS(d.p, d.e, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tr.Challenge(t.Context())
			if !errors.Is(err, tc.is) || errors.Is(err, ErrUnreachable) {
				t.Errorf("Challenge = %v; want %v", err, tc.is)
			}
			if goodHits.Load() != 0 {
				t.Errorf("the second replica was asked %d times", goodHits.Load())
			}
		})
	}
}

// When no replica answers, the exchange ends at its timeout, however many
// replicas there are: ErrUnreachable (an offline copy may be used) naming
// each, unless a replica said its store is unavailable (the controller is
// there: not an outage of the device's network).
func TestHTTPSEndsAtTheTimeoutWhenNoReplicaAnswers(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	const timeout = 1500 * time.Millisecond
	down := []string{closedURL(t), closedURL(t), closedURL(t)}
	d := enrolTestDevice(t, down[0], ca, "gw-1")
	d.e.URLs = down
	tr, err := NewHTTPS(d.p, d.e, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	_, err = tr.Challenge(t.Context())
	took := time.Since(t0)
	t.Logf("after %v: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("Challenge = %v; want ErrUnreachable", err)
	}
	for _, u := range down {
		if !strings.Contains(fmt.Sprint(err), u) {
			t.Errorf("the error does not name %s", u)
		}
	}
	if took < timeout-2*lastDialMargin || took > timeout+300*time.Millisecond {
		t.Errorf("gave up after %v; want about the timeout, %v", took, timeout)
	}

	unavailable, _ := replicaAt(t, ca, answerWith(503, `{"error":"the controller's store is unavailable"}`))
	d.e.URLs = []string{down[0], unavailable.URL}
	tr, err = NewHTTPS(d.p, d.e, timeout)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Challenge(t.Context())
	if !errors.Is(err, ErrRefused) || errors.Is(err, ErrUnreachable) || !strings.Contains(fmt.Sprint(err), "HTTP 503") {
		t.Errorf("Challenge = %v; want the 503's refusal, not ErrUnreachable", err)
	}
}
