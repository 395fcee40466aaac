// Package unitwatch tells when a systemd unit enters the failed state, so that
// the tokens of a service that crashed are revoked at once rather than left
// valid for whatever took its place (roadmap 2.6); and, if asked, when a
// service stops cleanly or waits to be restarted (Restart=), which never
// passes through "failed".
//
// It listens to systemd's PropertiesChanged signals on the system bus; those
// carry ActiveState as it changes, so a failure is seen within milliseconds,
// without polling each unit.
//
// # Whom it believes
//
// Any local user may send a signal on the system bus, with any object path,
// interface and body: `gdbus emit --system -o /org/freedesktop/systemd1/unit/x
// -s org.freedesktop.DBus.Properties.PropertiesChanged ...` run by nobody looks
// like systemd to a listener that does not check who sent it. What a signal
// says is therefore only a hint, taken from one sender, and confirmed by
// asking:
//
//   - The match rule names the unique bus name that owns
//     org.freedesktop.systemd1 (sender=':1.0'), so the bus routes no other
//     sender's unit changes here. The owner is looked up with GetNameOwner and
//     looked up again on each NameOwnerChanged of that name, which only the bus
//     itself sends (systemd re-executed connects again, under a new unique
//     name).
//   - A signal sent to this connection alone (a unicast signal, which no match
//     rule filters) is routed whatever its sender, so each signal's sender is
//     checked again here.
//   - Before a unit is reported, systemd is asked, by a method call to its
//     well-known name (which only root may own), for the state of the unit at
//     the signal's object path (Properties.GetAll); the unit is reported only
//     if systemd says it is in a state that counts, and under the name systemd
//     gives. (A stopped unit nothing refers to is unloaded at once: it is in no
//     list of units, but asking for its state still answers "inactive".)
//
// The units already failed when a watch starts, or when systemd comes back on
// the bus, are listed by a method call too, so a failure during a gap is not
// missed.
package unitwatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/edgeseal/edgeseal/internal/sdbus"
)

// signalBuffer is how many signals may wait while a failure is reported (the
// caller revokes tokens before it returns). More are still delivered by the
// D-Bus library, later.
const signalBuffer = 1024

// Watch calls ended with the name of each unit that enters the failed state
// and, with stops, of each service (*.service) that becomes inactive or waits
// to be restarted (activating, auto-restart), with the time just before
// systemd confirmed that state: whatever the unit was given before it, it
// gave to a process that has ended. It goes on until ctx ends (then it
// returns nil) or the bus connection is lost or systemd cannot be asked about
// a unit (then it returns the error; the caller watches again). When it
// starts it first reports every unit already in such a state, so one entered
// during a gap between two watches is not missed. ended runs on Watch's
// goroutine, one at a time.
//
// An error that wraps ErrRefused says the bus or systemd refused a call by
// policy (org.freedesktop.DBus.Error.AccessDenied): watching again soon will
// not help.
func Watch(ctx context.Context, stops bool, ended func(unit string, before time.Time)) error {
	conn, err := sdbus.Bus(ctx)
	if err != nil {
		return fmt.Errorf("cannot watch for failed units: %w", err)
	}
	defer conn.Close()
	sigs := make(chan *dbus.Signal, signalBuffer)
	conn.Signal(sigs)
	err = watch(ctx, &bus{conn: conn}, sigs, stops, ended)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ErrRefused: the system bus, or systemd, refuses this process the calls a
// watch needs, by policy: in a snap under AppArmor's D-Bus mediation (Ubuntu's
// kernel and dbus), system-observe grants no Subscribe.
var ErrRefused = errors.New("the system bus refuses this process systemd's unit changes")

// watch is Watch on sd and sigs; an error of a call refused by policy wraps
// ErrRefused.
func watch(ctx context.Context, sd systemd, sigs <-chan *dbus.Signal, stops bool, ended func(string, time.Time)) error {
	err := watchSignals(ctx, sd, sigs, stops, ended)
	if hasErrorName(err, errAccessDenied) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}

func watchSignals(ctx context.Context, sd systemd, sigs <-chan *dbus.Signal, stops bool, ended func(string, time.Time)) error {
	// Owner changes are routed before the owner is looked up, so that a change
	// between the two is not missed.
	if err := sd.watchOwner(ctx); err != nil {
		return err
	}
	w := &watcher{sd: sd, stops: stops, ended: ended}
	if err := w.resolveOwner(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case sig, ok := <-sigs:
			if !ok {
				return errors.New("the system bus connection was closed")
			}
			if err := w.handle(ctx, sig); err != nil {
				return err
			}
		}
	}
}

// watcher decides, signal by signal, what is a failure (or a stop).
type watcher struct {
	sd    systemd
	owner string // systemd's unique bus name; "" while it has none
	stops bool   // report a service that stopped or waits to restart, too
	ended func(unit string, before time.Time)
}

// states are the ActiveStates that may be reported.
func (w *watcher) states() []string {
	if w.stops {
		return []string{"failed", "inactive", "activating"}
	}
	return []string{"failed"}
}

// hasEnded tells whether u, as systemd listed it, is to be reported.
func (w *watcher) hasEnded(u unit) bool {
	if u.active == "failed" {
		return true
	}
	if !w.stops || !strings.HasSuffix(u.name, ".service") {
		return false
	}
	return u.active == "inactive" || (u.active == "activating" && u.sub == "auto-restart")
}

// listEnded asks systemd for the units in the states that count, and
// reports them.
func (w *watcher) listEnded(ctx context.Context) error {
	before := time.Now()
	units, err := w.sd.listUnits(ctx, w.states())
	if err != nil {
		return err
	}
	for _, u := range units {
		if w.hasEnded(u) {
			w.ended(u.name, before)
		}
	}
	return nil
}

// resolveOwner asks the bus who owns systemd's name now and follows that
// owner's unit changes; then it reports the units already failed, whose
// signals went elsewhere or nowhere.
func (w *watcher) resolveOwner(ctx context.Context) error {
	owner, err := w.sd.owner(ctx)
	if err != nil {
		return err
	}
	if owner != w.owner {
		if err := w.sd.follow(ctx, owner); err != nil {
			return w.unlessLeft(ctx, owner, err)
		}
		w.owner = owner
	}
	if w.owner == "" {
		return nil
	}
	return w.unlessLeft(ctx, w.owner, w.listEnded(ctx))
}

// unlessLeft returns err, a call to systemd's connection owner that failed,
// unless owner no longer owns systemd's name: systemd re-executing leaves the
// bus and comes back under a new unique name, and a call made meanwhile fails
// (no owner, no reply, the old owner's match rule gone). Then the bus has yet
// to send the NameOwnerChanged of that change (it came after the last answer
// to owner, and this connection has asked for them all before it asked for
// the owner), whose handling lists the units that failed meanwhile: the
// watch goes on rather than end, and a failure of the next second is not left
// to the caller's next watch.
func (w *watcher) unlessLeft(ctx context.Context, owner string, err error) error {
	if err == nil {
		return nil
	}
	if now, oerr := w.sd.owner(ctx); oerr == nil && now != owner {
		return nil
	}
	return err
}

// handle acts on one signal routed to this connection.
func (w *watcher) handle(ctx context.Context, sig *dbus.Signal) error {
	if isOwnerChange(sig) {
		// The body says who the new owner is; asking the bus again is as
		// cheap and does not depend on signals arriving in order.
		return w.resolveOwner(ctx)
	}
	path, state, ok := stateHint(sig)
	if !ok || !w.fromSystemd(sig) || !slices.Contains(w.states(), state) {
		return nil
	}
	// An error ends the watch; the caller watches again, which lists the
	// units: a real failure is reported then.
	before := time.Now()
	u, err := w.sd.unitState(ctx, path)
	if err != nil {
		return w.unlessLeft(ctx, w.owner, err)
	}
	if w.hasEnded(u) {
		w.ended(u.name, before)
	}
	return nil
}

// fromSystemd tells whether sig was sent by the connection that owns
// systemd's name. The bus sets a signal's sender; a client cannot choose it.
func (w *watcher) fromSystemd(sig *dbus.Signal) bool {
	return w.owner != "" && sig.Sender == w.owner
}

// isOwnerChange tells whether sig is the bus's own NameOwnerChanged for
// systemd's name.
func isOwnerChange(sig *dbus.Signal) bool {
	if sig == nil || sig.Name != nameOwnerChanged || sig.Sender != busName || sig.Path != busPath {
		return false
	}
	name, _ := firstString(sig.Body)
	return name == systemdName
}

// stateHint returns the object path of the unit a PropertiesChanged signal is
// about and the ActiveState it says the unit is in. It says nothing of who
// sent it.
func stateHint(sig *dbus.Signal) (dbus.ObjectPath, string, bool) {
	if sig == nil || sig.Name != propertiesChanged || len(sig.Body) < 2 {
		return "", "", false
	}
	if !sig.Path.IsValid() || len(sig.Path) <= len(unitPaths)+1 || sig.Path[:len(unitPaths)+1] != unitPaths+"/" {
		return "", "", false
	}
	if iface, _ := firstString(sig.Body); iface != unitInterface {
		return "", "", false
	}
	changed, ok := sig.Body[1].(map[string]dbus.Variant)
	if !ok {
		return "", "", false
	}
	v, ok := changed["ActiveState"]
	if !ok {
		return "", "", false
	}
	s, ok := v.Value().(string)
	return sig.Path, s, ok
}

func firstString(body []any) (string, bool) {
	if len(body) == 0 {
		return "", false
	}
	s, ok := body[0].(string)
	return s, ok
}
