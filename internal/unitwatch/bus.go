package unitwatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/godbus/dbus/v5"
)

// Names on the system bus.
const (
	busName       = "org.freedesktop.DBus"
	busPath       = dbus.ObjectPath("/org/freedesktop/DBus")
	systemdName   = "org.freedesktop.systemd1"
	managerPath   = dbus.ObjectPath("/org/freedesktop/systemd1")
	unitPaths     = dbus.ObjectPath("/org/freedesktop/systemd1/unit")
	unitInterface = "org.freedesktop.systemd1.Unit"

	propertiesChanged = "org.freedesktop.DBus.Properties.PropertiesChanged"
	nameOwnerChanged  = "org.freedesktop.DBus.NameOwnerChanged"

	errNameHasNoOwner    = "org.freedesktop.DBus.Error.NameHasNoOwner"
	errAlreadySubscribed = "org.freedesktop.systemd1.AlreadySubscribed"
	errAccessDenied      = "org.freedesktop.DBus.Error.AccessDenied"
	errMatchRuleNotFound = "org.freedesktop.DBus.Error.MatchRuleNotFound"
)

// systemd is what the watcher asks of the bus and of systemd. bus is the real
// one; the tests fake it.
type systemd interface {
	// watchOwner has the bus route here its NameOwnerChanged signals for
	// systemd's name.
	watchOwner(ctx context.Context) error
	// owner is the unique name owning systemd's name, "" if none does.
	owner(ctx context.Context) (string, error)
	// follow has the bus route here the unit changes sent by owner, and no
	// longer those of the previous owner; "" routes none.
	follow(ctx context.Context, owner string) error
	// listUnits asks systemd for the units in one of states (ActiveState).
	listUnits(ctx context.Context, states []string) ([]unit, error)
	// unitState asks systemd for the unit at path: its name and state. A unit
	// systemd has unloaded (a stopped unit nothing refers to) is loaded again
	// to answer, inactive.
	unitState(ctx context.Context, path dbus.ObjectPath) (unit, error)
}

// unit is a unit as systemd names it, its object path and its state.
type unit struct {
	name        string
	path        dbus.ObjectPath
	active, sub string // ActiveState, SubState
}

// bus is systemd on a D-Bus connection of this package's own.
type bus struct {
	conn *dbus.Conn
	rule []dbus.MatchOption // the unit-change rule in force; nil if none
}

func (b *bus) watchOwner(ctx context.Context) error {
	err := b.conn.AddMatchSignalContext(ctx,
		dbus.WithMatchSender(busName),
		dbus.WithMatchObjectPath(busPath),
		dbus.WithMatchInterface(busName),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, systemdName))
	if err != nil {
		return fmt.Errorf("cannot watch the owner of %s on the system bus: %w", systemdName, err)
	}
	return nil
}

func (b *bus) owner(ctx context.Context) (string, error) {
	var owner string
	err := b.conn.BusObject().CallWithContext(ctx, busName+".GetNameOwner", 0, systemdName).Store(&owner)
	if hasErrorName(err, errNameHasNoOwner) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cannot find the owner of %s on the system bus: %w", systemdName, err)
	}
	return owner, nil
}

// unitChangesFrom is the match rule for the unit changes sent by owner.
func unitChangesFrom(owner string) []dbus.MatchOption {
	return []dbus.MatchOption{
		dbus.WithMatchSender(owner),
		dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged"),
		dbus.WithMatchPathNamespace(unitPaths),
		dbus.WithMatchArg(0, unitInterface),
	}
}

func (b *bus) follow(ctx context.Context, owner string) error {
	if b.rule != nil {
		// The bus drops by itself a rule naming as sender a connection
		// that has left (systemd re-executed): not found is gone.
		if err := b.conn.RemoveMatchSignalContext(ctx, b.rule...); err != nil && !hasErrorName(err, errMatchRuleNotFound) {
			return fmt.Errorf("cannot stop watching the unit changes of systemd's previous bus connection: %w", err)
		}
		b.rule = nil
	}
	if owner == "" {
		return nil
	}
	rule := unitChangesFrom(owner)
	if err := b.conn.AddMatchSignalContext(ctx, rule...); err != nil {
		return fmt.Errorf("cannot watch systemd's unit changes: %w", err)
	}
	b.rule = rule
	// systemd sends unit changes on the system bus only while a client is
	// subscribed; it keeps a subscription across a re-execution.
	err := b.conn.Object(systemdName, managerPath).CallWithContext(ctx, systemdName+".Manager.Subscribe", 0).Store()
	if err != nil && !hasErrorName(err, errAlreadySubscribed) {
		return fmt.Errorf("cannot subscribe to systemd's unit changes: %w", err)
	}
	return nil
}

// listedUnit is one entry of systemd's ListUnits answer, (ssssssouso).
type listedUnit struct {
	Name, Description, LoadState, ActiveState, SubState, Following string
	Path                                                           dbus.ObjectPath
	JobID                                                          uint32
	JobType                                                        string
	JobPath                                                        dbus.ObjectPath
}

func (b *bus) listUnits(ctx context.Context, states []string) ([]unit, error) {
	var listed []listedUnit
	err := b.conn.Object(systemdName, managerPath).
		CallWithContext(ctx, systemdName+".Manager.ListUnitsFiltered", 0, states).Store(&listed)
	if err != nil {
		return nil, fmt.Errorf("cannot list the units that are %s: %w", strings.Join(states, ", "), err)
	}
	var units []unit
	for _, u := range listed {
		// The filter matches a load or sub state as well.
		if slices.Contains(states, u.ActiveState) {
			units = append(units, unit{name: u.Name, path: u.Path, active: u.ActiveState, sub: u.SubState})
		}
	}
	return units, nil
}

func (b *bus) unitState(ctx context.Context, path dbus.ObjectPath) (unit, error) {
	var props map[string]dbus.Variant
	err := b.conn.Object(systemdName, path).
		CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, unitInterface).Store(&props)
	if err != nil {
		return unit{}, fmt.Errorf("cannot ask systemd for the state of %s: %w", path, err)
	}
	str := func(k string) string { v, _ := props[k].Value().(string); return v }
	return unit{name: str("Id"), path: path, active: str("ActiveState"), sub: str("SubState")}, nil
}

func hasErrorName(err error, name string) bool {
	var e dbus.Error
	return errors.As(err, &e) && e.Name == name
}
