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
	Accessor string    `json:"accessor"`
	Unit     string    `json:"unit,omitempty"`
	SnapApp  string    `json:"snap_app,omitempty"`
	PID      int       `json:"pid"`
	UID      uint32    `json:"uid"`
	Issued   time.Time `json:"issued"`
	Wrapped  bool      `json:"wrapped,omitempty"`
}

// File is the ledger file.
type File struct {
	Version  int              `json:"version"`
	BootID   string           `json:"boot_id"`
	Services map[string]Entry `json:"services"`
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
// if there was none). The file is written before Swap returns.
func (l *Ledger) Swap(service string, e Entry) (old Entry, ok bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old, ok = l.f.Services[service]
	l.f.Services[service] = e
	if err := l.write(); err != nil {
		if ok {
			l.f.Services[service] = old
		} else {
			delete(l.f.Services, service)
		}
		return Entry{}, false, err
	}
	return old, ok, nil
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
