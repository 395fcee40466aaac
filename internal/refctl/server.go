package refctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/journal"
)

// HTTP server limits: a device's request is one small JSON value.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 16 << 10
	shutdownTimeout   = 10 * time.Second
)

// Options are how Serve serves.
type Options struct {
	// RotateEvery makes a new key version of each vault once its newest is
	// this old (and the device finished the last rotation); 0: only when an
	// operator asks (Rotate).
	RotateEvery time.Duration
	// Log gets one line per request, and "listening on ADDR"; nil: stderr.
	Log io.Writer
	// Now is the clock for nonces, tokens and rotation; nil: time.Now. (TLS
	// certificates are checked against the system clock.)
	Now func() time.Time
	// Ready, if set, is called with the address listened on once requests
	// are accepted.
	Ready func(addr string)
}

type server struct {
	st   store
	k    *keys
	opts Options
	log  *journal.Logger
}

// Serve answers devices on listen (HTTPS, TLS 1.3, client certificates from
// enrolment) until ctx is done, then shuts down gracefully. It tells systemd
// it is ready only once the store answered and the port is open: a replica
// whose store is down at start does not serve half-ready, it fails.
func (c *Controller) Serve(ctx context.Context, listen string, opts Options) error {
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	k, err := c.st.identity(ctx)
	if err != nil {
		return fmt.Errorf("cannot serve: %w", err)
	}
	if err := c.st.check(ctx); err != nil {
		return fmt.Errorf("cannot serve: %w", err)
	}
	cert, err := tls.X509KeyPair(k.server, k.srvKey)
	if err != nil {
		return fmt.Errorf("cannot serve: cannot read the server certificate and key: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(k.ca)
	tlsConfig := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// The enrolment paths have no certificate yet; every other path
		// checks one was given (server.deviceCall).
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
	}
	s := &server{st: c.st, k: k, opts: opts, log: journal.New(opts.Log)}
	hs := &http.Server{
		Handler:           s,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(opts.Log, "http: ", 0),
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("cannot serve: %w", err)
	}
	served := make(chan error, 1)
	go func() { served <- hs.ServeTLS(ln, "", "") }()
	addr := ln.Addr().String()
	fmt.Fprintf(opts.Log, "listening on %s, state in %s\n", addr, c.st)
	daemon.SdNotify(false, daemon.SdNotifyReady)
	if opts.Ready != nil {
		opts.Ready(addr)
	}
	select {
	case err := <-served:
		return fmt.Errorf("cannot serve: %w", err)
	case <-ctx.Done():
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
		return fmt.Errorf("cannot shut down gracefully: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("cannot serve: %w", err)
	}
	return nil
}

// reply is a handler's answer, and what the log says of it.
type reply struct {
	status  int
	body    any
	device  string
	verdict string
}

func ok(dev string, body any, verdict string) reply {
	return reply{status: http.StatusOK, body: body, device: dev, verdict: verdict}
}

func fail(status int, dev, msg string) reply {
	return reply{status: status, body: &ctlproto.ErrorBody{Error: truncate(msg)}, device: dev, verdict: msg}
}

// internal is a 500: the detail goes to the log, never to the device. A
// store that did not answer is a 503: the device may ask another replica.
func internal(dev string, err error) reply {
	if errors.Is(err, ErrStoreUnavailable) {
		r := fail(http.StatusServiceUnavailable, dev, "the controller's store is unavailable: try again, or another controller")
		r.verdict = "store unavailable: " + err.Error()
		return r
	}
	r := fail(http.StatusInternalServerError, dev, "internal error (see the controller's log)")
	r.verdict = "internal error: " + err.Error()
	return r
}

var routes = map[string]func(*server, *http.Request) reply{
	ctlproto.PathEnrolNonce: (*server).enrolNonce,
	ctlproto.PathEnrol:      (*server).enrol,
	ctlproto.PathChallenge:  (*server).challenge,
	ctlproto.PathKeys:       (*server).keys,
	ctlproto.PathReport:     (*server).report,
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var rep reply
	route, found := routes[r.URL.Path]
	switch {
	case !found:
		rep = fail(http.StatusNotFound, "", "no such path")
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		rep = fail(http.StatusMethodNotAllowed, "", "only POST")
	default:
		r.Body = http.MaxBytesReader(w, r.Body, ctlproto.MaxBody)
		rep = route(s, r)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(rep.status)
	if err := json.NewEncoder(w).Encode(rep.body); err != nil {
		rep.verdict += " (answer not sent: " + err.Error() + ")"
	}
	attrs := []any{"path", r.URL.Path, "device", rep.device, "status", rep.status, "verdict", rep.verdict}
	switch {
	case rep.status >= 500:
		s.log.Error("request", attrs...)
	case rep.status >= 400:
		s.log.Warn("request", attrs...)
	default:
		s.log.Info("request", attrs...)
	}
}

// deviceCall authenticates a device by its client certificate, decodes its
// request into msg, and runs act on its record in the store: the record is
// written back (if act changed it) before the answer is sent. act may run
// more than once (store.update): the last run's reply is sent.
func (s *server) deviceCall(r *http.Request, msg ctlproto.Message, act func(name string, d *device) (bool, reply)) reply {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return fail(http.StatusUnauthorized, "", "a client certificate from enrolment is required")
	}
	leaf := r.TLS.VerifiedChains[0][0]
	name := leaf.Subject.CommonName
	if !idRE.MatchString(name) {
		return fail(http.StatusForbidden, "", "the client certificate names no device")
	}
	if err := ctlproto.Decode(r.Body, msg); err != nil {
		return fail(http.StatusBadRequest, name, err.Error())
	}
	var out reply
	err := s.st.update(r.Context(), name, func(d *device) (bool, error) {
		switch {
		case d.Enrolled.IsZero():
			out = fail(http.StatusForbidden, name, "the client certificate names no enrolled device")
			return false, nil
		case leaf.SerialNumber.Text(16) != d.CertSerial:
			out = fail(http.StatusForbidden, name, "the client certificate was replaced by a later enrolment")
			return false, nil
		}
		changed, rep := act(name, d)
		out = rep
		return changed, nil
	})
	switch {
	case errors.Is(err, ErrUnknownDevice):
		return fail(http.StatusForbidden, name, "the client certificate names no enrolled device")
	case err != nil:
		return internal(name, err)
	}
	return out
}

func (s *server) now() time.Time { return s.opts.Now() }
