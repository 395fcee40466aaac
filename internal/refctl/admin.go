package refctl

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
)

// The operator's commands, methods of a Controller: each touches one
// device's record in the store (as a request does), so they may run while
// the controller's replicas serve.

// AddDevice adds a device that will enrol with the token returned: a
// one-time secret, valid for 24 hours, that only its SHA-256 is kept of.
// pcrs are the PCRs its quotes must cover (nil: DefaultPCRs); claims, the
// claims they must carry with these values.
func (c *Controller) AddDevice(ctx context.Context, name string, pcrs []int, claims map[string]string) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("cannot add device: %w", err)
	}
	if pcrs == nil {
		pcrs = DefaultPCRs
	}
	pcrs = slices.Sorted(slices.Values(pcrs))
	if err := checkPCRList(pcrs); err != nil {
		return "", fmt.Errorf("cannot add device %s: %w: %v", name, ErrInvalid, err)
	}
	if err := ctlproto.CheckClaims(claims); err != nil {
		return "", fmt.Errorf("cannot add device %s: %w: %v", name, ErrInvalid, err)
	}
	tok, t, err := newToken()
	if err != nil {
		return "", fmt.Errorf("cannot add device %s: %w", name, err)
	}
	// The token's index first: one found without its device is no use.
	if err := c.st.tokenGiven(ctx, t.Hash, name); err != nil {
		return "", fmt.Errorf("cannot add device %s: %w", name, err)
	}
	err = c.st.create(ctx, name, &device{PCRs: pcrs, Claims: cloneClaims(claims), Token: t})
	if errors.Is(err, ErrExists) {
		err = fmt.Errorf("%w (to enrol it again, after its TPM or disk was replaced: device add --reenrol)", err)
	}
	if err != nil {
		return "", fmt.Errorf("cannot add device %s: %w", name, err)
	}
	return tok, nil
}

// Reenrol gives a device a new enrolment token. Enrolling with it replaces
// the device's attestation key, storage root key, client certificate and
// expected PCR values; its vaults and their keys are kept. Until then the
// device goes on as it is.
func (c *Controller) Reenrol(ctx context.Context, name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("cannot re-enrol device: %w", err)
	}
	tok, t, err := newToken()
	if err != nil {
		return "", fmt.Errorf("cannot re-enrol device %s: %w", name, err)
	}
	if _, err := c.st.get(ctx, name); err != nil {
		return "", fmt.Errorf("cannot re-enrol device %s: %w", name, err)
	}
	if err := c.st.tokenGiven(ctx, t.Hash, name); err != nil {
		return "", fmt.Errorf("cannot re-enrol device %s: %w", name, err)
	}
	err = c.withDevice(ctx, name, func(d *device) error {
		d.Token, d.EnrolNonce = t, nil
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("cannot re-enrol device %s: %w", name, err)
	}
	return tok, nil
}

func newToken() (string, *token, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	return tok, &token{Hash: hashToken(tok), Expires: time.Now().Add(tokenLifetime)}, nil
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// Revoke marks a device reported stolen (revoked true): from its next
// request on, every vault is withheld, with a reason it can show. Revoke
// with revoked false restores it.
func (c *Controller) Revoke(ctx context.Context, name string, revoked bool) error {
	verb := "revoke"
	if !revoked {
		verb = "restore"
	}
	if err := c.withDevice(ctx, name, func(d *device) error { d.Revoked = revoked; return nil }); err != nil {
		return fmt.Errorf("cannot %s device %s: %w", verb, name, err)
	}
	return nil
}

// Approve makes the PCR values of the device's last refused quote the
// expected ones (after an update the operator trusts changed them), and
// returns the PCRs that changed.
func (c *Controller) Approve(ctx context.Context, name string) ([]int, error) {
	var changed []int
	err := c.withDevice(ctx, name, func(d *device) error {
		if d.Refused == nil {
			return fmt.Errorf("%w: no refused quote to approve (the device's last quote was good, or it has sent none)", ErrInvalid)
		}
		changed = slices.Clone(d.Refused.Changed)
		d.Expected = maps.Clone(d.Refused.PCRs)
		d.Approved, d.Refused = changed, nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot approve device %s: %w", name, err)
	}
	return changed, nil
}

// Expect replaces the claims the device's quotes must carry (nil or empty:
// none).
func (c *Controller) Expect(ctx context.Context, name string, claims map[string]string) error {
	if err := ctlproto.CheckClaims(claims); err != nil {
		return fmt.Errorf("cannot set the claims of device %s: %w: %v", name, ErrInvalid, err)
	}
	err := c.withDevice(ctx, name, func(d *device) error { d.Claims = cloneClaims(claims); return nil })
	if err != nil {
		return fmt.Errorf("cannot set the claims of device %s: %w", name, err)
	}
	return nil
}

// Rotate asks for a new key version of a device's vault (by name or UUID).
// It is made at the device's next key request, once the device has moved
// its vault to the current version: never two versions ahead of it.
func (c *Controller) Rotate(ctx context.Context, dev, vaultID string) (Rotation, error) {
	var r Rotation
	err := c.withDevice(ctx, dev, func(d *device) error {
		id, v, err := d.findVault(vaultID)
		if err != nil {
			return err
		}
		v.RotatePending = true
		r = Rotation{Device: dev, Vault: v.Name, UUID: id, Acked: v.Acked}
		if len(v.Keys) > 0 {
			r.Newest = v.Keys[len(v.Keys)-1].Version
		}
		return nil
	})
	if err != nil {
		return Rotation{}, fmt.Errorf("cannot rotate vault %s of device %s: %w", vaultID, dev, err)
	}
	return r, nil
}

// Rotation is what Rotate did: the vault's rotation is pending, and when the
// new key version is made.
type Rotation struct {
	Device, Vault, UUID string
	Newest              int // the newest key version the controller keeps
	Acked               int // the version the device last reported its vault wrapped to
}

// Waiting tells whether the device has not yet finished the last rotation:
// the new version is then made once it reports Newest, not at its next key
// request.
func (r Rotation) Waiting() bool { return r.Acked != r.Newest }

func (d *device) findVault(id string) (string, *vault, error) {
	if v := d.Vaults[id]; v != nil {
		return id, v, nil
	}
	var found []string
	for u, v := range d.Vaults {
		if v.Name == id {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return "", nil, ErrUnknownVault
	case 1:
		return found[0], d.Vaults[found[0]], nil
	}
	slices.Sort(found)
	return "", nil, fmt.Errorf("%w: vaults %s are all named %s: give the UUID", ErrInvalid, strings.Join(found, ", "), id)
}

// withDevice runs fn on the named device's record and saves it if fn
// succeeds. fn may run more than once (store.update).
func (c *Controller) withDevice(ctx context.Context, name string, fn func(d *device) error) error {
	if err := checkName(name); err != nil {
		return err
	}
	return c.st.update(ctx, name, func(d *device) (bool, error) {
		if err := fn(d); err != nil {
			return false, err
		}
		return true, nil
	})
}

func checkName(name string) error {
	if !idRE.MatchString(name) {
		return fmt.Errorf("%w: device name %q: use 1 to 64 of a-z 0-9 . _ - (starting with a letter or digit)", ErrInvalid, name)
	}
	return nil
}

func cloneClaims(c map[string]string) map[string]string {
	if len(c) == 0 {
		return nil
	}
	return maps.Clone(c)
}

// DeviceView is what an operator sees of a device.
type DeviceView struct {
	Name       string    `json:"name"`
	Enrolled   bool      `json:"enrolled"`
	EnrolledAt time.Time `json:"enrolled_at,omitzero"`
	// TokenExpires: an enrolment token waits, unused, until then.
	TokenExpires time.Time         `json:"token_expires,omitzero"`
	Revoked      bool              `json:"revoked"`
	PCRs         []int             `json:"pcrs"`
	Expected     map[int]string    `json:"expected,omitempty"`
	Claims       map[string]string `json:"claims,omitempty"`
	Refused      *RefusedView      `json:"refused,omitempty"`
	Vaults       []VaultView       `json:"vaults"`
}

// RefusedView is the device's last quote refused for its PCR values.
type RefusedView struct {
	At      time.Time      `json:"at"`
	Reason  string         `json:"reason"`
	Changed []int          `json:"changed"`
	PCRs    map[int]string `json:"pcrs"`
}

// VaultView is one of a device's vaults.
type VaultView struct {
	Name          string    `json:"name"`
	UUID          string    `json:"uuid"`
	Attestation   bool      `json:"attestation"`
	Versions      []int     `json:"versions"` // key versions kept
	Acked         int       `json:"acked"`    // the version the device reported
	RotatePending bool      `json:"rotate_pending,omitempty"`
	Escrowed      bool      `json:"escrowed"`
	EscrowUpdated time.Time `json:"escrow_updated,omitzero"`
	LastUnlock    string    `json:"last_unlock,omitempty"`
	LastUnlockAt  time.Time `json:"last_unlock_at,omitzero"`
}

// Show is what the controller knows of a device.
func (c *Controller) Show(ctx context.Context, name string) (*DeviceView, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("cannot show device: %w", err)
	}
	d, err := c.st.get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("cannot show device %s: %w", name, err)
	}
	return d.view(name, time.Now()), nil
}

// List is a page of devices, by name: at most limit (1 to 1,000) after the
// name after ("": from the first).
func (c *Controller) List(ctx context.Context, after string, limit int) (*Page, error) {
	if err := checkAfter(after); err != nil {
		return nil, fmt.Errorf("cannot list devices: %w", err)
	}
	if limit < 1 || limit > pageMax {
		return nil, fmt.Errorf("cannot list devices: %w: a page is 1 to %d devices, not %d", ErrInvalid, pageMax, limit)
	}
	page, err := c.st.list(ctx, after, limit+1)
	if err != nil {
		return nil, fmt.Errorf("cannot list devices: %w", err)
	}
	p := &Page{Devices: []*DeviceView{}}
	if len(page) > limit {
		page = page[:limit]
		p.Next = page[limit-1].name
	}
	now := time.Now()
	for _, l := range page {
		p.Devices = append(p.Devices, l.d.view(l.name, now))
	}
	return p, nil
}

func (d *device) view(name string, now time.Time) *DeviceView {
	dv := &DeviceView{Name: name, Enrolled: !d.Enrolled.IsZero(), EnrolledAt: d.Enrolled, Revoked: d.Revoked,
		PCRs: slices.Clone(d.PCRs), Expected: maps.Clone(d.Expected), Claims: maps.Clone(d.Claims), Vaults: []VaultView{}}
	if d.Token != nil && !d.Token.Used && now.Before(d.Token.Expires) {
		dv.TokenExpires = d.Token.Expires
	}
	if r := d.Refused; r != nil {
		dv.Refused = &RefusedView{At: r.At, Reason: r.Reason, Changed: slices.Clone(r.Changed), PCRs: maps.Clone(r.PCRs)}
	}
	for _, id := range slices.Sorted(maps.Keys(d.Vaults)) {
		v := d.Vaults[id]
		vv := VaultView{Name: v.Name, UUID: id, Attestation: v.Attestation, Acked: v.Acked, RotatePending: v.RotatePending,
			Escrowed: len(v.Escrow) > 0, EscrowUpdated: v.EscrowUpdated, LastUnlock: v.LastUnlock, LastUnlockAt: v.LastUnlockAt}
		for _, k := range v.Keys {
			vv.Versions = append(vv.Versions, k.Version)
		}
		dv.Vaults = append(dv.Vaults, vv)
	}
	slices.SortStableFunc(dv.Vaults, func(a, b VaultView) int { return strings.Compare(a.Name, b.Name) })
	return dv
}
