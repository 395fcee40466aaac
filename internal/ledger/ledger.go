// Package ledger records which Vault token the token provider handed to which
// service, and to which unit, during this boot. It is how a re-issue revokes the
// previous token of a service, and how edgeseal-unseal revokes the token of a
// unit that failed, although the provider itself exits when idle.
//
// The ledger holds token accessors, never tokens: an accessor can look a token
// up or revoke it (with a policy that allows it), not use it. It lives in tmpfs
// (/run/edgeseal/tokend/issued.json), private to the provider's user, written
// atomically after every change.
package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/edgeseal/edgeseal/internal/fsutil"
)

// Version of the file format.
const Version = 1

// MaxSize bounds the file: an entry per configured service (at most 1000).
const MaxSize = 4 << 20

// Entry is the token last issued to one service.
type Entry struct {
	Accessor string `json:"accessor"`
	Unit     string `json:"unit,omitempty"`
	SnapApp  string `json:"snap_app,omitempty"`
	PID      int    `json:"pid"`
	UID      uint32 `json:"uid"`
	GID      uint32 `json:"gid"`
	// Credential: systemd asked for Unit's LoadCredential=.
	Credential bool      `json:"credential,omitempty"`
	Issued     time.Time `json:"issued"`
	Wrapped    bool      `json:"wrapped,omitempty"`
}

// Pending is a token replaced by a newer one whose revocation Vault has not
// confirmed yet (it was sealed, restarting, or the provider stopped first).
// It stays in the ledger until it is revoked or gone.
type Pending struct {
	Service  string    `json:"service"`
	Accessor string    `json:"accessor"`
	Since    time.Time `json:"since"`
}

// maxPending bounds the revocations kept waiting; past it the oldest is
// dropped (it still expires one period after its holder stops renewing it).
const maxPending = 10000

// File is the ledger file.
type File struct {
	Version  int              `json:"version"`
	BootID   string           `json:"boot_id"`
	Services map[string]Entry `json:"services"`
	Pending  []Pending        `json:"pending,omitempty"`
}

// Ledger is the provider's view: Swap records a new token and returns the one it
// replaces. It is safe for concurrent use within one process.
type Ledger struct {
	path  string
	owner fsutil.Owner
	mu    sync.Mutex
	f     File
}

// Open loads the ledger at path for bootID. A ledger of another boot is
// discarded: its tokens were revoked by this boot's setup.
func Open(path, bootID string, owner fsutil.Owner) (*Ledger, error) {
	l := &Ledger{path: path, owner: owner, f: File{Version: Version, BootID: bootID, Services: map[string]Entry{}}}
	f, err := Read(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	case f.BootID == bootID:
		l.f.Services = f.Services
		l.f.Pending = f.Pending
	}
	return l, nil
}

// Read parses the ledger file at path (for readers such as edgeseal-unseal).
func Read(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read token ledger: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read token ledger %s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("cannot read token ledger %s: larger than %d bytes", path, MaxSize)
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("cannot parse token ledger %s: %w", path, err)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("cannot parse token ledger %s: version %d, want %d", path, f.Version, Version)
	}
	if f.Services == nil {
		f.Services = map[string]Entry{}
	}
	return &f, nil
}

// Swap records e as service's token and returns the entry it replaces (ok false
// if there was none), which it keeps as Pending until Revoked is called for it.
// The file is written before Swap returns.
func (l *Ledger) Swap(service string, e Entry) (old Entry, ok bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old, ok = l.f.Services[service]
	pending := l.f.Pending
	l.f.Services[service] = e
	if ok && old.Accessor != e.Accessor {
		l.f.Pending = append(slices.Clip(l.f.Pending), Pending{Service: service, Accessor: old.Accessor, Since: time.Now().UTC()})
		if len(l.f.Pending) > maxPending {
			l.f.Pending = l.f.Pending[len(l.f.Pending)-maxPending:]
		}
	}
	if err := l.write(); err != nil {
		if ok {
			l.f.Services[service] = old
		} else {
			delete(l.f.Services, service)
		}
		l.f.Pending = pending
		return Entry{}, false, err
	}
	return old, ok, nil
}

// Revoked forgets the pending revocation of accessor: Vault revoked it, or
// says it is gone.
func (l *Ledger) Revoked(accessor string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.f.Pending, func(p Pending) bool { return p.Accessor == accessor })
	if i < 0 {
		return nil
	}
	pending := l.f.Pending
	l.f.Pending = slices.Delete(slices.Clone(pending), i, i+1)
	if err := l.write(); err != nil {
		l.f.Pending = pending
		return err
	}
	return nil
}

// PendingRevocations returns the tokens still waiting to be revoked.
func (l *Ledger) PendingRevocations() []Pending {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.f.Pending)
}

func (l *Ledger) write() error {
	data, err := json.MarshalIndent(l.f, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode token ledger: %w", err)
	}
	return fsutil.WriteFileAtomic(l.path, data, 0o600, l.owner)
}

// Issued is one ledger entry with its service, for readers.
type Issued struct {
	Service string
	Entry
}

// All returns every entry of the ledger at path, sorted by service.
func All(path string) ([]Issued, error) {
	f, err := Read(path)
	if err != nil {
		return nil, err
	}
	out := make([]Issued, 0, len(f.Services))
	for svc, e := range f.Services {
		out = append(out, Issued{Service: svc, Entry: e})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out, nil
}

// Units returns the units (sorted, each once) that the tokens in the ledger
// at path were issued to; a token issued outside a unit has none.
func Units(path string) ([]string, error) {
	f, err := Read(path)
	if err != nil {
		return nil, err
	}
	var units []string
	for _, e := range f.Services {
		if e.Unit != "" && !slices.Contains(units, e.Unit) {
			units = append(units, e.Unit)
		}
	}
	sort.Strings(units)
	return units, nil
}

// OfUnit returns the entries of tokens issued to processes of unit, sorted by
// service.
func OfUnit(path, unit string) ([]Issued, error) {
	f, err := Read(path)
	if err != nil {
		return nil, err
	}
	var out []Issued
	for svc, e := range f.Services {
		if e.Unit == unit {
			out = append(out, Issued{Service: svc, Entry: e})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out, nil
}
