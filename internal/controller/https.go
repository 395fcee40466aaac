package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
)

// DefaultTimeout bounds one exchange when the caller gives no timeout.
const DefaultTimeout = 10 * time.Second

// maxErrorBody bounds what is read of an answer that is not a success (an
// ErrorBody's text is at most ctlproto.MaxReason; JSON may escape it).
const maxErrorBody = 8 << 10

// NewHTTPS is the built-in transport: HTTPS with mutual TLS 1.3 to the
// controller at e.URLs (the replicas of a fleet: see post for the failover).
// The controller's certificate must chain to e.CA (and nothing else); the
// device shows e.ClientCert with the key in p.ClientKey. Each answer is
// decoded strictly (ctlproto). Errors are classified: ErrUnreachable (no
// connection, a timeout), ErrServerCertificate (a controller not from the
// enrolled CA), ErrRefused (an error answer, or the controller refusing the
// device's certificate), ctlproto.ErrMalformed (an answer out of shape).
// No proxy is used.
func NewHTTPS(p paths.Paths, e *Enrolment, timeout time.Duration) (Transport, error) {
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("cannot use the enrolment: %w: %v", ErrBadEnrolment, err)
	}
	pool, err := parseCA([]byte(e.CA))
	if err != nil {
		return nil, fmt.Errorf("cannot use the enrolment's CA: %w", err)
	}
	keyPEM, err := fsutil.ReadBounded(p.ClientKey, maxClientKey)
	if err != nil {
		return nil, fmt.Errorf("cannot read the TLS client key (run as root; if it is gone, enrol again with --force): %w", err)
	}
	cert, err := tls.X509KeyPair([]byte(e.ClientCert), keyPEM)
	clear(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cannot use the TLS client key %s with the enrolment's certificate (enrol again with --force): %w", p.ClientKey, err)
	}
	return newHTTPS(e.URLs, pool, &cert, timeout)
}

// httpsTransport posts one JSON message per exchange and decodes the answer.
type httpsTransport struct {
	bases   []string
	timeout time.Duration
	client  *http.Client
	// at is the replica that answered last: the next exchange starts there.
	at atomic.Int32
}

func newHTTPS(bases []string, roots *x509.CertPool, cert *tls.Certificate, timeout time.Duration) (*httpsTransport, error) {
	bases, err := NormalURLs(bases)
	if err != nil {
		return nil, fmt.Errorf("cannot use the controller's URL: %w", err)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// No ServerName: net/http verifies each replica's certificate for the
	// host of its own URL.
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
	}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialUntilUp(&net.Dialer{Timeout: timeout}, timeout),
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          len(bases),
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       30 * time.Second,
	}
	return &httpsTransport{bases: bases, timeout: timeout, client: &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// A redirect is an answer that is not a success.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// The pauses between dials while the network is not up yet.
const (
	firstDialPause = 100 * time.Millisecond
	maxDialPause   = 2 * time.Second
	lastDialMargin = 250 * time.Millisecond
)

// dialUntilUp dials with d, and dials again after a pause (doubling, at most
// maxDialPause) while the failure is one of a network that is not up yet:
// no route or no address (before DHCP, early at boot), a connection refused
// (the controller's host still starting), a name that does not resolve yet.
// It stops at the exchange's timeout (controller.timeout; net/http dials
// with a context its request's deadline does not reach, so the bound is
// kept here), with a last dial just before it whose error, not the
// deadline's, is what the caller reads. Nothing is sent before a connection
// exists, so a dial is safe to repeat.
//
// This is why edgeseal-fsvault.service orders itself After=
// network-online.target without pulling it in (Wants=): a device without a
// controller vault boots without waiting for the network, and one with a
// controller vault waits here, for at most controller.timeout.
func dialUntilUp(d *net.Dialer, timeout time.Duration) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if ctx.Value(dialOnce{}) != nil {
			return d.DialContext(ctx, network, addr)
		}
		deadline := time.Now().Add(timeout - lastDialMargin)
		if dl, ok := ctx.Deadline(); ok && dl.Add(-lastDialMargin).Before(deadline) {
			deadline = dl.Add(-lastDialMargin)
		}
		pause := firstDialPause
		for {
			c, err := d.DialContext(ctx, network, addr)
			if err == nil || !networkNotUpYet(err) {
				return c, err
			}
			left := time.Until(deadline)
			if left <= 0 {
				return nil, err
			}
			t := time.NewTimer(min(pause, left))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, err
			case <-t.C:
			}
			pause = min(2*pause, maxDialPause)
		}
	}
}

// dialOnce, as a context key, has dialUntilUp dial once: post's passes over
// a fleet's replicas do the waiting, moving on to the next replica at once.
type dialOnce struct{}

func networkNotUpYet(err error) bool {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EADDRNOTAVAIL):
		return true
	case errors.As(err, &dns):
		return dns.IsTemporary || dns.IsNotFound || dns.IsTimeout
	}
	return false
}

// CloseIdleConnections ends the connections kept for another exchange.
func (h *httpsTransport) CloseIdleConnections() { h.client.CloseIdleConnections() }

func (h *httpsTransport) Challenge(ctx context.Context) (*ctlproto.Challenge, error) {
	var c ctlproto.Challenge
	if err := h.post(ctx, ctlproto.PathChallenge, &ctlproto.ChallengeRequest{}, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func (h *httpsTransport) Keys(ctx context.Context, req *ctlproto.KeysRequest) (*ctlproto.SignedBundle, error) {
	var s ctlproto.SignedBundle
	if err := h.post(ctx, ctlproto.PathKeys, req, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func (h *httpsTransport) Report(ctx context.Context, r *ctlproto.Report) error {
	return h.post(ctx, ctlproto.PathReport, r, &ctlproto.ReportAck{})
}

// post sends req to path and decodes the answer into resp.
//
// With several controller URLs (replicas of one controller, sharing its
// store), an exchange that finds a replica unreachable (ErrUnreachable) or
// unavailable (HTTP 502, 503 or 504: its store cannot serve, or a proxy in
// front of it has no backend) is sent to the next, starting from the one
// that answered last. Any other answer ends the exchange: a refusal (4xx) is
// the controller's word, the same from every replica, and a certificate not
// from the enrolled CA is an attack or a misconfiguration to be seen, not
// routed around. Passes over the replicas go on until the exchange's
// timeout, which bounds the whole exchange however many replicas there are.
// If every replica was unreachable the error is ErrUnreachable (an offline
// copy may be used); if one was unavailable, it is its refusal.
// A request resent to another replica after its answer was lost is safe:
// the controller answers a keys request it has seen again (the same request
// nonce), and refuses a spent challenge otherwise.
//
// Each replica is dialled once per pass (the passes, paused as dialUntilUp
// pauses, are the wait for a network not up yet); an attempt has its share
// of the time left, so one replica that hangs cannot use up the exchange.
func (h *httpsTransport) post(ctx context.Context, path string, req, resp ctlproto.Message) error {
	if err := req.Validate(); err != nil {
		return fmt.Errorf("internal error: a request to %s out of shape: %w", path, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("cannot encode the request to %s: %w", path, err)
	}
	n := len(h.bases)
	if n == 1 {
		return h.postTo(ctx, h.bases[0], path, body, resp)
	}
	deadline := time.Now().Add(h.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	first := int(h.at.Load())
	last := make([]error, n) // each replica's last failure
	pause := firstDialPause
	for {
		for k := range n {
			i := (first + k) % n
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			actx, cancel := context.WithTimeout(context.WithValue(ctx, dialOnce{}, true), left/time.Duration(n-k))
			err := h.postTo(actx, h.bases[i], path, body, resp)
			cancel()
			if err == nil {
				h.at.Store(int32(i))
				return nil
			}
			if ctx.Err() != nil || !failsOver(err) {
				return err
			}
			last[i] = fmt.Errorf("%s: %w", h.bases[i], err)
		}
		left := time.Until(deadline)
		if left < 2*lastDialMargin {
			break
		}
		t := time.NewTimer(min(pause, left-lastDialMargin))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cannot talk to the controller (%s): %w", path, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, maxDialPause)
	}
	return allFailed(path, last)
}

// allFailed is the error of an exchange no replica answered: a replica's
// unavailability if one said so (the controller is there, its store is
// not: not an outage of the device's network), else ErrUnreachable; the
// text names each replica's last failure.
func allFailed(path string, last []error) error {
	var tried []string
	var first error
	for _, err := range last {
		if err == nil {
			continue
		}
		// "URL: the controller cannot be reached (PATH): why" says
		// "URL: why" once the kind is said ahead of the list.
		msg := err.Error()
		for _, kind := range []error{ErrUnreachable, ErrRefused} {
			msg = strings.Replace(msg, fmt.Sprintf("%s (%s): ", kind, path), "", 1)
		}
		tried = append(tried, msg)
		if first == nil || errors.Is(first, ErrUnreachable) && !errors.Is(err, ErrUnreachable) {
			first = err
		}
	}
	switch {
	case first == nil:
		return fmt.Errorf("%w (%s): no replica was tried before the timeout", ErrUnreachable, path)
	case errors.Is(first, ErrUnreachable):
		return fmt.Errorf("%w (%s): no replica answered: %s", ErrUnreachable, path, strings.Join(tried, "; "))
	}
	return fmt.Errorf("%w (%s): no replica could serve: %s", ErrRefused, path, strings.Join(tried, "; "))
}

// failsOver tells the failures another replica may answer instead.
func failsOver(err error) bool {
	var r *refusal
	return errors.Is(err, ErrUnreachable) ||
		errors.As(err, &r) && (r.status == http.StatusBadGateway || r.status == http.StatusServiceUnavailable || r.status == http.StatusGatewayTimeout)
}

// postTo is one exchange with the replica at base.
func (h *httpsTransport) postTo(ctx context.Context, base, path string, body []byte, resp ctlproto.Message) error {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("cannot make the request to %s: %w", path, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "application/json")
	res, err := h.client.Do(hr)
	if err != nil {
		return classify(path, err)
	}
	defer res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return refused(path, res)
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, ctlproto.MaxBody+1))
	if err != nil {
		return classify(path, err)
	}
	if err := ctlproto.Unmarshal(data, resp); err != nil {
		return fmt.Errorf("cannot read the controller's answer to %s: %w", path, err)
	}
	return nil
}

// refusal is an answer that is not a success: ErrRefused, with its status.
type refusal struct {
	status int
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// refused is ErrRefused with the answer's status and its ErrorBody's text
// (bounded, validated: never the raw body).
func refused(path string, res *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody+1))
	msg := "no error message"
	var eb ctlproto.ErrorBody
	if len(data) <= maxErrorBody && ctlproto.Unmarshal(data, &eb) == nil {
		msg = strings.ReplaceAll(eb.Error, "\n", " ")
	}
	return &refusal{res.StatusCode, fmt.Errorf("%w (%s): HTTP %d %s: %s", ErrRefused, path, res.StatusCode, http.StatusText(res.StatusCode), msg)}
}

// classify sorts a failed exchange: a controller not from the enrolled CA,
// a TLS refusal of the device's certificate, a cancelled call, or (anything
// else: a dial, a timeout, a connection dropped) unreachable.
func classify(path string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		ierr x509.CertificateInvalidError
		rerr tls.RecordHeaderError
		oerr *net.OpError
	)
	switch {
	case errors.As(err, &verr), errors.As(err, &uerr), errors.As(err, &herr), errors.As(err, &ierr):
		return fmt.Errorf("%w (%s): %w", ErrServerCertificate, path, err)
	case errors.As(err, &oerr) && oerr.Op == "remote error":
		// A TLS alert from the controller: it refused this device's
		// certificate (revoked, expired, from an old enrolment).
		return fmt.Errorf("%w (%s): the controller refused this device's TLS certificate: %w", ErrRefused, path, err)
	case errors.As(err, &rerr) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		// net/http turns the tls.RecordHeaderError of a plain HTTP answer
		// into an untyped error: its text is all there is.
		return fmt.Errorf("cannot talk to the controller (%s): it does not speak TLS there: %w", path, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("cannot talk to the controller (%s): %w", path, err)
	}
	return fmt.Errorf("%w (%s): %w", ErrUnreachable, path, err)
}
