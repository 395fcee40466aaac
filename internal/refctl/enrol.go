package refctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/strictjson"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// Enrolment, authenticated by the one-time token an operator got from
// AddDevice. The device asks for a nonce, then sends its attestation key,
// its storage root key certified by that key over the nonce
// (tpm.Enrolment), a quote of its PCR selection over the same nonce, and
// the public half of its TLS client key. The controller trusts the
// attestation key on first use, because the token vouches for the device (a
// real controller checks the TPM's endorsement certificate too), records the
// quoted PCR values as the expected ones, and certifies the client key.

// maxEnrolment bounds the tpm.Enrolment JSON (ctlproto bounds it too).
const maxEnrolment = 4 * ctlproto.MaxSealed

// findToken is the device whose unused, unexpired token tok is; else the
// reason it is refused. The store finds the device by the token's hash; its
// record must hold that same hash.
func (s *server) findToken(ctx context.Context, tok string) (string, string, error) {
	name, err := s.st.byToken(ctx, hashToken(tok))
	if err != nil || name == "" {
		return "", "the enrolment token is not one this controller issued", err
	}
	return name, "", nil
}

// tokenProblem is why d does not accept tok now, or "".
func tokenProblem(d *device, tok string, now time.Time) string {
	switch {
	case d.Token == nil || subtle.ConstantTimeCompare([]byte(d.Token.Hash), []byte(hashToken(tok))) != 1:
		return "the enrolment token is not one this controller issued"
	case d.Token.Used:
		return "the enrolment token was used already: ask the operator for a new one (device add --reenrol)"
	case !now.Before(d.Token.Expires):
		return "the enrolment token expired: ask the operator for a new one (device add --reenrol)"
	}
	return ""
}

// withToken runs fn on the record of the device tok was given to, once the
// token is found good; else out is the refusal.
func (s *server) withToken(r *http.Request, tok string, fn func(name string, d *device, now time.Time) (bool, reply, error)) reply {
	name, why, err := s.findToken(r.Context(), tok)
	switch {
	case err != nil:
		return internal("", err)
	case name == "":
		return fail(http.StatusUnauthorized, "", why)
	}
	var out reply
	err = s.st.update(r.Context(), name, func(d *device) (bool, error) {
		now := s.now()
		if why := tokenProblem(d, tok, now); why != "" {
			out = fail(http.StatusUnauthorized, name, why)
			return false, nil
		}
		changed, rep, err := fn(name, d, now)
		out = rep
		return changed, err
	})
	switch {
	case errors.Is(err, ErrUnknownDevice):
		return fail(http.StatusUnauthorized, "", "the enrolment token is not one this controller issued")
	case err != nil:
		return internal(name, err)
	}
	return out
}

func randomNonce() ([]byte, error) {
	n := make([]byte, ctlproto.NonceSize)
	_, err := rand.Read(n)
	return n, err
}

func (s *server) enrolNonce(r *http.Request) reply {
	var req ctlproto.EnrolNonceRequest
	if err := ctlproto.Decode(r.Body, &req); err != nil {
		return fail(http.StatusBadRequest, "", err.Error())
	}
	return s.withToken(r, req.Token, func(name string, d *device, now time.Time) (bool, reply, error) {
		nonce, err := randomNonce()
		if err != nil {
			return false, reply{}, err
		}
		d.EnrolNonce = &enrolNonce{Nonce: nonce, Expires: now.Add(nonceLifetime)}
		return true, ok(name, &ctlproto.EnrolNonce{Nonce: nonce, PCRs: d.PCRs}, "enrolment nonce issued"), nil
	})
}

func (s *server) enrol(r *http.Request) reply {
	var req ctlproto.EnrolRequest
	if err := ctlproto.Decode(r.Body, &req); err != nil {
		return fail(http.StatusBadRequest, "", err.Error())
	}
	e, err := decodeEnrolment(req.Enrolment)
	if err != nil {
		return fail(http.StatusBadRequest, "", "enrolment: "+err.Error())
	}
	ak, err := tpm.ParseAKPublic([]byte(e.AKPublic))
	if err != nil {
		return fail(http.StatusBadRequest, "", "enrolment: ak_public: "+err.Error())
	}
	clientKey, err := ctlproto.ParsePublicKey(req.ClientKey)
	if err != nil {
		return fail(http.StatusBadRequest, "", "client_key: "+err.Error())
	}
	return s.withToken(r, req.Token, func(name string, d *device, now time.Time) (bool, reply, error) {
		if d.EnrolNonce == nil || !bytes.Equal(d.EnrolNonce.Nonce, req.Nonce) || !now.Before(d.EnrolNonce.Expires) {
			return false, fail(http.StatusForbidden, name, "the enrolment nonce is not the one issued, or it expired: ask for a new one"), nil
		}
		// The nonce is spent whatever happens next.
		d.EnrolNonce = nil
		if _, err := tpm.VerifyEnrolment(e, ak, req.Nonce); err != nil {
			return true, fail(http.StatusForbidden, name, "cannot enrol: "+err.Error()), nil
		}
		if why := checkGenuine(req.Quote, e.AKPublic, req.Nonce, d.PCRs); why != "" {
			return true, fail(http.StatusForbidden, name, "cannot enrol: the enrolment quote: "+why), nil
		}
		cert, err := issueClientCert(s.k.caKey, s.k.ca, name, clientKey)
		if err != nil {
			return true, internal(name, fmt.Errorf("cannot certify the client key: %w", err)), nil
		}
		signing, err := ctlproto.MarshalPublicKey(s.k.signingPublic())
		if err != nil {
			return true, internal(name, err), nil
		}
		verdict := "enrolled"
		if !d.Enrolled.IsZero() {
			verdict = "enrolled again (attestation key, storage root key and client certificate replaced)"
			if !bytes.Equal(d.SRKPublic, e.SRKPublic) {
				// Escrowed keys are sealed to the old TPM: no use any more.
				for _, v := range d.Vaults {
					v.Escrow, v.EscrowUpdated = nil, time.Time{}
				}
				verdict += "; escrowed keys dropped (sealed to the old TPM)"
			}
		}
		d.Token.Used = true
		d.Enrolled, d.AKPublic, d.SRKPublic = now, e.AKPublic, e.SRKPublic
		d.CertSerial = cert.SerialNumber.Text(16)
		d.Expected = map[int]string{}
		for p, v := range req.Quote.Values() {
			d.Expected[p] = hex.EncodeToString(v)
		}
		d.Challenges, d.Refused, d.Approved = nil, nil, nil
		return true, ok(name, &ctlproto.Enrolled{DeviceID: name, ClientCert: string(certPEM(cert.Raw)), SigningKey: signing}, verdict), nil
	})
}

// decodeEnrolment reads a tpm.Enrolment strictly.
func decodeEnrolment(data []byte) (*tpm.Enrolment, error) {
	var e tpm.Enrolment
	if err := strictjson.Decode(data, maxEnrolment, &e); err != nil {
		return nil, err
	}
	return &e, nil
}
