// Package tokenclient gets a service's own Vault token from edgeseal's token
// provider (/run/edgeseal/tokend.sock), for services written in Go.
//
// The provider knows who the caller is from the kernel and systemd, so a
// client sends no credentials: it connects, asks, and gets the token of the
// service its process is configured as, or a refusal saying how it was seen.
//
//	tok, err := tokenclient.Fetch(ctx, tokenclient.Options{})
//	if err != nil { ... }                 // errors.Is(err, tokenclient.ErrRefused), ...
//	vault, err := tok.Client()             // a Vault client with the token set
//	go tok.KeepRenewed(ctx, nil)           // the token is periodic: keep it renewed
//
// The token's JSON, tok.MarshalFile(), is Vault's auth response
// ({"auth":{"client_token":...}}): what an EdgeX service reads from its
// secrets-token.json, and what `edgeseal token fetch` writes.
package tokenclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Errors of Fetch, for callers to act on with errors.Is.
var (
	// ErrNoProvider: nothing listens on the socket: edgeseal is not installed,
	// or edgeseal-tokend.socket is not started.
	ErrNoProvider = errors.New("no token provider")
	// ErrRefused: the provider does not give this caller a token; the error
	// says how the provider saw the caller.
	ErrRefused = errors.New("the token provider refused")
	// ErrSealed: Vault is sealed or not set up yet; try again later.
	ErrSealed = errors.New("Vault is sealed")
	// ErrOverloaded: too many requests at once; try again later.
	ErrOverloaded = errors.New("the token provider is overloaded")
	// ErrBadRequest: the provider could not read the request.
	ErrBadRequest = errors.New("bad request")
	// ErrProvider: the provider could not issue a token.
	ErrProvider = errors.New("the token provider failed")
	// ErrProtocol: the answer was not one this package understands.
	ErrProtocol = errors.New("protocol error")
	// ErrInterrupted: the provider closed the connection before it answered
	// (it was killed or restarted, or turned the connection away); the socket
	// starts it again: try again.
	ErrInterrupted = errors.New("the token provider stopped before it answered")
	// ErrSuperseded: Vault no longer knows the token when the client checks
	// it: a newer token went to the same service in between (each revokes
	// the one before), or no Vault of this device issued it.
	ErrSuperseded = errors.New("Vault does not know the token")
)

// Temporary reports whether err may go away by itself: trying again later
// makes sense.
func Temporary(err error) bool {
	return errors.Is(err, ErrSealed) || errors.Is(err, ErrOverloaded) || errors.Is(err, ErrNoProvider) ||
		errors.Is(err, ErrInterrupted)
}

// Options of Fetch. The zero value asks the provider at its default socket for
// the caller's only service.
type Options struct {
	// Socket is the provider's socket; "" is $EDGESEAL_TOKEN_SOCKET, or
	// DefaultSocket if that is unset.
	Socket string
	// Service names the service the caller wants the token of; needed only when
	// its identity matches more than one service.
	Service string
	// VaultAddr is the Vault the client trusts, whatever the answer names: ""
	// is $EDGESEAL_VAULT_ADDR, else vault.listen in ConfigFile, else (no
	// config, as in a consumer snap) the answer's address if it is https on a
	// loopback IP.
	VaultAddr string
	// CACert is the CA certificate file that verifies Vault: "" is
	// $EDGESEAL_VAULT_CACERT, or DefaultCACert. It must be a file no other
	// service may write, and not in the socket's directory.
	CACert string
	// ConfigFile is the device's config Vault's address is read from when
	// VaultAddr is not set; "" is DefaultConfigFile.
	ConfigFile string
	// Cert asks for the service's TLS certificate too (Token.Certificate);
	// the service needs tls: true in the config.
	Cert bool
}

func (o Options) socket() string {
	if o.Socket != "" {
		return o.Socket
	}
	if s := os.Getenv("EDGESEAL_TOKEN_SOCKET"); s != "" {
		return s
	}
	return DefaultSocket
}

// fetchTimeout bounds a Fetch whose context has no deadline.
const fetchTimeout = 30 * time.Second

// Fetch asks the provider for the caller's token. A response-wrapped token is
// unwrapped before it is returned.
//
// Whoever answers on the socket is not trusted: the token is unwrapped and
// used only at the Vault the caller pins (Options.VaultAddr, Options.CACert),
// and returned only once that Vault says it was issued to this process in
// this boot; otherwise the error is ErrImpostor. The caller must share the
// provider's pid namespace (units and snaps do).
func Fetch(ctx context.Context, o Options) (*Token, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fetchTimeout)
		defer cancel()
	}
	socket := o.socket()
	ca, err := o.caCert(socket)
	if err != nil {
		return nil, err
	}
	me, err := thisProcess()
	if err != nil {
		return nil, err
	}
	resp, err := exchange(ctx, socket, Request{V: ProtocolVersion, Service: o.Service, Cert: o.Cert})
	if err != nil {
		return nil, err
	}
	sec, err := resp.Secret()
	if err != nil {
		return nil, fmt.Errorf("%w: the token is not a Vault response: %v", ErrProtocol, err)
	}
	if resp.Wrapped && (sec.WrapInfo == nil || sec.WrapInfo.Token == "") {
		return nil, fmt.Errorf("%w: a wrapped answer without a wrapping token", ErrProtocol)
	}
	if !resp.Wrapped && (sec.Auth == nil || sec.Auth.ClientToken == "") {
		return nil, fmt.Errorf("%w: the answer holds no token", ErrProtocol)
	}
	pinned, err := o.vaultPin(resp.VaultAddr)
	if errors.Is(err, ErrImpostor) {
		return nil, impostor(socket, err)
	}
	if err != nil {
		return nil, err
	}
	pinned.caCert = ca
	// The answer's VaultAddr and CACert are never used: the pinned ones are.
	t := &Token{Service: resp.Service, Identity: resp.Identity, VaultAddr: pinned.addr, CACert: ca, Secret: sec}
	if resp.Wrapped {
		if t.Secret, err = t.unwrap(ctx, sec.WrapInfo.Token); err != nil {
			if pinned.fromAnswer && isUnverified(err) {
				return nil, impostor(socket, notOurVault(pinned, err))
			}
			return nil, err
		}
		if t.Secret.Auth == nil || t.Secret.Auth.ClientToken == "" {
			return nil, fmt.Errorf("%w: the answer holds no token", ErrProtocol)
		}
	}
	if err := t.verify(ctx, pinned, me); err != nil {
		if errors.Is(err, ErrImpostor) {
			return nil, impostor(socket, err)
		}
		return nil, err
	}
	if o.Cert {
		if resp.TLS == nil {
			return nil, fmt.Errorf("%w: the answer holds no certificate", ErrProtocol)
		}
		// Checked against the pinned Vault's service CA, as the token was.
		if err := t.verifyCertificate(ctx, resp.TLS); err != nil {
			if errors.Is(err, ErrBadCertificate) {
				return nil, impostor(socket, err)
			}
			return nil, err
		}
		t.Certificate = resp.TLS
	}
	return t, nil
}

// impostor is the error of Fetch for an answer that did not come from the
// provider.
func impostor(socket string, err error) error {
	return fmt.Errorf("refusing the token from %s: %w; something else answers on the socket "+
		"(another snap connected to edgeseal's tokend slot may have replaced it): tell the operator, "+
		"and see edgeseal-tokend's journal", socket, err)
}

// exchange sends req on a new connection to socket and returns the
// provider's answer, or the error it stands for.
func exchange(ctx context.Context, socket string, req Request) (*Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: cannot reach the token provider at %s: edgeseal is not installed or "+
				"edgeseal-tokend.socket is not started (systemctl status edgeseal-tokend.socket)", ErrNoProvider, socket)
		}
		return nil, fmt.Errorf("cannot connect to the token provider at %s: %w", socket, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	line, _ := json.Marshal(req)
	if _, err := c.Write(append(line, '\n')); err != nil {
		if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			return nil, fmt.Errorf("cannot send the request to the token provider at %s: %w", socket, err)
		}
		// The provider closed first: its answer ("overloaded") may be
		// waiting; read it, or report the interruption.
	}
	r := bufio.NewReaderSize(io.LimitReader(c, MaxResponseSize+1), 4096)
	data, err := r.ReadBytes('\n')
	switch {
	case len(data) > MaxResponseSize:
		return nil, fmt.Errorf("%w: the answer of %s is longer than %d bytes", ErrProtocol, socket, MaxResponseSize)
	case (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) && len(data) == 0:
		return nil, fmt.Errorf("%w: %s closed the connection without an answer "+
			"(the provider's journal says why: journalctl -u edgeseal-tokend.service, or -u snap.edgeseal.tokend.service for the snap)", ErrInterrupted, socket)
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: the answer of %s ends without a newline", ErrProtocol, socket)
	case err != nil:
		return nil, fmt.Errorf("cannot read the answer of the token provider at %s: %w", socket, err)
	}
	var resp Response
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&resp); err != nil {
		return nil, fmt.Errorf("%w: the answer of %s is not JSON: %v", ErrProtocol, socket, err)
	}
	if resp.V != ProtocolVersion {
		return nil, fmt.Errorf("%w: the provider at %s speaks protocol version %d, this client %d", ErrProtocol, socket, resp.V, ProtocolVersion)
	}
	switch resp.Status {
	case StatusOK:
		return &resp, nil
	case StatusRefused:
		return nil, fmt.Errorf("%w %s: %s", ErrRefused, resp.Identity, resp.Error)
	case StatusSealed:
		return nil, fmt.Errorf("%w: try again later (%s)", ErrSealed, resp.Error)
	case StatusOverloaded:
		return nil, fmt.Errorf("%w: try again later (%s)", ErrOverloaded, resp.Error)
	case StatusBadRequest:
		return nil, fmt.Errorf("%w: %s", ErrBadRequest, resp.Error)
	case StatusError:
		return nil, fmt.Errorf("%w: %s (journalctl -u edgeseal-tokend.service)", ErrProvider, resp.Error)
	}
	return nil, fmt.Errorf("%w: unknown status %q", ErrProtocol, resp.Status)
}
