// Package ledger records which Vault token the token provider handed to which
// service, and to which unit, during this boot. It is how a re-issue revokes the
// previous token of a service, and how edgeseal-unseal revokes the token of a
// unit that failed, although the provider itself exits when idle.
//
// The ledger holds token accessors, never tokens: an accessor can look a token
// up or revoke it (with a policy that allows it), not use it. It lives in tmpfs
// (/run/edgeseal/tokend/issued.json), private to the provider's user: each
// change is a line appended before the provider acts on it, and the file is
// rewritten whole (atomically) only when it is opened and when it has grown.
package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// Version of the file format.
//
// Version 2 is JSON Lines, appended to: the first line is the header
// {"version":2,"boot_id":"..."}, and each next line is one change:
//
//	{"issued":{"service":"s",...Entry}}  s's token is now this one; the one it
//	                                     replaces, if another, is pending
//	{"pending":{...Pending}}             a replaced token waiting (written when
//	                                     the file is compacted)
//	{"revoked":"accessor"}               that pending revocation is done
//
// A reader replays the lines in order. A last line without its newline (a
// write cut short) is ignored: it recorded nothing its writer acted on, since
// Swap returns only once its line is written whole. Version 1 (one JSON object,
// rewritten whole on every change) is still read: a provider updated without a
// reboot finds it in /run.
const Version = 2

// MaxSize bounds the file a reader accepts. The writer compacts the file when
// it has grown by compactGrowth since the last compaction, and a compacted
// file holds at most one entry per configured service (1,000) and maxPending
// replaced tokens, each line well under 512 bytes, but for the unit files of a
// service that pins them (at most 16 paths of 255 bytes, config's bounds): about
// 9.5 MiB at most, if every one of 1,000 services pinned 16 files.
const MaxSize = 16 << 20

// compactGrowth is how much the file may grow past its compacted size before
// it is compacted again (a variable for tests).
var compactGrowth int64 = 1 << 20

// Entry is the token last issued to one service.
type Entry struct {
	Accessor string `json:"accessor"`
	Unit     string `json:"unit,omitempty"`
	SnapApp  string `json:"snap_app,omitempty"`
	PID      int    `json:"pid"`
	UID      uint32 `json:"uid"`
	GID      uint32 `json:"gid"`
	// Credential: systemd asked for Unit's LoadCredential=.
	Credential bool `json:"credential,omitempty"`
	// ExeSHA256: the executable the holder ran, when its service pins them.
	ExeSHA256 string `json:"exe_sha256,omitempty"`
	// UnitFragment and UnitDropIns: the files systemd had loaded the holder's
	// unit from, when its service pins them (UnitFragment is then never "").
	UnitFragment string   `json:"unit_fragment,omitempty"`
	UnitDropIns  []string `json:"unit_drop_ins,omitempty"`
	// SnapRevision and SnapPublisher: what snapd said of the holder's snap,
	// when its service pins them (SnapRevision is then never "";
	// SnapPublisher is "" for a snap without one).
	SnapRevision  string    `json:"snap_revision,omitempty"`
	SnapPublisher string    `json:"snap_publisher,omitempty"`
	Issued        time.Time `json:"issued"`
	Wrapped       bool      `json:"wrapped,omitempty"`
}

// Pending is a token replaced by a newer one whose revocation Vault has not
// confirmed yet (the provider revokes replaced tokens after a short delay, and
// Vault may be sealed, restarting, or the provider stopped first). It stays in
// the ledger until it is revoked or gone.
type Pending struct {
	Service  string    `json:"service"`
	Accessor string    `json:"accessor"`
	Since    time.Time `json:"since"`
}

// maxPending bounds the revocations kept waiting; past it the oldest is
// dropped (it still expires one period after its holder stops renewing it).
const maxPending = 10000

// File is what the ledger holds: each service's last token and the replaced
// tokens waiting to be revoked.
type File struct {
	Version  int              `json:"version"`
	BootID   string           `json:"boot_id"`
	Services map[string]Entry `json:"services"`
	Pending  []Pending        `json:"pending,omitempty"`
}

// record is one line of a version 2 file after the header.
type record struct {
	Issued  *issued  `json:"issued,omitempty"`
	Pending *Pending `json:"pending,omitempty"`
	Revoked string   `json:"revoked,omitempty"`
}

type issued struct {
	Service string `json:"service"`
	Entry
}

type header struct {
	Version int    `json:"version"`
	BootID  string `json:"boot_id"`
}

// apply replays one change on f.
func (f *File) apply(r record) error {
	switch {
	case r.Issued != nil && r.Pending == nil && r.Revoked == "":
		if r.Issued.Service == "" || r.Issued.Accessor == "" {
			return errors.New("an issued record without its service or accessor")
		}
		old, ok := f.Services[r.Issued.Service]
		f.Services[r.Issued.Service] = r.Issued.Entry
		if ok && old.Accessor != r.Issued.Accessor {
			f.addPending(Pending{Service: r.Issued.Service, Accessor: old.Accessor, Since: r.Issued.Issued})
		}
	case r.Pending != nil && r.Issued == nil && r.Revoked == "":
		if r.Pending.Accessor == "" {
			return errors.New("a pending record without its accessor")
		}
		f.addPending(*r.Pending)
	case r.Revoked != "" && r.Issued == nil && r.Pending == nil:
		if i := slices.IndexFunc(f.Pending, func(p Pending) bool { return p.Accessor == r.Revoked }); i >= 0 {
			f.Pending = slices.Delete(f.Pending, i, i+1)
		}
	default:
		return errors.New("a record that is not exactly one of issued, pending or revoked")
	}
	return nil
}

func (f *File) addPending(p Pending) {
	f.Pending = append(f.Pending, p)
	if len(f.Pending) > maxPending {
		f.Pending = slices.Delete(f.Pending, 0, len(f.Pending)-maxPending)
	}
}

// Ledger is the provider's view: Swap records a new token and returns the one it
// replaces. It is safe for concurrent use within one process.
type Ledger struct {
	path  string
	owner fsutil.Owner
	mu    sync.Mutex
	f     File
	// out is the file, open for appending; size its length, compactAt the
	// length at which it is compacted.
	out       *os.File
	size      int64
	compactAt int64
}

// Open loads the ledger at path for bootID, and writes it again compacted,
// to append to. A ledger of another boot is discarded: its tokens were
// revoked by this boot's setup.
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
	if err := l.compact(); err != nil {
		return nil, err
	}
	return l, nil
}

// Close closes the file; the Ledger is not used after.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.out == nil {
		return nil
	}
	err := l.out.Close()
	l.out = nil
	return err
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
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("cannot parse token ledger %s: %w", path, err)
	}
	return f, nil
}

// Parse parses the content of a ledger file, of version 2 or 1.
func Parse(data []byte) (*File, error) {
	line, rest, _ := bytes.Cut(data, []byte("\n"))
	var h header
	if err := strictjson.Decode(line, MaxSize, &h); err != nil || h.Version != Version {
		return parseV1(data)
	}
	f := &File{Version: Version, BootID: h.BootID, Services: map[string]Entry{}}
	for n := 2; len(rest) > 0; n++ {
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		if len(rest) == 0 && !bytes.HasSuffix(data, []byte("\n")) {
			break // the last line, cut short
		}
		var r record
		if err := strictjson.Decode(line, MaxSize, &r); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if err := f.apply(r); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	return f, nil
}

func parseV1(data []byte) (*File, error) {
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("version %d, want %d or 1", f.Version, Version)
	}
	if f.Services == nil {
		f.Services = map[string]Entry{}
	}
	return &f, nil
}

// Swap records e as service's token and returns the entry it replaces (ok false
// if there was none), which it keeps as Pending until Revoked is called for it.
// Its line is in the file before Swap returns.
//
// The file is in tmpfs and is not fsync'd: a write to tmpfs is seen by every
// reader, and survives the provider's crash, once write(2) returns; a power
// cut loses the whole file, and with it nothing that matters, since the next
// boot revokes every token of this one before it issues any.
func (l *Ledger) Swap(service string, e Entry) (old Entry, ok bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old, ok = l.f.Services[service]
	if err := l.append(record{Issued: &issued{Service: service, Entry: e}}); err != nil {
		return Entry{}, false, err
	}
	if err := l.f.apply(record{Issued: &issued{Service: service, Entry: e}}); err != nil {
		return Entry{}, false, err
	}
	return old, ok, nil
}

// Revoked forgets the pending revocations of accessors: Vault revoked them,
// or says they are gone.
func (l *Ledger) Revoked(accessors ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var recs []record
	for _, a := range accessors {
		if slices.ContainsFunc(l.f.Pending, func(p Pending) bool { return p.Accessor == a }) {
			recs = append(recs, record{Revoked: a})
		}
	}
	if err := l.append(recs...); err != nil {
		return err
	}
	for _, r := range recs {
		l.f.apply(r)
	}
	return nil
}

// PendingRevocations returns the tokens still waiting to be revoked.
func (l *Ledger) PendingRevocations() []Pending {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.f.Pending)
}

// append writes recs to the file in one write(2), compacting it first when it
// has grown past compactAt.
func (l *Ledger) append(recs ...record) error {
	if len(recs) == 0 {
		return nil
	}
	if l.out == nil {
		return fmt.Errorf("cannot write token ledger %s: closed", l.path)
	}
	if l.size >= l.compactAt {
		// The records are not applied yet: the compacted file is the state
		// before them, and they follow it.
		if err := l.compact(); err != nil {
			return err
		}
	}
	var buf []byte
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("cannot encode token ledger: %w", err)
		}
		buf = append(append(buf, line...), '\n')
	}
	n, err := l.out.Write(buf)
	l.size += int64(n)
	if err != nil {
		return fmt.Errorf("cannot write token ledger %s: %w", l.path, err)
	}
	return nil
}

// compact writes the ledger's state as a new file (atomically: a temporary
// file renamed over it) and appends to that from now on.
func (l *Ledger) compact() error {
	h, _ := json.Marshal(header{Version: Version, BootID: l.f.BootID})
	buf := append(h, '\n')
	services := slices.Sorted(maps.Keys(l.f.Services))
	for _, s := range services {
		line, err := json.Marshal(record{Issued: &issued{Service: s, Entry: l.f.Services[s]}})
		if err != nil {
			return fmt.Errorf("cannot encode token ledger: %w", err)
		}
		buf = append(append(buf, line...), '\n')
	}
	for _, p := range l.f.Pending {
		line, err := json.Marshal(record{Pending: &p})
		if err != nil {
			return fmt.Errorf("cannot encode token ledger: %w", err)
		}
		buf = append(append(buf, line...), '\n')
	}
	if err := fsutil.WriteFileAtomic(l.path, buf, 0o600, l.owner); err != nil {
		return err
	}
	out, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("cannot open token ledger %s: %w", l.path, err)
	}
	if l.out != nil {
		l.out.Close()
	}
	l.out, l.size, l.compactAt = out, int64(len(buf)), int64(len(buf))+compactGrowth
	return nil
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
