package refctl

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"syscall"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/strictjson"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// The state file's header: a format name and a version, from the first day.
const (
	stateFormat  = "edgeseal-controller-state"
	stateVersion = 1
)

// state is state.json.
type state struct {
	Format  string             `json:"format"`
	Version int                `json:"version"`
	Devices map[string]*device `json:"devices"`
}

// device is one device, by name (its device id).
type device struct {
	// PCRs the device quotes (SHA-256 bank), sorted.
	PCRs []int `json:"pcrs"`
	// Claims the device's quotes must carry, with these values.
	Claims map[string]string `json:"claims,omitempty"`

	// Token is the one-time enrolment token (its SHA-256 only).
	Token *token `json:"token,omitempty"`
	// EnrolNonce is the nonce issued for the enrolment under way.
	EnrolNonce *enrolNonce `json:"enrol_nonce,omitempty"`

	Enrolled   time.Time `json:"enrolled,omitzero"`
	AKPublic   string    `json:"ak_public,omitempty"`   // PEM, trusted on first use
	SRKPublic  []byte    `json:"srk_public,omitempty"`  // TPMT_PUBLIC, keys are sealed to it
	CertSerial string    `json:"cert_serial,omitempty"` // hex: the one client certificate accepted
	// Expected PCR values (index -> hex), from the enrolment quote or an
	// operator's approval.
	Expected map[int]string `json:"expected,omitempty"`

	// Revoked: theft reported; every vault is withheld.
	Revoked bool `json:"revoked,omitempty"`
	// Refused is the last quote refused for its PCR values (what approve approves).
	Refused *refusal `json:"refused,omitempty"`
	// Approved are the PCRs the last approval changed, told to the device
	// with its next verified quote.
	Approved []int `json:"approved,omitempty"`
	// Challenges are the challenge nonces issued (hex), until they expire.
	Challenges map[string]*challenge `json:"challenges,omitempty"`
	// Vaults by UUID.
	Vaults map[string]*vault `json:"vaults,omitempty"`
}

type token struct {
	Hash    string    `json:"hash"` // hex SHA-256 of the token
	Expires time.Time `json:"expires"`
	Used    bool      `json:"used,omitempty"`
}

type enrolNonce struct {
	Nonce   []byte    `json:"nonce"`
	Expires time.Time `json:"expires"`
}

type challenge struct {
	Expires time.Time `json:"expires"`
	Used    bool      `json:"used,omitempty"`
	// UsedBy is the request nonce of the keys request that spent it.
	UsedBy []byte `json:"used_by,omitempty"`
}

type refusal struct {
	At      time.Time      `json:"at"`
	Reason  string         `json:"reason"`
	Changed []int          `json:"changed"`
	PCRs    map[int]string `json:"pcrs"` // the quoted values, hex
}

// vault is one of a device's file vaults.
type vault struct {
	Name string `json:"name"`
	// Attestation: released only after a verified quote. Sticky.
	Attestation bool `json:"attestation,omitempty"`
	// Keys are the controller key versions kept, oldest first.
	Keys []*vaultKey `json:"keys"`
	// Acked is the key version the device last reported its vault wrapped to.
	Acked int `json:"acked,omitempty"`
	// RotatePending: an operator asked for a new key version.
	RotatePending bool `json:"rotate_pending,omitempty"`
	// Escrow is the vault key the device escrowed, sealed to its own TPM
	// (a tpm.Importable): the controller cannot read it.
	Escrow        []byte    `json:"escrow,omitempty"`
	EscrowUpdated time.Time `json:"escrow_updated,omitzero"`
	LastUnlock    string    `json:"last_unlock,omitempty"`
	LastUnlockAt  time.Time `json:"last_unlock_at,omitzero"`
}

// vaultKey is one version of a vault's controller key. The reference keeps
// it in state.json (0600); a real controller keeps it in an HSM or a KMS.
type vaultKey struct {
	Version int       `json:"version"`
	Key     []byte    `json:"key"`
	Created time.Time `json:"created"`
}

func newState() *state {
	return &state{Format: stateFormat, Version: stateVersion, Devices: map[string]*device{}}
}

var (
	uuidRE   = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	vaultRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	serialRE = regexp.MustCompile(`^[0-9a-f]{1,40}$`)
)

// parseState reads state.json strictly: bounded, no unknown field, nothing
// after the value, and every field in shape. Anything else is ErrBadState,
// naming the field.
func parseState(data []byte) (*state, error) {
	var st state
	if err := strictjson.Decode(data, maxStateSize, &st); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadState, err)
	}
	if err := st.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	if st.Devices == nil {
		st.Devices = map[string]*device{}
	}
	return &st, nil
}

func (st *state) check() error {
	if st.Format != stateFormat {
		return fmt.Errorf("format %q, not %q", st.Format, stateFormat)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("version %d: this controller reads %d", st.Version, stateVersion)
	}
	var errs []error
	for name, d := range st.Devices {
		if !idRE.MatchString(name) {
			errs = append(errs, fmt.Errorf("devices: %q is not a device name", name))
			continue
		}
		if d == nil {
			errs = append(errs, fmt.Errorf("devices: %s: null", name))
			continue
		}
		if err := d.check(); err != nil {
			errs = append(errs, fmt.Errorf("devices: %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (d *device) check() error {
	errs := []error{checkPCRList(d.PCRs), ctlproto.CheckClaims(d.Claims)}
	if d.Token != nil && !sha256RE.MatchString(d.Token.Hash) {
		errs = append(errs, errors.New("token.hash: not a hex SHA-256"))
	}
	if d.EnrolNonce != nil && len(d.EnrolNonce.Nonce) != ctlproto.NonceSize {
		errs = append(errs, fmt.Errorf("enrol_nonce.nonce: %d bytes", len(d.EnrolNonce.Nonce)))
	}
	if !d.Enrolled.IsZero() {
		if _, err := tpm.ParseAKPublic([]byte(d.AKPublic)); err != nil {
			errs = append(errs, fmt.Errorf("ak_public: %w", err))
		}
		if _, err := unmarshalSRK(d.SRKPublic); err != nil {
			errs = append(errs, fmt.Errorf("srk_public: %w", err))
		}
		if !serialRE.MatchString(d.CertSerial) {
			errs = append(errs, errors.New("cert_serial: not a hex serial number"))
		}
	}
	errs = append(errs, checkValues("expected", d.Expected, d.PCRs))
	if d.Refused != nil {
		errs = append(errs, checkValues("refused.pcrs", d.Refused.PCRs, d.PCRs), checkPCRSet("refused.changed", d.Refused.Changed))
	}
	errs = append(errs, checkPCRSet("approved", d.Approved))
	if len(d.Challenges) > maxChallenges {
		errs = append(errs, fmt.Errorf("challenges: %d, at most %d", len(d.Challenges), maxChallenges))
	}
	for n, c := range d.Challenges {
		if !sha256RE.MatchString(n) || c == nil {
			errs = append(errs, errors.New("challenges: an entry is not a hex nonce"))
		} else if len(c.UsedBy) > ctlproto.NonceSize {
			errs = append(errs, fmt.Errorf("challenges: used_by: %d bytes", len(c.UsedBy)))
		}
	}
	if len(d.Vaults) > maxDeviceVaults {
		errs = append(errs, fmt.Errorf("vaults: %d, at most %d", len(d.Vaults), maxDeviceVaults))
	}
	for id, v := range d.Vaults {
		if !uuidRE.MatchString(id) || v == nil {
			errs = append(errs, fmt.Errorf("vaults: %q is not a UUID", id))
			continue
		}
		if err := v.check(); err != nil {
			errs = append(errs, fmt.Errorf("vaults: %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (v *vault) check() error {
	var errs []error
	if !vaultRE.MatchString(v.Name) {
		errs = append(errs, fmt.Errorf("name %q is not a vault name", v.Name))
	}
	if len(v.Keys) == 0 {
		errs = append(errs, errors.New("keys: none"))
	}
	for i, k := range v.Keys {
		switch {
		case k == nil || k.Version < 1 || k.Version > ctlproto.MaxKeyVer:
			errs = append(errs, fmt.Errorf("keys: entry %d: no version, or out of range", i))
		case i > 0 && v.Keys[i-1] != nil && k.Version <= v.Keys[i-1].Version:
			errs = append(errs, fmt.Errorf("keys: version %d after %d", k.Version, v.Keys[i-1].Version))
		case len(k.Key) != controllerKeySize:
			errs = append(errs, fmt.Errorf("keys: version %d: %d bytes, not %d", k.Version, len(k.Key), controllerKeySize))
		}
	}
	if len(errs) == 0 && (v.Acked < 0 || v.Acked > v.current().Version) {
		errs = append(errs, fmt.Errorf("acked %d: no such version", v.Acked))
	}
	if len(v.Escrow) > 0 {
		if _, err := tpm.UnmarshalImportable(v.Escrow); err != nil {
			errs = append(errs, fmt.Errorf("escrow: %w", err))
		}
	}
	switch v.LastUnlock {
	case "", "tpm", "controller-key", "escrow-recovery":
	default:
		errs = append(errs, fmt.Errorf("last_unlock %q is unknown", v.LastUnlock))
	}
	return errors.Join(errs...)
}

// checkPCRList checks a device's PCR selection: 1 to 24 indices, 0-23,
// sorted, none repeated.
func checkPCRList(pcrs []int) error {
	if len(pcrs) == 0 {
		return errors.New("pcrs: none")
	}
	if err := checkPCRSet("pcrs", pcrs); err != nil {
		return err
	}
	if !slices.IsSorted(pcrs) {
		return errors.New("pcrs: not sorted")
	}
	return nil
}

func checkPCRSet(field string, pcrs []int) error {
	seen := map[int]bool{}
	for _, p := range pcrs {
		if p < 0 || p > ctlproto.MaxPCR || seen[p] {
			return fmt.Errorf("%s: %d is out of range (0-%d) or repeated", field, p, ctlproto.MaxPCR)
		}
		seen[p] = true
	}
	return nil
}

// checkValues checks PCR values (index -> hex SHA-256) of PCRs in sel.
func checkValues(field string, vals map[int]string, sel []int) error {
	for p, v := range vals {
		if !slices.Contains(sel, p) {
			return fmt.Errorf("%s: PCR %d is not in the selection", field, p)
		}
		if !sha256RE.MatchString(v) {
			return fmt.Errorf("%s: PCR %d: not a hex SHA-256 value", field, p)
		}
	}
	return nil
}

// current is the vault's newest key.
func (v *vault) current() *vaultKey { return v.Keys[len(v.Keys)-1] }

// key is the kept key of version n, or nil.
func (v *vault) key(n int) *vaultKey {
	for _, k := range v.Keys {
		if k.Version == n {
			return k
		}
	}
	return nil
}

// expectedValues are d's expected PCR values as bytes.
func (d *device) expectedValues() map[int][]byte {
	m := map[int][]byte{}
	for p, v := range d.Expected {
		b, _ := hex.DecodeString(v) // checked by parseState
		m[p] = b
	}
	return m
}

func (st *state) marshal() ([]byte, error) {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// update runs fn on the state under the directory's lock, and writes the
// state back (atomically, 0600) if fn says it changed it, even when fn
// fails: a nonce burnt by a failed attempt stays burnt.
func (p paths) update(fn func(st *state) (changed bool, err error)) error {
	if _, err := os.Stat(p.state); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s has no state.json: %w", p.dir, ErrNotInitialised)
	}
	lk, err := os.OpenFile(p.lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("cannot open the controller lock: %w", err)
	}
	defer lk.Close()
	if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("cannot lock the controller state: %w", err)
	}
	defer syscall.Flock(int(lk.Fd()), syscall.LOCK_UN)
	data, err := os.ReadFile(p.state)
	if err != nil {
		return fmt.Errorf("cannot read the controller state: %w", err)
	}
	st, err := parseState(data)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", p.state, err)
	}
	changed, ferr := fn(st)
	if changed {
		if err := p.save(st); err != nil {
			return err
		}
	}
	return ferr
}

// view runs fn on the state under the lock, writing nothing.
func (p paths) view(fn func(st *state) error) error {
	return p.update(func(st *state) (bool, error) { return false, fn(st) })
}

func (p paths) save(st *state) error {
	data, err := st.marshal()
	if err != nil {
		return fmt.Errorf("cannot encode the controller state: %w", err)
	}
	if err := fsutil.WriteFileAtomic(p.state, data, 0o600, fsutil.Self); err != nil {
		return fmt.Errorf("cannot write the controller state: %w", err)
	}
	return nil
}
