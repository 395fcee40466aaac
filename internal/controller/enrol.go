package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// Enrol enrols the device with the controller at urls (one, or its
// replicas, tried in turn as every exchange does), whose TLS certificate
// must chain to caPEM, with the one-time token the controller's operator
// gave: it asks for a nonce, has the TPM certify its storage root key and
// quote the PCRs the controller names over it, makes a TLS client key
// (written to p.ClientKey before it is sent), and sends all of it. The
// controller's answer is checked (the certificate is for our key and the
// device id it gave; the signing key parses) and written to p.Enrolment.
//
// An existing enrolment is never overwritten: remove it first (`edgeseal
// controller enrol --force`).
func Enrol(ctx context.Context, p paths.Paths, t *tpm2.TPMContext, urls []string, caPEM []byte, token string, timeout time.Duration) (*Enrolment, error) {
	// Everything local first: nothing is sent before it is all in order.
	switch _, err := os.Lstat(p.Enrolment); {
	case err == nil:
		return nil, fmt.Errorf("cannot enrol: this device is already enrolled (%s): to enrol again, replacing it, run edgeseal controller enrol --force", p.Enrolment)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("cannot enrol (run as root): %w", err)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	bases, err := NormalURLs(urls)
	if err != nil {
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	pool, err := parseCA(caPEM)
	if err != nil {
		return nil, fmt.Errorf("cannot enrol: the controller's CA: %w", err)
	}
	nreq := &ctlproto.EnrolNonceRequest{Token: token}
	if err := nreq.Validate(); err != nil {
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	if t == nil {
		return nil, errors.New("internal error: enrol has no TPM")
	}
	h, err := newHTTPS(bases, pool, nil, timeout)
	if err != nil {
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	defer h.client.CloseIdleConnections()

	var nonce ctlproto.EnrolNonce
	if err := h.post(ctx, ctlproto.PathEnrolNonce, nreq, &nonce); err != nil {
		return nil, fmt.Errorf("cannot enrol: cannot get a nonce: %w", err)
	}
	te, err := tpm.MakeEnrolment(t, nonce.Nonce)
	if err != nil {
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	teJSON, err := json.Marshal(te)
	if err != nil {
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	tq, err := tpm.MakeQuote(t, nonce.Nonce, nil, nonce.PCRs)
	if err != nil {
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	q, err := ctlproto.QuoteFromTPM(tq)
	if err != nil {
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	key, err := newClientKey(p)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	req := &ctlproto.EnrolRequest{Token: token, Nonce: nonce.Nonce, Enrolment: teJSON, Quote: q,
		ClientKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))}
	var got ctlproto.Enrolled
	if err := h.post(ctx, ctlproto.PathEnrol, req, &got); err != nil {
		return nil, fmt.Errorf("cannot enrol: %w", err)
	}
	e := &Enrolment{URLs: bases, DeviceID: got.DeviceID, CA: string(caPEM), SigningKey: got.SigningKey,
		ClientCert: got.ClientCert, Enrolled: time.Now().UTC().Truncate(time.Second)}
	cert, err := e.ClientCertificate()
	if err != nil {
		return nil, fmt.Errorf("cannot use the controller's answer to the enrolment: client_cert: %w: %v", ctlproto.ErrMalformed, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("cannot use the controller's answer to the enrolment: %w: the client certificate is not for the key sent", ctlproto.ErrMalformed)
	}
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("cannot use the controller's answer to the enrolment: %w: %v", ctlproto.ErrMalformed, err)
	}
	if err := writeEnrolment(p, e); err != nil {
		return nil, fmt.Errorf("cannot keep the enrolment (the controller has enrolled the device as %s): %w", e.DeviceID, err)
	}
	return e, nil
}

// newClientKey makes the device's TLS client key (ECDSA P-256) and writes it
// to p.ClientKey (0600, atomically).
func newClientKey(p paths.Paths) (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cannot make the TLS client key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("cannot encode the TLS client key: %w", err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	clear(der)
	defer clear(pemKey)
	if err := makeControllerDir(p); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(p.ClientKey, pemKey, 0o600, fsutil.Self); err != nil {
		return nil, fmt.Errorf("cannot keep the TLS client key: %w", err)
	}
	return key, nil
}
