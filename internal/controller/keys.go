package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// Keys asks the controller for the vaults' keys. If a vault needs
// attestation or asks for its escrowed key, the device first answers a
// challenge with a quote (claims: the config's, device_id, location,
// addresses). The bundle is checked (ctlproto.OpenBundle: signed by the
// pinned key, for this device, answering this request) before anything in it
// is used; then each key released is opened by the TPM. A vault asked for
// and not in the bundle is withheld; one in the bundle not asked for is
// ignored. The caller wipes the keys with Release.Clear.
func (d *Device) Keys(ctx context.Context, vaults []ctlproto.VaultRequest) (*Release, error) {
	e, err := d.Enrolment()
	if err != nil {
		return nil, err
	}
	signer, err := ctlproto.ParsePublicKey(e.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("cannot use the enrolment's signing key: %w", err)
	}
	req := &ctlproto.KeysRequest{RequestNonce: make([]byte, ctlproto.NonceSize), Vaults: vaults}
	if _, err := rand.Read(req.RequestNonce); err != nil {
		return nil, fmt.Errorf("cannot make a request nonce: %w", err)
	}
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("cannot ask for the vaults' keys: %w", err)
	}
	needQuote := false
	for _, v := range vaults {
		needQuote = needQuote || v.Attestation || v.Escrow
	}
	var claims map[string]string
	if needQuote {
		// Local mistakes first, before the controller is asked anything.
		if claims, err = buildClaims(d.Config, e.DeviceID, net.InterfaceAddrs); err != nil {
			return nil, err
		}
	}
	tr, done, err := d.transport(e)
	if err != nil {
		return nil, err
	}
	defer done()
	t, err := d.openTPM()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if needQuote {
		if _, req.Quote, err = answerChallenge(ctx, tr, t, claims); err != nil {
			return nil, err
		}
	}
	sb, err := tr.Keys(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("cannot get the vaults' keys from the controller: %w", err)
	}
	if sb == nil {
		return nil, fmt.Errorf("cannot use the controller's answer: %w: no bundle", ctlproto.ErrMalformed)
	}
	b, err := ctlproto.OpenBundle(sb, signer, e.DeviceID, req.RequestNonce)
	if err != nil {
		return nil, fmt.Errorf("cannot use the controller's answer: %w", err)
	}
	released := map[string]*ctlproto.VaultRelease{}
	for i := range b.Vaults {
		released[b.Vaults[i].UUID] = &b.Vaults[i]
	}
	r := &Release{Attestation: b.Attestation, Vaults: map[string]*VaultKeys{}}
	for _, v := range vaults {
		got, ok := released[v.UUID]
		if !ok {
			r.Vaults[v.UUID] = &VaultKeys{UUID: v.UUID, Status: ctlproto.Withheld, Reason: "the controller did not answer for this vault"}
			continue
		}
		r.Vaults[v.UUID] = openVault(t, v, got)
	}
	return r, nil
}

// openVault opens what the controller released for one vault, as asked.
func openVault(t *tpm2.TPMContext, asked ctlproto.VaultRequest, got *ctlproto.VaultRelease) *VaultKeys {
	vk := &VaultKeys{UUID: asked.UUID, Status: got.Status, Reason: got.Reason}
	if got.Status != ctlproto.Released {
		return vk
	}
	var errs []error
	if asked.Keys {
		switch {
		case got.Current == nil || got.Previous == nil:
			errs = append(errs, errors.New("the controller released no controller key"))
		default:
			var err error
			if vk.Current, err = openKey(t, "current", got.Current); err != nil {
				errs = append(errs, err)
			}
			if got.Previous.Version == got.Current.Version && bytes.Equal(got.Previous.Sealed, got.Current.Sealed) {
				if vk.Current != nil {
					vk.Previous = &Key{Version: vk.Current.Version, Secret: bytes.Clone(vk.Current.Secret)}
				}
			} else if vk.Previous, err = openKey(t, "previous", got.Previous); err != nil {
				errs = append(errs, err)
			}
			if vk.Current != nil && vk.Previous != nil && vk.Current.Version == vk.Previous.Version &&
				!bytes.Equal(vk.Current.Secret, vk.Previous.Secret) {
				errs = append(errs, fmt.Errorf("the current and previous keys are both version %d, yet differ", vk.Current.Version))
				clear(vk.Current.Secret)
				clear(vk.Previous.Secret)
				vk.Current, vk.Previous = nil, nil
			}
		}
	}
	if asked.Escrow {
		if got.Escrow == nil {
			errs = append(errs, errors.New("the controller released no escrowed key"))
		} else {
			s, err := openSealed(t, got.Escrow, EscrowKeySize)
			if err != nil {
				errs = append(errs, fmt.Errorf("cannot open the escrowed key: %w", err))
			}
			vk.Escrow = s
		}
	}
	if err := errors.Join(errs...); err != nil {
		vk.Err = fmt.Errorf("vault %s (%s): %w", asked.Name, asked.UUID, err)
	}
	return vk
}

func openKey(t *tpm2.TPMContext, which string, k *ctlproto.Key) (*Key, error) {
	s, err := openSealed(t, k.Sealed, ctlproto.KeySize)
	if err != nil {
		return nil, fmt.Errorf("cannot open the %s controller key (version %d): %w", which, k.Version, err)
	}
	return &Key{Version: k.Version, Secret: s}, nil
}

// openSealed opens a secret sealed to this TPM, which must be size bytes.
func openSealed(t *tpm2.TPMContext, sealed []byte, size int) ([]byte, error) {
	imp, err := tpm.UnmarshalImportable(sealed)
	if err != nil {
		return nil, err
	}
	s, err := tpm.OpenImported(t, imp)
	if err != nil {
		return nil, err
	}
	if len(s) != size {
		clear(s)
		return nil, fmt.Errorf("it holds %d bytes, not %d", len(s), size)
	}
	return s, nil
}

// answerChallenge gets a challenge and answers it with a quote of the PCRs
// it names, bound to its nonce and claims.
func answerChallenge(ctx context.Context, tr Transport, t *tpm2.TPMContext, claims map[string]string) (*ctlproto.Challenge, *ctlproto.Quote, error) {
	ch, err := tr.Challenge(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot get an attestation challenge from the controller: %w", err)
	}
	if ch == nil {
		return nil, nil, fmt.Errorf("cannot use the controller's challenge: %w: none", ctlproto.ErrMalformed)
	}
	if err := ch.Validate(); err != nil {
		return nil, nil, fmt.Errorf("cannot use the controller's challenge: %w: %v", ctlproto.ErrMalformed, err)
	}
	q, err := tpm.MakeQuote(t, ch.Nonce, claims, ch.PCRs)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot answer the controller's challenge: %w", err)
	}
	w, err := ctlproto.QuoteFromTPM(q)
	if err != nil {
		return nil, nil, err
	}
	if err := w.Validate(); err != nil {
		return nil, nil, fmt.Errorf("internal error: the quote is out of shape: %w", err)
	}
	return ch, w, nil
}
