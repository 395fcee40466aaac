// Package controller is the device's side of the controller protocol
// (internal/ctlproto): enrolment, the attestation challenge, the release of
// file vault keys, and the report after an apply.
//
// It exists to be the device's only door to the controller. Everything that
// comes from the network is checked by ctlproto before it is used: each
// answer is decoded strictly, and a key bundle must be signed by the key
// pinned at enrolment, for this device, answering this very request (its
// fresh nonce) before a key in it is looked at. The keys arrive sealed to
// this device's TPM (tpm.SealToTPM) and are opened only here, by the TPM;
// they are never logged, and a caller wipes them with Release.Clear.
//
// # Enrolment
//
// Enrol (`edgeseal controller enrol`) proves to the controller, with a
// one-time token, that the device's storage root key is in the same TPM as
// its attestation key, quotes the PCRs the controller asks for (trust on
// first use), and gets a TLS client certificate for a key made here. What it
// leaves, in paths.Enrolment and paths.ClientKey, is all later exchanges
// need: LoadEnrolment reads it.
//
// # Errors
//
// ErrUnreachable is an outage (no connection, a timeout): a caller may fall
// back to keys it kept offline. Everything else is not: ErrRefused (the
// controller said no, or refused the device's certificate),
// ErrServerCertificate (a server not from the enrolled CA: an attacker in
// the way, or a misconfiguration), ctlproto.ErrMalformed,
// ctlproto.ErrBundleSignature, ctlproto.ErrReplay and ctlproto.ErrOtherDevice
// (an answer that must not be trusted).
//
// # Transports
//
// HTTPS with mutual TLS 1.3 is built in (NewHTTPS); a real controller's
// adapter implements Transport, and Device checks what it returns the same
// way.
package controller

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// EscrowKeySize is the size of an escrowed vault key (an fscrypt v2 key).
const EscrowKeySize = 64

// Errors callers act on.
var (
	// ErrNotEnrolled: there is no enrolment on this device. Run
	// `edgeseal controller enrol`.
	ErrNotEnrolled = errors.New("this device is not enrolled with a controller")
	// ErrUnreachable: the controller could not be reached (a dial, the TLS
	// handshake cut off by the network, a timeout). Callers may fall back to
	// offline keys.
	ErrUnreachable = errors.New("the controller cannot be reached")
	// ErrRefused: the controller answered with an error (wrapped with its
	// HTTP status and message), or refused the device's TLS certificate.
	ErrRefused = errors.New("the controller refused the request")
	// ErrServerCertificate: the server's TLS certificate is not from the
	// enrolled CA, or not for the controller's address. Not an outage: an
	// attacker in the way, or the controller's certificate or the URL
	// changed. Check them; enrol again with the right --ca if needed.
	ErrServerCertificate = errors.New("the controller's TLS certificate is not trusted (not from the enrolled CA, or not for its address)")
	// ErrBadEnrolment: the enrolment file does not parse. Enrol again with
	// `edgeseal controller enrol --force`.
	ErrBadEnrolment = errors.New("the controller enrolment is corrupt (enrol again with edgeseal controller enrol --force)")
)

// Transport carries the protocol. HTTPS (mutual TLS) is the one built in
// (NewHTTPS); a real controller's adapter implements it. Device checks every
// answer again, whatever the transport.
type Transport interface {
	Challenge(ctx context.Context) (*ctlproto.Challenge, error)
	Keys(ctx context.Context, req *ctlproto.KeysRequest) (*ctlproto.SignedBundle, error)
	Report(ctx context.Context, r *ctlproto.Report) error
}

// Key is a controller key, opened by the TPM (ctlproto.KeySize bytes).
type Key struct {
	Version int
	Secret  []byte
}

// VaultKeys is what the controller released for one vault.
type VaultKeys struct {
	// UUID names the vault; Status is ctlproto.Released or ctlproto.Withheld,
	// and Reason the controller's (or "the controller did not answer for
	// this vault").
	UUID, Status, Reason string
	// Current and Previous are the vault's controller keys (the same when no
	// rotation is under way); nil when withheld, not asked for, or not opened.
	Current, Previous *Key
	// Escrow is the escrowed vault key (EscrowKeySize bytes); nil when
	// withheld, not asked for, or not opened.
	Escrow []byte
	// Err: a key asked for that was not released or did not open (not
	// sealed to this TPM, the wrong size). The keys that opened still count.
	Err error
}

// Release is the controller's answer to Keys.
type Release struct {
	// Attestation is the controller's verdict on the quote sent (not-asked
	// if none was needed).
	Attestation ctlproto.AttestResult
	// Vaults has one entry for each vault asked for, by UUID.
	Vaults map[string]*VaultKeys
}

// Clear wipes every secret in r.
func (r *Release) Clear() {
	if r == nil {
		return
	}
	for _, v := range r.Vaults {
		v.clear()
	}
}

func (v *VaultKeys) clear() {
	for _, k := range []*Key{v.Current, v.Previous} {
		if k != nil {
			clear(k.Secret)
		}
	}
	clear(v.Escrow)
}

// Device is this device as a controller sees it: its enrolment, its TPM,
// and how it answers a challenge.
type Device struct {
	Paths  paths.Paths
	Config config.Controller
	// OpenTPM opens the device's TPM; Device closes what it opens.
	OpenTPM func() (*tpm2.TPMContext, error)
	// Transport reaches the controller; nil is NewHTTPS from the enrolment.
	Transport Transport
}

// Enrolment is the device's enrolment (LoadEnrolment).
func (d *Device) Enrolment() (*Enrolment, error) {
	return LoadEnrolment(d.Paths)
}

// transport is d.Transport, or NewHTTPS from e; done ends the connections
// kept open by one Device made.
func (d *Device) transport(e *Enrolment) (tr Transport, done func(), err error) {
	if d.Transport != nil {
		return d.Transport, func() {}, nil
	}
	h, err := NewHTTPS(d.Paths, e, d.Config.Timeout.D())
	if err != nil {
		return nil, nil, err
	}
	return h, h.(*httpsTransport).CloseIdleConnections, nil
}

func (d *Device) openTPM() (*tpm2.TPMContext, error) {
	if d.OpenTPM == nil {
		return nil, errors.New("internal error: controller.Device has no TPM opener")
	}
	return d.OpenTPM()
}

// Quote gets a challenge from the controller and answers it with a quote,
// as Keys would, without sending it: what an operator checks the claims
// and PCRs with.
func (d *Device) Quote(ctx context.Context) (*ctlproto.Challenge, *ctlproto.Quote, error) {
	e, err := d.Enrolment()
	if err != nil {
		return nil, nil, err
	}
	claims, err := buildClaims(d.Config, e.DeviceID, net.InterfaceAddrs)
	if err != nil {
		return nil, nil, err
	}
	tr, done, err := d.transport(e)
	if err != nil {
		return nil, nil, err
	}
	defer done()
	t, err := d.openTPM()
	if err != nil {
		return nil, nil, err
	}
	defer t.Close()
	return answerChallenge(ctx, tr, t, claims)
}

// Report tells the controller what the device did after an apply.
func (d *Device) Report(ctx context.Context, r *ctlproto.Report) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("cannot report to the controller: %w", err)
	}
	e, err := d.Enrolment()
	if err != nil {
		return err
	}
	tr, done, err := d.transport(e)
	if err != nil {
		return err
	}
	defer done()
	if err := tr.Report(ctx, r); err != nil {
		return fmt.Errorf("cannot report to the controller: %w", err)
	}
	return nil
}

// SealForEscrow seals a vault key (EscrowKeySize bytes) to this device's own
// TPM, for the controller to keep (VaultReport.Escrow): the controller
// cannot read it; it hands it back when the device's own sealed copy no
// longer opens (ctlproto.VaultRequest.Escrow).
func (d *Device) SealForEscrow(key []byte) ([]byte, error) {
	if len(key) != EscrowKeySize {
		return nil, fmt.Errorf("cannot seal a vault key for escrow: %d bytes, not %d", len(key), EscrowKeySize)
	}
	t, err := d.openTPM()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	srk, err := tpm.SRKPublic(t)
	if err != nil {
		return nil, err
	}
	imp, err := tpm.SealToTPM(srk, key)
	if err != nil {
		return nil, fmt.Errorf("cannot seal a vault key for escrow: %w", err)
	}
	return imp.MarshalBinary()
}
