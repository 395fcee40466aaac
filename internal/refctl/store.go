package refctl

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// store keeps the controller's devices, one device at a time: no request
// reads or writes what belongs to another device, so what a request costs
// does not grow with the fleet (but in the directory store, which is one
// file). Two stores: dirStore, the single-box reference (state.json under a
// lock), and baoStore, an OpenBao cluster shared by stateless replicas.
type store interface {
	// update runs fn on the named device's record and writes it back if fn
	// says it changed it, even when fn fails (a nonce burnt by a failed
	// attempt stays burnt), atomically against every other writer: fn may
	// run more than once when another writer got there first, each time on
	// the newest record, so it must act on nothing but the record and what
	// it hands back (the last run's is what counts). No device:
	// ErrUnknownDevice.
	update(ctx context.Context, name string, fn func(d *device) (changed bool, err error)) error
	// create adds a device; a device of that name already: ErrExists.
	create(ctx context.Context, name string, d *device) error
	// get is a device's record, to read; none: ErrUnknownDevice.
	get(ctx context.Context, name string) (*device, error)
	// list is at most limit devices, sorted by name, after the name after.
	list(ctx context.Context, after string, limit int) ([]listed, error)
	// byToken is the device an enrolment token (by its hash) was given to,
	// or "": the caller still checks the device's record holds that token.
	byToken(ctx context.Context, hash string) (string, error)
	// tokenGiven records that the token of hash was given to a device,
	// before the device's record says so.
	tokenGiven(ctx context.Context, hash, name string) error
	// identity is the controller's CA, server certificate and bundle
	// signing key.
	identity(ctx context.Context) (*keys, error)
	// check tells whether the store answers, as a request needs it to.
	check(ctx context.Context) error
	// String names the store for logs: "directory /var/lib/...".
	String() string
}

// dirStore is a controller directory: state.json read and written whole
// under one lock, keys in files.
type dirStore struct{ p paths }

func (s dirStore) String() string { return "directory " + s.p.dir }

func (s dirStore) update(_ context.Context, name string, fn func(d *device) (bool, error)) error {
	return s.p.update(func(st *state) (bool, error) {
		d := st.Devices[name]
		if d == nil {
			return false, ErrUnknownDevice
		}
		return fn(d)
	})
}

func (s dirStore) create(_ context.Context, name string, d *device) error {
	return s.p.update(func(st *state) (bool, error) {
		if st.Devices[name] != nil {
			return false, ErrExists
		}
		st.Devices[name] = d
		return true, nil
	})
}

func (s dirStore) get(_ context.Context, name string) (*device, error) {
	var d *device
	err := s.p.view(func(st *state) error {
		if d = st.Devices[name]; d == nil {
			return ErrUnknownDevice
		}
		return nil
	})
	return d, err
}

// listed is a device listed: its name and record.
type listed struct {
	name string
	d    *device
}

func (s dirStore) list(_ context.Context, after string, limit int) ([]listed, error) {
	var page []listed
	err := s.p.view(func(st *state) error {
		for _, n := range slices.Sorted(maps.Keys(st.Devices)) {
			if n > after && len(page) < limit {
				page = append(page, listed{n, st.Devices[n]})
			}
		}
		return nil
	})
	return page, err
}

// byToken looks at every device: the reference's state is one file read
// whole anyway.
func (s dirStore) byToken(_ context.Context, hash string) (string, error) {
	var name string
	err := s.p.view(func(st *state) error {
		for n, d := range st.Devices {
			if d.Token != nil && subtle.ConstantTimeCompare([]byte(d.Token.Hash), []byte(hash)) == 1 {
				name = n
			}
		}
		return nil
	})
	return name, err
}

func (dirStore) tokenGiven(context.Context, string, string) error { return nil }

func (s dirStore) identity(context.Context) (*keys, error) { return s.p.readKeys() }

func (s dirStore) check(context.Context) error {
	return s.p.view(func(*state) error { return nil })
}

// Controller is a controller's state, in the store it was opened with: the
// operator's commands are its methods, and Serve answers devices from it.
type Controller struct {
	st store
}

// OpenDir is the controller kept in a directory (DefaultDir unless told
// otherwise). Nothing is read until a command runs.
func OpenDir(dir string) *Controller { return &Controller{st: dirStore{newPaths(dir)}} }

// String names where the controller keeps its state.
func (c *Controller) String() string { return c.st.String() }

// pageMax bounds a page of device names.
const pageMax = 1000

// Page is one page of devices, by name, and where the next one starts
// (Next, "" after the last).
type Page struct {
	Devices []*DeviceView
	Next    string
}

// checkAfter checks a page's start: "" or a device name.
func checkAfter(after string) error {
	if after != "" && !idRE.MatchString(after) {
		return fmt.Errorf("%w: --after %q is not a device name", ErrInvalid, after)
	}
	return nil
}

// ErrStoreUnavailable: the store did not answer (an OpenBao cluster without
// a leader, every node unreachable). A device is told 503 and may ask
// another replica or try again.
var ErrStoreUnavailable = errors.New("the controller's store is unavailable")
