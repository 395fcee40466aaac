package refctl

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/mu"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// reasonTooMany: a vault beyond what the controller keeps for one device.
var reasonTooMany = fmt.Sprintf("the controller keeps at most %d vaults for one device", maxDeviceVaults)

// Reasons a device is told.
const (
	reasonStolen    = "the device is reported stolen: keys withheld"
	reasonAwaiting  = "awaiting attestation: "
	reasonNoEscrow  = "no escrowed key for this vault"
	reasonNeedQuote = "a vault asked for is released only after attestation: answer a challenge with a quote"
)

func (s *server) challenge(r *http.Request) reply {
	var req ctlproto.ChallengeRequest
	return s.deviceCall(r, &req, func(name string, d *device) (bool, reply) {
		now := s.now()
		nonce, err := randomNonce()
		if err != nil {
			return false, internal(name, err)
		}
		d.pruneChallenges(now)
		if d.Challenges == nil {
			d.Challenges = map[string]*challenge{}
		}
		exp := now.Add(nonceLifetime)
		d.Challenges[hex.EncodeToString(nonce)] = &challenge{Expires: exp}
		c := &ctlproto.Challenge{Nonce: nonce, PCRs: d.PCRs, Claims: slices.Sorted(maps.Keys(d.Claims)), Expires: exp.UTC()}
		return true, ok(name, c, "challenge issued")
	})
}

// pruneChallenges forgets expired challenges, and makes room for one more
// within maxChallenges: the spent ones first, then the oldest.
func (d *device) pruneChallenges(now time.Time) {
	for n, c := range d.Challenges {
		if !now.Before(c.Expires) {
			delete(d.Challenges, n)
		}
	}
	for len(d.Challenges) >= maxChallenges {
		var victim string
		for n, c := range d.Challenges {
			v := d.Challenges[victim]
			if victim == "" || c.Used && !v.Used || c.Used == v.Used && c.Expires.Before(v.Expires) {
				victim = n
			}
		}
		delete(d.Challenges, victim)
	}
}

func (s *server) keys(r *http.Request) reply {
	var req ctlproto.KeysRequest
	return s.deviceCall(r, &req, func(name string, d *device) (bool, reply) {
		now := s.now()
		changed := false
		res := ctlproto.AttestResult{Status: ctlproto.AttestNotAsked}
		if q := req.Quote; q != nil {
			c := d.Challenges[hex.EncodeToString(q.Nonce)]
			switch {
			case c != nil && c.Used && !bytes.Equal(c.UsedBy, req.RequestNonce):
				return false, fail(http.StatusConflict, name, "nonce already used: ask for a new challenge")
			case c == nil || !now.Before(c.Expires):
				res = ctlproto.AttestResult{Status: ctlproto.AttestRefused,
					Reason: "the quote answers no challenge this controller issued to this device, or one that expired: ask for a new challenge"}
			default:
				// Spent before it is checked: a quote that fails burns it
				// too. By this request: the same request sent again (its
				// answer was lost with a replica or a store node) is
				// answered again, as it would have been; any other is 409.
				c.Used, c.UsedBy, changed = true, slices.Clone(req.RequestNonce), true
				res = d.attest(q, now)
			}
		}
		needed := false
		for _, vr := range req.Vaults {
			v := d.Vaults[vr.UUID]
			switch {
			case v == nil && len(d.Vaults) >= maxDeviceVaults:
				continue
			case v == nil:
				nv, err := newVault(vr.Name, vr.Attestation, now)
				if err != nil {
					return changed, internal(name, err)
				}
				if d.Vaults == nil {
					d.Vaults = map[string]*vault{}
				}
				d.Vaults[vr.UUID], v, changed = nv, nv, true
			case vr.Attestation && !v.Attestation || vr.Name != v.Name:
				v.Attestation, v.Name, changed = v.Attestation || vr.Attestation, vr.Name, true
			}
			needed = needed || v.Attestation || vr.Escrow
		}
		if needed && res.Status == ctlproto.AttestNotAsked {
			res = ctlproto.AttestResult{Status: ctlproto.AttestRequired, Reason: reasonNeedQuote}
		}
		b := &ctlproto.Bundle{Version: ctlproto.Version, DeviceID: name, RequestNonce: req.RequestNonce,
			Issued: now.UTC(), Attestation: res, Vaults: []ctlproto.VaultRelease{}}
		released := 0
		for _, vr := range req.Vaults {
			rel, ch, err := s.release(d, vr, res, now)
			if err != nil {
				return true, internal(name, fmt.Errorf("vault %s: %w", vr.UUID, err))
			}
			changed = changed || ch
			if rel.Status == ctlproto.Released {
				released++
			}
			b.Vaults = append(b.Vaults, rel)
		}
		sb, err := ctlproto.Sign(s.k.signer, b)
		if err != nil {
			return changed, internal(name, err)
		}
		if len(sb.Payload) > ctlproto.MaxBody/2 {
			return changed, fail(http.StatusBadRequest, name, "the answer would be too large: ask for fewer vaults at once")
		}
		verdict := fmt.Sprintf("attestation %s; %d released, %d withheld", res.Status, released, len(b.Vaults)-released)
		if res.Reason != "" {
			verdict += " (" + res.Reason + ")"
		}
		return changed, ok(name, sb, verdict)
	})
}

// attest verifies a quote answering one of d's challenges.
func (d *device) attest(q *ctlproto.Quote, now time.Time) ctlproto.AttestResult {
	if why := checkGenuine(q, d.AKPublic, q.Nonce, d.PCRs); why != "" {
		return ctlproto.AttestResult{Status: ctlproto.AttestRefused, Reason: why}
	}
	quoted := q.Values()
	res := judge(d.expectedValues(), quoted, d.Claims, q.Claims)
	switch {
	case res.Status == ctlproto.AttestVerified:
		d.Refused = nil
		if len(d.Approved) > 0 {
			res.ChangedPCRs, d.Approved = d.Approved, nil
			res.Reason = "an operator approved the new values of PCRs " + pcrList(res.ChangedPCRs)
		}
	case len(res.ChangedPCRs) > 0:
		// Genuine values, kept for an operator to approve.
		vals := map[int]string{}
		for p, v := range quoted {
			vals[p] = hex.EncodeToString(v)
		}
		d.Refused = &refusal{At: now, Reason: res.Reason, Changed: res.ChangedPCRs, PCRs: vals}
	}
	return res
}

// release decides one vault: released with its keys (sealed to the
// device's TPM) and escrowed key as asked, or withheld with the reason.
func (s *server) release(d *device, vr ctlproto.VaultRequest, res ctlproto.AttestResult, now time.Time) (ctlproto.VaultRelease, bool, error) {
	withheld := func(reason string) (ctlproto.VaultRelease, bool, error) {
		return ctlproto.VaultRelease{UUID: vr.UUID, Status: ctlproto.Withheld, Reason: reason}, false, nil
	}
	v := d.Vaults[vr.UUID]
	switch {
	case v == nil:
		return withheld(reasonTooMany)
	case d.Revoked:
		return withheld(reasonStolen)
	case (v.Attestation || vr.Escrow) && res.Status != ctlproto.AttestVerified:
		why := res.Reason
		if why == "" {
			why = res.Status
		}
		return withheld(truncate(reasonAwaiting + why))
	}
	rel := ctlproto.VaultRelease{UUID: vr.UUID, Status: ctlproto.Released}
	changed := false
	if vr.Keys {
		if rotationDue(v, now, s.opts.RotateEvery) {
			if err := v.rotate(now); err != nil {
				return rel, false, err
			}
			changed = true
		}
		srk, err := unmarshalSRK(d.SRKPublic)
		if err != nil {
			return rel, changed, err
		}
		cur, prev := releaseKeys(v, vr.KeyVersion)
		if rel.Current, err = sealKey(srk, cur); err != nil {
			return rel, changed, err
		}
		rel.Previous = rel.Current
		if prev != cur {
			if rel.Previous, err = sealKey(srk, prev); err != nil {
				return rel, changed, err
			}
		}
	}
	if vr.Escrow {
		switch {
		case len(v.Escrow) > 0:
			// Sealed to the device's own TPM: given back as it came.
			rel.Escrow = slices.Clone(v.Escrow)
		case !vr.Keys:
			return withheld(reasonNoEscrow)
		default:
			rel.Reason = reasonNoEscrow
		}
	}
	return rel, changed, nil
}

func sealKey(srk *tpm2.Public, k *vaultKey) (*ctlproto.Key, error) {
	imp, err := tpm.SealToTPM(srk, k.Key)
	if err != nil {
		return nil, err
	}
	b, err := imp.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("cannot encode the sealed key: %w", err)
	}
	return &ctlproto.Key{Version: k.Version, Sealed: b}, nil
}

// unmarshalSRK reads the storage root key's public area recorded at
// enrolment (tpm.Enrolment.SRKPublic).
func unmarshalSRK(b []byte) (*tpm2.Public, error) {
	var pub tpm2.Public
	if n, err := mu.UnmarshalFromBytes(b, &pub); err != nil || n != len(b) {
		return nil, fmt.Errorf("not a TPMT_PUBLIC (%v)", err)
	}
	return &pub, nil
}

func (s *server) report(r *http.Request) reply {
	var req ctlproto.Report
	return s.deviceCall(r, &req, func(name string, d *device) (bool, reply) {
		for _, vr := range req.Vaults {
			if len(vr.Escrow) == 0 {
				continue
			}
			if _, err := tpm.UnmarshalImportable(vr.Escrow); err != nil {
				return false, fail(http.StatusBadRequest, name, fmt.Sprintf("vaults: %s: escrow: %v", vr.UUID, err))
			}
		}
		now := s.now()
		changed := false
		var acked, escrowed, ignored int
		for _, vr := range req.Vaults {
			v := d.Vaults[vr.UUID]
			if v == nil && len(vr.Escrow) > 0 && vr.Name != "" && !d.Revoked && len(d.Vaults) < maxDeviceVaults {
				// A vault the TPM alone wraps (key source tpm): the
				// controller learns of it from its first escrow.
				nv, err := newVault(vr.Name, false, now)
				if err != nil {
					return false, internal(name, err)
				}
				if d.Vaults == nil {
					d.Vaults = map[string]*vault{}
				}
				d.Vaults[vr.UUID], v, changed = nv, nv, true
			}
			if v == nil {
				ignored++
				continue
			}
			if vr.Unlocked != "" {
				v.LastUnlock, v.LastUnlockAt, changed = vr.Unlocked, now, true
			}
			if d.Revoked {
				// How a stolen device unlocks is worth knowing; what it
				// says of its keys is not worth keeping.
				continue
			}
			if vr.KeyVersion > 0 {
				if v.ack(vr.KeyVersion) {
					acked, changed = acked+1, true
				} else {
					ignored++
				}
			}
			if len(vr.Escrow) > 0 {
				v.Escrow, v.EscrowUpdated, changed = slices.Clone(vr.Escrow), now, true
				escrowed++
			}
		}
		verdict := fmt.Sprintf("report: %d key versions acked, %d keys escrowed", acked, escrowed)
		if ignored > 0 {
			verdict += fmt.Sprintf(", %d entries ignored (unknown vault, or a key version not kept)", ignored)
		}
		if d.Revoked {
			verdict += " (device reported stolen: only the unlock methods recorded)"
		}
		return changed, ok(name, &ctlproto.ReportAck{}, verdict)
	})
}
