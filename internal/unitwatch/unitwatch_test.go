package unitwatch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// The end-to-end stories run under real systemd and a real bus: a unit killed
// into the failed state loses its token within a second
// (tests/integration/tokens_test.go), and a PropertiesChanged signal forged by
// nobody, broadcast or sent to edgeseal-unseal alone, revokes nothing
// (tests/integration/forged_signal_test.go).

const (
	systemdUnique = ":1.3"
	flakyPath     = dbus.ObjectPath("/org/freedesktop/systemd1/unit/flaky_2eservice")
)

// fakeSystemd answers as systemd and the bus would, and records what it was
// asked.
type fakeSystemd struct {
	ownerName string
	units     map[dbus.ObjectPath][3]string // path: name, ActiveState, SubState
	listErr   error

	ownerAsked int      // times the owner was looked up
	followed   []string // owners followed, in order
	listed     int      // times the failed units were listed
}

func (f *fakeSystemd) watchOwner(context.Context) error { return nil }
func (f *fakeSystemd) owner(context.Context) (string, error) {
	f.ownerAsked++
	return f.ownerName, nil
}
func (f *fakeSystemd) follow(_ context.Context, owner string) error {
	f.followed = append(f.followed, owner)
	return nil
}
func (f *fakeSystemd) listUnits(_ context.Context, states []string) ([]unit, error) {
	f.listed++
	if f.listErr != nil {
		return nil, f.listErr
	}
	var units []unit
	for path, u := range f.units {
		if slices.Contains(states, u[1]) {
			units = append(units, unit{name: u[0], path: path, active: u[1], sub: u[2]})
		}
	}
	slices.SortFunc(units, func(a, b unit) int { return strings.Compare(a.name, b.name) })
	return units, nil
}

func (f *fakeSystemd) unitState(_ context.Context, path dbus.ObjectPath) (unit, error) {
	f.listed++
	if f.listErr != nil {
		return unit{}, f.listErr
	}
	u, ok := f.units[path]
	if !ok {
		return unit{path: path, active: "inactive", sub: "dead"}, nil
	}
	return unit{name: u[0], path: path, active: u[1], sub: u[2]}, nil
}

// failedSignal is the PropertiesChanged systemd sends when the unit at path
// fails, as sent by sender.
func failedSignal(sender string, path dbus.ObjectPath) *dbus.Signal {
	return &dbus.Signal{
		Sender: sender,
		Path:   path,
		Name:   propertiesChanged,
		Body: []any{unitInterface, map[string]dbus.Variant{
			"ActiveState": dbus.MakeVariant("failed"),
			"SubState":    dbus.MakeVariant("failed"),
		}, []string{}},
	}
}

func ownerChanged(sender, old, new string) *dbus.Signal {
	return &dbus.Signal{Sender: sender, Path: busPath, Name: nameOwnerChanged, Body: []any{systemdName, old, new}}
}

// started is a watcher that has resolved systemd's owner (no unit has failed
// yet), and what it reports from then on; sd's counts start again at 0.
func started(t *testing.T, sd *fakeSystemd) (*watcher, *[]string) {
	return startedWatching(t, sd, false)
}

// startedWatching is started, for failures and, with stops, stops too.
func startedWatching(t *testing.T, sd *fakeSystemd, stops bool) (*watcher, *[]string) {
	t.Helper()
	var reported []string
	w := &watcher{sd: sd, stops: stops, ended: func(u string, _ time.Time) { reported = append(reported, u) }}
	units := sd.units
	sd.units = nil
	if err := w.resolveOwner(context.Background()); err != nil {
		t.Fatal(err)
	}
	sd.units, sd.ownerAsked, sd.listed = units, 0, 0
	return w, &reported
}

func TestAFailureSignalOfAnotherSenderIsNotReportedNorAskedAbout(t *testing.T) {
	sd := &fakeSystemd{ownerName: systemdUnique, units: map[dbus.ObjectPath][3]string{flakyPath: {"flaky.service", "failed"}}}
	w, reported := started(t, sd)
	cases := map[string]*dbus.Signal{
		// gdbus emit run by nobody: its own unique name.
		"another unique name": failedSignal(":1.42", flakyPath),
		// A well-known name is never a signal's sender on the bus; were it
		// one, it is still not systemd's unique name.
		"systemd's well-known name": failedSignal(systemdName, flakyPath),
		// A peer-to-peer message carries no sender.
		"no sender": failedSignal("", flakyPath),
	}
	for name, sig := range cases {
		if err := w.handle(context.Background(), sig); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Even a unit that did fail is not reported on another sender's word.
	if len(*reported) != 0 || sd.listed != 0 {
		t.Errorf("reported %v, asked systemd %d times; want neither", *reported, sd.listed)
	}
}

func TestNoSignalIsBelievedWhileSystemdOwnsNoName(t *testing.T) {
	sd := &fakeSystemd{units: map[dbus.ObjectPath][3]string{flakyPath: {"flaky.service", "failed"}}}
	w, reported := started(t, sd)
	// A sender-less signal must not match the empty owner.
	if err := w.handle(context.Background(), failedSignal("", flakyPath)); err != nil {
		t.Fatal(err)
	}
	if len(*reported) != 0 || sd.listed != 0 || len(sd.followed) != 0 {
		t.Errorf("reported %v, asked %d times, followed %q; want nothing", *reported, sd.listed, sd.followed)
	}
}

func TestASignalOfSystemdIsReportedOnlyWhenSystemdConfirmsTheFailure(t *testing.T) {
	cases := []struct {
		name  string
		state string
		want  []string
	}{
		{"the unit is failed", "failed", []string{"flaky.service"}},
		// Restarted, or the signal was stale: nothing to revoke.
		{"the unit is active again", "active", nil},
		{"the unit is restarting", "activating", nil},
		{"the unit is stopped cleanly", "inactive", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sd := &fakeSystemd{ownerName: systemdUnique, units: map[dbus.ObjectPath][3]string{flakyPath: {"flaky.service", c.state}}}
			w, reported := started(t, sd)
			if err := w.handle(context.Background(), failedSignal(systemdUnique, flakyPath)); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(*reported, c.want) || sd.listed != 1 {
				t.Errorf("reported %v after asking systemd %d times; want %v after asking once", *reported, sd.listed, c.want)
			}
		})
	}
}

func TestOnlyTheUnitOfTheSignalIsReportedUnderTheNameSystemdGives(t *testing.T) {
	other := dbus.ObjectPath("/org/freedesktop/systemd1/unit/other_2eservice")
	sd := &fakeSystemd{ownerName: systemdUnique, units: map[dbus.ObjectPath][3]string{
		flakyPath: {"flaky.service", "failed"},
		other:     {"other.service", "failed"},
	}}
	w, reported := started(t, sd)
	if err := w.handle(context.Background(), failedSignal(systemdUnique, flakyPath)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(*reported, []string{"flaky.service"}) {
		t.Errorf("reported %v, want [flaky.service]", *reported)
	}
}

func TestAConfirmationThatCannotBeHadEndsTheWatch(t *testing.T) {
	// The caller watches again, which lists the failed units: a real failure
	// is reported then rather than dropped now.
	sd := &fakeSystemd{ownerName: systemdUnique}
	w, reported := started(t, sd)
	sd.listErr = errors.New("connection reset")
	err := w.handle(context.Background(), failedSignal(systemdUnique, flakyPath))
	if !errors.Is(err, sd.listErr) || len(*reported) != 0 {
		t.Errorf("handle: %v, reported %v; want the error and no report", err, *reported)
	}
}

func TestACallThatFailsBecauseSystemdLeftTheBusDoesNotEndTheWatch(t *testing.T) {
	// systemd re-executing leaves the bus while it is asked about a unit; the
	// bus's NameOwnerChanged for it is still on its way, and its handling
	// lists the units that failed meanwhile.
	sd := &fakeSystemd{ownerName: systemdUnique}
	w, reported := started(t, sd)
	sd.ownerName, sd.listErr = "", errors.New("The name org.freedesktop.systemd1 was not provided by any .service files")
	if err := w.handle(context.Background(), failedSignal(systemdUnique, flakyPath)); err != nil {
		t.Fatalf("handle: %v, want the watch to go on", err)
	}
	sd.ownerName, sd.listErr = ":1.77", nil
	sd.units = map[dbus.ObjectPath][3]string{flakyPath: {"flaky.service", "failed"}}
	if err := w.handle(context.Background(), ownerChanged(busName, systemdUnique, "")); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(*reported, []string{"flaky.service"}) {
		t.Errorf("reported %v, want the unit that failed while systemd was away", *reported)
	}

}

func TestANewOwnerOfSystemdsNameIsFollowedAndItsFailedUnitsListed(t *testing.T) {
	sd := &fakeSystemd{ownerName: systemdUnique}
	w, reported := started(t, sd)

	// systemd re-executes: it leaves the bus and comes back under a new name,
	// with a unit that failed meanwhile.
	sd.ownerName = ""
	if err := w.handle(context.Background(), ownerChanged(busName, systemdUnique, "")); err != nil {
		t.Fatal(err)
	}
	sd.ownerName, sd.units = ":1.77", map[dbus.ObjectPath][3]string{flakyPath: {"flaky.service", "failed"}}
	if err := w.handle(context.Background(), ownerChanged(busName, "", ":1.77")); err != nil {
		t.Fatal(err)
	}
	if want := []string{systemdUnique, "", ":1.77"}; !slices.Equal(sd.followed, want) {
		t.Errorf("followed %q, want %q", sd.followed, want)
	}
	if !slices.Equal(*reported, []string{"flaky.service"}) {
		t.Errorf("reported %v, want the unit that failed while systemd was away", *reported)
	}

	// The old name's signals are no longer believed, the new one's are.
	*reported, sd.listed = nil, 0
	w.handle(context.Background(), failedSignal(systemdUnique, flakyPath))
	w.handle(context.Background(), failedSignal(":1.77", flakyPath))
	if !slices.Equal(*reported, []string{"flaky.service"}) || sd.listed != 1 {
		t.Errorf("reported %v after asking %d times; want one report, for the new owner's signal", *reported, sd.listed)
	}
}

func TestAnOwnerChangeNotSentByTheBusIsIgnored(t *testing.T) {
	sd := &fakeSystemd{ownerName: systemdUnique}
	w, _ := started(t, sd)
	// nobody claims, by a unicast signal, that systemd moved to its name:
	// not even worth asking the bus.
	if err := w.handle(context.Background(), ownerChanged(":1.42", systemdUnique, ":1.42")); err != nil {
		t.Fatal(err)
	}
	if sd.ownerAsked != 0 || !slices.Equal(sd.followed, []string{systemdUnique}) || w.owner != systemdUnique {
		t.Errorf("owner looked up %d more times, followed %q, owner %q; want no look-up and systemd's name alone",
			sd.ownerAsked, sd.followed, w.owner)
	}
}

func TestOnlyAnActiveStateOfFailedOnAUnitIsAFailureHint(t *testing.T) {
	sig := func(path dbus.ObjectPath, iface string, props map[string]any) *dbus.Signal {
		ch := map[string]dbus.Variant{}
		for k, v := range props {
			ch[k] = dbus.MakeVariant(v)
		}
		return &dbus.Signal{Sender: systemdUnique, Path: path, Name: propertiesChanged, Body: []any{iface, ch, []string{}}}
	}
	cases := []struct {
		name string
		sig  *dbus.Signal
		want bool
	}{
		{"a unit's ActiveState failed", sig(flakyPath, unitInterface, map[string]any{"ActiveState": "failed", "SubState": "failed"}), true},
		{"deactivating is not failed", sig(flakyPath, unitInterface, map[string]any{"ActiveState": "deactivating"}), false},
		{"a SubState alone is not ActiveState", sig(flakyPath, unitInterface, map[string]any{"SubState": "failed"}), false},
		{"an ActiveState that is not a string", sig(flakyPath, unitInterface, map[string]any{"ActiveState": uint32(3)}), false},
		{"the Service interface, not Unit", sig(flakyPath, "org.freedesktop.systemd1.Service", map[string]any{"ActiveState": "failed"}), false},
		{"the manager's path, not a unit's", sig(managerPath, unitInterface, map[string]any{"ActiveState": "failed"}), false},
		{"the unit directory itself", sig(unitPaths, unitInterface, map[string]any{"ActiveState": "failed"}), false},
		{"a path beside the units", sig("/org/freedesktop/systemd1/units/x", unitInterface, map[string]any{"ActiveState": "failed"}), false},
		{"another signal", &dbus.Signal{Sender: systemdUnique, Path: flakyPath, Name: "org.freedesktop.systemd1.Unit.Changed"}, false},
		{"a body too short", &dbus.Signal{Sender: systemdUnique, Path: flakyPath, Name: propertiesChanged, Body: []any{unitInterface}}, false},
		{"no signal", nil, false},
	}
	for _, c := range cases {
		if _, state, ok := stateHint(c.sig); (ok && state == "failed") != c.want {
			t.Errorf("%s: stateHint = %q, %v; want failed %v", c.name, state, ok, c.want)
		}
	}
}

// With stops, a service that stopped cleanly or waits for Restart= is
// reported too (a crash with Restart= never passes through "failed"), once
// systemd confirms it; an active, starting or deactivating unit is not, nor a
// scope that ended (a command that fetched a token for a service and exited).
func TestWithStopsAServiceThatStoppedOrWaitsToRestartIsReported(t *testing.T) {
	stateSignal := func(state string) *dbus.Signal {
		sig := failedSignal(systemdUnique, flakyPath)
		sig.Body[1] = map[string]dbus.Variant{"ActiveState": dbus.MakeVariant(state)}
		return sig
	}
	cases := []struct {
		name, unit, state, sub string
		stops                  bool
		want                   bool
	}{
		{"a service stopped cleanly", "flaky.service", "inactive", "dead", true, true},
		{"a service waiting to be restarted", "flaky.service", "activating", "auto-restart", true, true},
		{"a service failed", "flaky.service", "failed", "failed", true, true},
		{"a service starting", "flaky.service", "activating", "start", true, false},
		{"a service running", "flaky.service", "active", "running", true, false},
		{"a scope that ended", "run-r1.scope", "inactive", "dead", true, false},
		{"a service stopped, but stops not asked for", "flaky.service", "inactive", "dead", false, false},
		{"a service waiting to restart, stops not asked for", "flaky.service", "activating", "auto-restart", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sd := &fakeSystemd{ownerName: systemdUnique}
			w, reported := startedWatching(t, sd, c.stops)
			sd.units = map[dbus.ObjectPath][3]string{flakyPath: {c.unit, c.state, c.sub}}
			if err := w.handle(context.Background(), stateSignal(c.state)); err != nil {
				t.Fatal(err)
			}
			if got := len(*reported) == 1; got != c.want {
				t.Errorf("reported %v, want reported %v", *reported, c.want)
			}
		})
	}
}

func TestAWatchTheBusRefusesByPolicyIsToldApartFromALostConnection(t *testing.T) {
	// Given a bus whose policy refuses the calls a watch makes (a snap under
	// AppArmor's D-Bus mediation)
	denied := dbus.Error{Name: "org.freedesktop.DBus.Error.AccessDenied", Body: []any{"An AppArmor policy prevents this sender from sending this message"}}
	sd := &fakeSystemd{ownerName: systemdUnique, listErr: denied}
	// When a watch starts
	err := watch(context.Background(), sd, make(chan *dbus.Signal), false, func(string, time.Time) {})
	// Then its error says the bus refused it, and still carries the bus's words
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "AppArmor policy") {
		t.Fatalf("watch refused by policy: %v, want ErrRefused with the bus's reason", err)
	}
	// And another error is not taken for a refusal
	sd.listErr = errors.New("connection reset")
	if err := watch(context.Background(), sd, make(chan *dbus.Signal), false, func(string, time.Time) {}); err == nil || errors.Is(err, ErrRefused) {
		t.Fatalf("watch with a lost connection: %v, want an error that is not ErrRefused", err)
	}
}
