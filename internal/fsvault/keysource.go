package fsvault

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/edgeseal/edgeseal/internal/aesgcm"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/controller"
	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fscrypt"
	"github.com/edgeseal/edgeseal/internal/recovery"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// Key sources beyond the TPM: a vault's key wrapped by a key the controller
// releases (controller), or by one derived from both a TPM-sealed secret and
// the controller's key (tpm+controller). The controller's keys reach the
// device sealed to its TPM (internal/controller opens them); the device keeps
// a controller key only sealed by the TPM, and only for a vault with
// offline: true. The vault key itself never changes: a rotation of the
// controller's key, a change of key source, or a recovery rewraps it.

// KeyService is the device's door to its controller (controller.Device).
type KeyService interface {
	Keys(ctx context.Context, vaults []ctlproto.VaultRequest) (*controller.Release, error)
	Report(ctx context.Context, r *ctlproto.Report) error
	SealForEscrow(key []byte) ([]byte, error)
}

// How a vault was last unlocked (Status.UnlockedBy, and the report to the
// controller).
const (
	UnlockTPM        = "tpm"             // the TPM unsealed it (PCRs as approved)
	UnlockController = "controller-key"  // with the controller's key (and the TPM's share)
	UnlockEscrow     = "escrow-recovery" // the TPM refused (PCRs changed); the controller returned the escrowed key after a good quote
)

// Errors a caller acts on.
var (
	// ErrNoController: the vault's key source needs a controller, and the
	// device is not enrolled with one.
	ErrNoController = errors.New("the device is not enrolled with a controller (edgeseal controller enrol)")
	// ErrAwaitingAttestation: the controller withholds the keys until the
	// device passes its attestation challenge.
	ErrAwaitingAttestation = errors.New("awaiting attestation")
	// ErrWithheld: the controller withholds the vault's keys (a theft
	// reported, or its policy).
	ErrWithheld = errors.New("the controller withholds the vault's key")
	// ErrStaleKey: the controller's keys are older than the one the vault is
	// wrapped with: a replayed or rolled-back answer.
	ErrStaleKey = errors.New("the controller's keys are older than the vault's (a replayed or rolled-back answer)")
	// ErrWrongKey: a key the controller sent does not unwrap the vault's key.
	ErrWrongKey = errors.New("the controller's key does not unwrap the vault's key")
)

// controllerKeySize is the size of a controller key, and of the TPM's share.
const controllerKeySize = ctlproto.KeySize

// opened is a vault key, unwrapped, and what it took.
type opened struct {
	key     []byte
	method  string
	offline bool  // the controller key was the TPM-sealed offline copy
	changed []int // the PCRs the TPM found changed (escrow recovery)
	// current is the controller's newest key, when fetched; the vault is
	// rewrapped to it if it is newer than the protector's (a rotation).
	current *controller.Key
	// ck is the controller key that unwrapped it (controller sources).
	ck *controller.Key
}

func (o *opened) wipe() {
	clear(o.key)
	for _, k := range []*controller.Key{o.current, o.ck} {
		if k != nil {
			clear(k.Secret)
		}
	}
}

// hasController is true for the key sources that need a controller.
func hasController(source string) bool {
	return source == config.KeySourceController || source == config.KeySourceTPMController
}

// wrapKey derives the key that wraps a vault key for a controller protector
// (from the controller key) or a tpm+controller one (from the TPM's share and
// the controller key), bound to the vault and the protector.
func wrapKey(typ string, meta *Meta, version int, share, ck []byte) ([]byte, error) {
	info := "edgeseal fsvault " + typ + " v1\x00" + meta.UUID + "\x00" + strconv.Itoa(version)
	ikm := slices.Concat(share, ck)
	defer clear(ikm)
	return aesgcm.Key(ikm, nil, info)
}

// sealWith encrypts key under wk (AES-256-GCM, random nonce, the vault's
// UUID and the protector's type and version as associated data); openWith
// opens it.
func sealWith(wk []byte, typ string, meta *Meta, version int, key []byte) ([]byte, error) {
	aead, err := aesgcm.New(wk)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, key, aad(typ, meta, version)), nil
}

func openWith(wk []byte, typ string, meta *Meta, version int, blob []byte) ([]byte, error) {
	aead, err := aesgcm.New(wk)
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(blob) < n+aead.Overhead() {
		return nil, fmt.Errorf("%w: the protector's blob is %d bytes", ErrCorruptMeta, len(blob))
	}
	return aead.Open(nil, blob[:n], blob[n:], aad(typ, meta, version))
}

func aad(typ string, meta *Meta, version int) []byte {
	return []byte("edgeseal fsvault\x00" + typ + "\x00" + meta.UUID + "\x00" + strconv.Itoa(version))
}

// exchange is one vault's dealings with the controller during one action:
// it asks at most once for keys, and once more for the escrowed key.
type exchange struct {
	m    *Manager
	meta *Meta
	v    config.FileVault
	// keys is the controller's answer for the vault, once asked; rels are
	// the answers, wiped by close.
	keys *controller.VaultKeys
	rels []*controller.Release
	att  ctlproto.AttestResult
	err  error
	done bool
}

// ask sends one request for the vault: its keys, or the escrowed key (with
// escrow), and returns the vault's part of the answer, released.
func (x *exchange) ask(ctx context.Context, escrow bool) (*controller.VaultKeys, error) {
	if x.done && !escrow {
		return x.keys, x.err
	}
	if x.m.Controller == nil {
		return nil, fmt.Errorf("vault %s: %w", x.v.Name, ErrNoController)
	}
	req := ctlproto.VaultRequest{UUID: x.meta.UUID, Name: x.meta.Name, Attestation: x.v.Attestation,
		Keys: hasController(x.v.KeySource) || hasController(x.meta.Source()), Escrow: escrow}
	if p := x.meta.SourceProtector(); p != nil && hasController(x.meta.Source()) {
		req.KeyVersion = p.KeyVersion
	}
	rel, err := x.m.Controller.Keys(ctx, []ctlproto.VaultRequest{req})
	if err == nil && rel.Attestation.Status == ctlproto.AttestRequired && !req.Attestation && !req.Escrow {
		// The controller's policy asks for a quote that the config does
		// not (an operator set it there, or an earlier config did): answer
		// its challenge, once.
		x.rels = append(x.rels, rel)
		req.Attestation = true
		rel, err = x.m.Controller.Keys(ctx, []ctlproto.VaultRequest{req})
	}
	x.done = true
	if rel != nil {
		x.rels = append(x.rels, rel)
	}
	if err != nil {
		x.keys, x.err = nil, fmt.Errorf("vault %s: cannot get its keys from the controller: %w", x.v.Name, err)
		return nil, x.err
	}
	x.att = rel.Attestation
	vk := rel.Vaults[x.meta.UUID]
	switch {
	case vk == nil:
		x.err = fmt.Errorf("vault %s: %w: the controller did not answer for it", x.v.Name, ErrWithheld)
	case vk.Status == ctlproto.Withheld && (rel.Attestation.Status == ctlproto.AttestRequired || rel.Attestation.Status == ctlproto.AttestRefused):
		x.err = fmt.Errorf("vault %s: %w: %s", x.v.Name, ErrAwaitingAttestation, attestReason(rel.Attestation, vk.Reason))
	case vk.Status == ctlproto.Withheld:
		x.err = fmt.Errorf("vault %s: %w: %s", x.v.Name, ErrWithheld, vk.Reason)
	case vk.Err != nil:
		x.err = fmt.Errorf("vault %s: the controller's answer does not open: %w", x.v.Name, vk.Err)
	default:
		x.keys, x.err = vk, nil
		return vk, nil
	}
	x.keys = nil
	return nil, x.err
}

// close wipes the controller keys the exchange received.
func (x *exchange) close() {
	if x == nil {
		return
	}
	for _, r := range x.rels {
		r.Clear()
	}
	x.rels, x.keys = nil, nil
}

// attestReason says why an attestation did not pass, for the status.
func attestReason(a ctlproto.AttestResult, vaultReason string) string {
	var s string
	switch a.Status {
	case ctlproto.AttestRefused:
		s = "the controller refused the quote"
		if a.Reason != "" {
			s += ": " + a.Reason
		}
		if len(a.ChangedPCRs) > 0 {
			s += " (changed: PCR " + joinInts(a.ChangedPCRs) + ")"
		}
	default:
		s = "the controller asks for a quote first"
		if vaultReason != "" {
			s = vaultReason
		}
	}
	return s
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// pick returns, of the controller's keys, the one of version (the current or
// the previous); a set of keys all older than version is ErrStaleKey.
func pick(vk *controller.VaultKeys, version int, name string) (*controller.Key, error) {
	for _, k := range []*controller.Key{vk.Current, vk.Previous} {
		if k != nil && k.Version == version {
			return k, nil
		}
	}
	if vk.Current == nil {
		return nil, fmt.Errorf("vault %s: %w: the controller sent no key", name, ErrWithheld)
	}
	if vk.Current.Version < version {
		return nil, fmt.Errorf("vault %s: %w: it sent version %d, the vault is wrapped with %d", name, ErrStaleKey, vk.Current.Version, version)
	}
	return nil, fmt.Errorf("vault %s: %w: it sent versions %d and %d, the vault is wrapped with %d, which the controller no longer keeps",
		name, ErrWrongKey, vk.Previous.Version, vk.Current.Version, version)
}

// open unwraps the vault key from its key source protector, asking the
// controller as the source needs; when the TPM refuses (PCRs changed) and the
// device has a controller, it recovers the key from escrow.
func (x *exchange) open(ctx context.Context) (*opened, error) {
	meta, m := x.meta, x.m
	p := meta.SourceProtector()
	if p == nil {
		return nil, fmt.Errorf("vault %s: %w: no key source protector", meta.Name, ErrCorruptMeta)
	}
	var share []byte
	switch p.Type {
	case ProtectorTPM2:
		key, err := m.TPM.Unseal(ctx, p.Blob)
		if err != nil {
			return x.tpmRefused(ctx, err)
		}
		return &opened{key: key, method: UnlockTPM}, nil
	case ProtectorTPMController:
		var err error
		if share, err = m.TPM.Unseal(ctx, p.Share); err != nil {
			return x.tpmRefused(ctx, err)
		}
		defer clear(share)
	}
	o := &opened{method: UnlockController}
	var ck []byte
	vk, err := x.ask(ctx, false)
	switch {
	case err == nil:
		k, err := pick(vk, p.KeyVersion, meta.Name)
		if err != nil {
			return nil, err
		}
		ck = k.Secret
		if vk.Current.Version > p.KeyVersion {
			o.current = &controller.Key{Version: vk.Current.Version, Secret: slices.Clone(vk.Current.Secret)}
		}
	case errors.Is(err, controller.ErrUnreachable) && x.v.Offline && p.Cache != nil:
		if ck, err = m.TPM.Unseal(ctx, p.Cache); err != nil {
			return nil, fmt.Errorf("vault %s: the controller is unreachable, and the offline copy of its key does not unseal: %w", meta.Name, err)
		}
		defer clear(ck)
		o.offline = true
	case errors.Is(err, controller.ErrUnreachable) && p.Cache == nil && x.v.Offline:
		return nil, fmt.Errorf("%w (the vault has no offline copy of the controller's key yet: offline: true keeps one from the controller's next answer)", err)
	case errors.Is(err, controller.ErrUnreachable) && p.Cache == nil:
		return nil, fmt.Errorf("%w (the vault has no offline copy of the controller's key: offline is false)", err)
	default:
		return nil, err
	}
	wk, err := wrapKey(p.Type, meta, p.KeyVersion, share, ck)
	if err != nil {
		return nil, err
	}
	defer clear(wk)
	key, err := openWith(wk, p.Type, meta, p.KeyVersion, p.Blob)
	if err != nil {
		o.wipe()
		return nil, fmt.Errorf("vault %s: %w (version %d)", meta.Name, ErrWrongKey, p.KeyVersion)
	}
	o.key = key
	o.ck = &controller.Key{Version: p.KeyVersion, Secret: slices.Clone(ck)}
	return o, nil
}

// tpmRefused handles an unseal the TPM refused: with a controller, a PCR
// change is recovered from escrow; anything else is the error it was.
func (x *exchange) tpmRefused(ctx context.Context, err error) (*opened, error) {
	meta := x.meta
	if !errors.Is(err, tpm.ErrPCRMismatch) || x.m.Controller == nil {
		if errors.Is(err, tpm.ErrPCRMismatch) && meta.Protector(ProtectorRecovery) != nil {
			return nil, fmt.Errorf("cannot unseal the key of vault %s: %w; or, with the recovery key, edgeseal vault recover --recovery-key FILE", meta.Name, err)
		}
		return nil, fmt.Errorf("cannot unseal the key of vault %s: %w", meta.Name, err)
	}
	var changed []int
	if me := (*tpm.MismatchError)(nil); errors.As(err, &me) {
		changed = me.PCRs
	}
	vk, aerr := x.ask(ctx, true)
	if aerr != nil {
		return nil, fmt.Errorf("cannot unseal the key of vault %s: %w; and no escrow recovery: %w", meta.Name, err, aerr)
	}
	if vk.Escrow == nil {
		return nil, fmt.Errorf("cannot unseal the key of vault %s: %w; and the controller has no escrowed key for it", meta.Name, err)
	}
	if id, ierr := fscrypt.Identify(vk.Escrow); ierr != nil || id != meta.Identifier() {
		return nil, fmt.Errorf("cannot recover vault %s from escrow: %w: the escrowed key is not the vault's", meta.Name, ErrWrongKey)
	}
	o := &opened{key: slices.Clone(vk.Escrow), method: UnlockEscrow, changed: changed}
	if vk.Current != nil {
		o.current = &controller.Key{Version: vk.Current.Version, Secret: slices.Clone(vk.Current.Secret)}
	}
	return o, nil
}

// protect wraps key for the key source source: a new protector (and a new
// TPM share or offline copy, sealed in the PCR state of now).
func (m *Manager) protect(ctx context.Context, meta *Meta, source string, version int, ck *controller.Key, offline bool, key []byte) (Protector, error) {
	switch source {
	case config.KeySourceTPM:
		blob, err := m.TPM.Seal(ctx, key)
		if err != nil {
			return Protector{}, fmt.Errorf("cannot seal the key of vault %s to the TPM: %w", meta.Name, err)
		}
		return Protector{Type: ProtectorTPM2, KeyVersion: max(version, 1), Blob: blob}, nil
	case config.KeySourceController, config.KeySourceTPMController:
	default:
		return Protector{}, fmt.Errorf("vault %s: key source %q is unknown", meta.Name, source)
	}
	if ck == nil || len(ck.Secret) != controllerKeySize {
		return Protector{}, fmt.Errorf("internal error: vault %s: no controller key to wrap with", meta.Name)
	}
	p := Protector{Type: ProtectorController, KeyVersion: ck.Version}
	var share []byte
	if source == config.KeySourceTPMController {
		p.Type = ProtectorTPMController
		share = make([]byte, controllerKeySize)
		defer clear(share)
		rand.Read(share)
		blob, err := m.TPM.Seal(ctx, share)
		if err != nil {
			return Protector{}, fmt.Errorf("cannot seal the TPM's share of vault %s: %w", meta.Name, err)
		}
		p.Share = blob
	}
	wk, err := wrapKey(p.Type, meta, p.KeyVersion, share, ck.Secret)
	if err != nil {
		return Protector{}, err
	}
	defer clear(wk)
	if p.Blob, err = sealWith(wk, p.Type, meta, p.KeyVersion, key); err != nil {
		return Protector{}, err
	}
	if offline {
		if p.Cache, err = m.TPM.Seal(ctx, ck.Secret); err != nil {
			return Protector{}, fmt.Errorf("cannot seal the offline copy of vault %s's controller key: %w", meta.Name, err)
		}
	}
	return p, nil
}

// setProtectors sets meta's protectors to src and, if a recovery key is set,
// a recovery copy (the one meta has, if it is to the same recipient).
func (m *Manager) setProtectors(meta *Meta, src Protector, key []byte) error {
	ps := []Protector{src}
	if m.Recovery != nil {
		if old := meta.Protector(ProtectorRecovery); old != nil && old.Recipient == m.Recovery.Fingerprint() {
			ps = append(ps, *old)
		} else {
			blob, err := recovery.Seal(m.Recovery, key)
			if err != nil {
				return fmt.Errorf("cannot encrypt the key of vault %s to the recovery key: %w", meta.Name, err)
			}
			ps = append(ps, Protector{Type: ProtectorRecovery, Recipient: m.Recovery.Fingerprint(), Blob: blob})
		}
	} else if old := meta.Protector(ProtectorRecovery); old != nil {
		ps = append(ps, *old)
	}
	meta.Protectors = ps
	return nil
}

// newKeys asks the controller for the keys to wrap a vault with when its key
// source becomes a controller one (at creation or a switch).
func (x *exchange) newKeys(ctx context.Context) (*controller.Key, error) {
	vk, err := x.ask(ctx, false)
	if err != nil {
		return nil, err
	}
	if vk.Current == nil {
		return nil, fmt.Errorf("vault %s: %w: the controller sent no key", x.v.Name, ErrWithheld)
	}
	return vk.Current, nil
}

// needsRewrap says why the vault's protector is not what the config asks:
// another key source, or an offline copy to add or drop ("" if it is).
func needsRewrap(meta *Meta, v config.FileVault) string {
	switch p := meta.SourceProtector(); {
	case p == nil:
		return ""
	case meta.Source() != v.KeySource:
		return fmt.Sprintf("key source %s to %s", meta.Source(), v.KeySource)
	case hasController(v.KeySource) && v.Offline != (p.Cache != nil):
		if v.Offline {
			return "offline copy of the controller's key added"
		}
		return "offline copy of the controller's key dropped"
	}
	return ""
}

// report tells the controller how the vault was unlocked, the key version it
// is wrapped with (a rotation is complete when it is the current one), and
// its key escrowed (sealed to this TPM: the controller cannot read it). A
// controller that cannot be told does not undo the unlock: the change says so.
func (m *Manager) report(ctx context.Context, meta *Meta, o *opened) string {
	if m.Controller == nil {
		return ""
	}
	r := ctlproto.VaultReport{UUID: meta.UUID, Name: meta.Name, Unlocked: o.method}
	if hasController(meta.Source()) {
		r.KeyVersion = meta.KeyVersion()
	}
	escrow, err := m.Controller.SealForEscrow(o.key)
	if err != nil {
		return fmt.Sprintf("key not escrowed: %v", err)
	}
	r.Escrow = escrow
	if err := m.Controller.Report(ctx, &ctlproto.Report{Vaults: []ctlproto.VaultReport{r}}); err != nil {
		return fmt.Sprintf("controller not told (key escrow, key version): %v", err)
	}
	return "key escrowed to the controller (sealed to this TPM)"
}
