// Package access decides which configured service a caller is, from how the
// kernel and systemd saw it (peer.Identity) and the config's rules: the token
// provider asks it before it issues a token, and edgeseal-unseal asks it again
// for every token already issued when the config changes, so that narrowing
// the config takes access away at once.
package access

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/naming"
	"github.com/edgeseal/edgeseal/internal/peer"
)

// Errors of Match; the caller is refused and the reason goes to the journal.
var (
	// ErrNoRule: no service has a rule for this caller.
	ErrNoRule = errors.New("no service is configured for this identity")
	// ErrAmbiguous: the caller matches several services equally well and did not
	// say which it wants.
	ErrAmbiguous = errors.New("this identity matches more than one service")
	// ErrExecutable: the caller matched a service that pins its executables
	// (exe_sha256), and its executable is not one of them, or was not read
	// (then the error is also an *Unread).
	ErrExecutable = errors.New("the caller's executable is not one the service pins")
	// ErrUnitFile: the caller matched a service that pins its unit files
	// (unit_files), and systemd loaded the caller's unit from another file,
	// or none, or they were not read (then the error is also an *Unread).
	ErrUnitFile = errors.New("the caller's unit is not loaded from the files the service pins")
	// ErrSnap: the caller matched a service that pins its snap's revision or
	// publisher (snap_revisions, snap_publishers), and it runs in no snap, or
	// snapd reports another revision or publisher of its snap, or none, or
	// they were not read (then the error is also an *Unread).
	ErrSnap = errors.New("the caller's snap is not one the service pins")
)

// Pin is a kind of what a service may pin about what runs, beyond its rules.
type Pin int

// The pins, in the order Match checks them.
const (
	PinExecutable Pin = iota + 1 // exe_sha256: Identity.Exe
	PinUnitFiles                 // unit_files: Identity.UnitFiles
	PinSnap                      // snap_revisions, snap_publishers: Identity.Snap
)

// Unread is Match's error when the caller matched a service that pins
// something of it that was not read: the caller of Match reads it into the
// Identity (only then: it costs a question to a helper, to systemd or to
// snapd) and matches again. It is also the pin's error (ErrExecutable,
// ErrUnitFile, ErrSnap), so that a caller that does not read it refuses.
type Unread struct {
	Pin     Pin
	Service string
}

func (e *Unread) Error() string {
	switch e.Pin {
	case PinExecutable:
		return fmt.Sprintf("%v: service %s pins its executables and the caller's was not read", ErrExecutable, e.Service)
	case PinUnitFiles:
		return fmt.Sprintf("%v: service %s pins its unit files and the caller's were not read", ErrUnitFile, e.Service)
	case PinSnap:
		return fmt.Sprintf("%v: service %s pins its snap's revision or publisher and the caller's snap was not read", ErrSnap, e.Service)
	}
	return fmt.Sprintf("service %s pins something of the caller that was not read", e.Service)
}

func (e *Unread) Is(target error) bool {
	return (e.Pin == PinExecutable && target == ErrExecutable) || (e.Pin == PinUnitFiles && target == ErrUnitFile) ||
		(e.Pin == PinSnap && target == ErrSnap)
}

// pinned checks what s pins of what runs against id: a service without pins
// takes whatever its rules matched.
func pinned(s *config.Service, id peer.Identity, rule string) (*config.Service, string, error) {
	if len(s.ExeSHA256) > 0 {
		switch {
		case id.Credential != nil:
			return nil, "", fmt.Errorf("%w: service %s pins its executables, and LoadCredential= is asked before the program runs: fetch the token over the socket", ErrExecutable, s.Name)
		case id.Exe == "":
			return nil, "", &Unread{PinExecutable, s.Name}
		case !slices.Contains(s.ExeSHA256, id.Exe):
			return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but runs an executable with SHA-256 %s", ErrExecutable, id, s.Name, rule, id.Exe)
		}
		rule += ", executable " + id.Exe[:12]
	}
	if len(s.UnitFiles) > 0 {
		f := id.UnitFiles
		switch {
		case f == nil:
			return nil, "", &Unread{PinUnitFiles, s.Name}
		case f.Fragment == "":
			return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but its unit has no unit file (systemd made it: a transient unit or a scope)", ErrUnitFile, id, s.Name, rule)
		case !slices.Contains(s.UnitFiles, f.Fragment) || strings.HasSuffix(f.Fragment, ".conf"): // a listed drop-in is no unit file
			return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but systemd loaded its unit from %s", ErrUnitFile, id, s.Name, rule, f.Fragment)
		}
		for _, d := range f.DropIns {
			if !slices.Contains(s.UnitFiles, d) {
				return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but its unit has the drop-in %s, which unit_files does not list", ErrUnitFile, id, s.Name, rule, d)
			}
		}
		rule += ", unit file " + f.Fragment
	}
	if len(s.SnapRevisions) > 0 || len(s.SnapPublishers) > 0 {
		app := id.SnapApp
		if id.Credential != nil {
			app = peer.SnapAppOfUnit(id.Credential.Unit)
		}
		sn := id.Snap
		switch {
		case app == "":
			return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but runs in no snap, and the service pins its snap's revision or publisher", ErrSnap, id, s.Name, rule)
		case !namesSnap(s, naming.SnapOfApp(app)):
			// A uid or gid rule matches any snap's daemon of that account
			// (snap_daemon's, say): a revision or publisher alone would then
			// pass another snap's (found by the review of this pin).
			return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but its snap %s is not one the service's snap_apps or units name", ErrSnap, id, s.Name, rule, naming.SnapOfApp(app))
		case sn == nil:
			return nil, "", &Unread{PinSnap, s.Name}
		case sn.Name != naming.SnapOfApp(app):
			return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but what was read is of snap %s", ErrSnap, id, s.Name, rule, sn.Name)
		case len(s.SnapRevisions) > 0 && !slices.Contains(s.SnapRevisions, sn.Revision):
			return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but snapd reports revision %s of snap %s, which snap_revisions does not list", ErrSnap, id, s.Name, rule, sn.Revision, sn.Name)
		case len(s.SnapPublishers) > 0 && sn.Publisher == "":
			return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but snap %s (revision %s) has no publisher: it was installed from a file, not from a store, and snap_publishers pins one", ErrSnap, id, s.Name, rule, sn.Name, sn.Revision)
		case len(s.SnapPublishers) > 0 && !slices.Contains(s.SnapPublishers, sn.Publisher):
			return nil, "", fmt.Errorf("%w: %s matched service %s by %s, but snap %s (revision %s) is published by %s, which snap_publishers does not list", ErrSnap, id, s.Name, rule, sn.Name, sn.Revision, sn.Publisher)
		}
		rule += ", snap " + sn.Name + " revision " + sn.Revision
		if len(s.SnapPublishers) > 0 {
			rule += " by " + sn.Publisher
		}
	}
	return s, rule, nil
}

// Match returns the service whose token the caller id gets, and the rule that
// matched (for the journal). want, if not empty, is the service the caller asked
// for: one of its rules must match. Otherwise the most specific rule wins: a
// unit or snap app rule, then a uid rule, then a gid rule; two services matched
// at the same level is ErrAmbiguous. systemd serving LoadCredential= for a unit
// matches by that unit (or its snap app) only. A service that pins what runs
// is the caller's only if what was read of it is pinned (pinned): its
// executable (ErrExecutable, always for LoadCredential=), the files of its unit
// (ErrUnitFile), its snap's revision and publisher (ErrSnap); what was not
// read is an *Unread.
func Match(services []config.Service, id peer.Identity, want string) (*config.Service, string, error) {
	if id.Credential != nil {
		unit := id.Credential.Unit
		app := peer.SnapAppOfUnit(unit)
		for i := range services {
			s := &services[i]
			if slices.Contains(s.Units, unit) {
				return pinned(s, id, "unit "+unit)
			}
			if app != "" && slices.Contains(s.SnapApps, app) {
				return pinned(s, id, "snap app "+app)
			}
		}
		return nil, "", fmt.Errorf("%w: no service lists unit %s (LoadCredential=%s)", ErrNoRule, unit, id.Credential.ID)
	}
	if want != "" {
		for i := range services {
			if services[i].Name != want {
				continue
			}
			for _, level := range rules(&services[i], id) {
				if level != "" {
					return pinned(&services[i], id, level)
				}
			}
			break
		}
		// The same answer whether or not the service exists: a caller learns
		// nothing about services it is not.
		return nil, "", fmt.Errorf("%w: no service %q with a rule matching it", ErrNoRule, want)
	}
	for level := range 3 {
		var found []*config.Service
		var rule string
		for i := range services {
			if r := rules(&services[i], id)[level]; r != "" {
				found = append(found, &services[i])
				rule = r
			}
		}
		switch len(found) {
		case 0:
			continue
		case 1:
			return pinned(found[0], id, rule)
		default:
			names := make([]string, len(found))
			for i, s := range found {
				names[i] = s.Name
			}
			return nil, "", fmt.Errorf("%w (%s): ask for one by name (edgeseal token fetch --service NAME)", ErrAmbiguous, strings.Join(names, ", "))
		}
	}
	return nil, "", ErrNoRule
}

// rules says which of s's rules match id, at each level of specificity: unit or
// snap app, uid, gid ("" where none does).
func rules(s *config.Service, id peer.Identity) [3]string {
	var r [3]string
	switch {
	case id.Unit != "" && slices.Contains(s.Units, id.Unit):
		r[0] = "unit " + id.Unit
	case id.SnapApp != "" && slices.Contains(s.SnapApps, id.SnapApp):
		r[0] = "snap app " + id.SnapApp
	}
	if slices.Contains(s.UIDs, id.UID) {
		r[1] = fmt.Sprintf("uid %d", id.UID)
	}
	if slices.Contains(s.GIDs, id.GID) {
		r[2] = fmt.Sprintf("gid %d", id.GID)
	}
	return r
}

// namesSnap reports whether snap (an instance name) is the snap of one of s's
// snap_apps or of a snap's unit in its units: the snaps its pins are about.
func namesSnap(s *config.Service, snap string) bool {
	for _, a := range s.SnapApps {
		if naming.SnapOfApp(a) == snap {
			return true
		}
	}
	for _, u := range s.Units {
		if a := peer.SnapAppOfUnit(u); a != "" && naming.SnapOfApp(a) == snap {
			return true
		}
	}
	return false
}
