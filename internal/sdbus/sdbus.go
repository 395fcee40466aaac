// Package sdbus is the one place edgeseal opens a connection to systemd over
// the system bus: restarting a unit (sdunit), asking which unit a caller runs
// in when its cgroup does not say (the token provider), watching units fail
// (unitwatch), and listing the chain's units (edgeseal status). One place,
// so that every caller connects the same way (the system bus, authenticated
// as the process's user, bounded by the caller's context) and fails with the
// same words.
//
// Only the system bus, never systemd's private socket: the bus checks its own
// policy and AppArmor's D-Bus mediation applies there, which the private
// socket (root only, no policy) would bypass.
package sdbus

import (
	"context"
	"fmt"
	"path/filepath"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// Systemd connects to systemd's D-Bus API (org.freedesktop.systemd1) on the
// system bus. The caller closes it.
func Systemd(ctx context.Context) (*sddbus.Conn, error) {
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to systemd on the system bus: %w", err)
	}
	return conn, nil
}

// Bus is a connection of its own to the system bus, for what go-systemd does
// not offer (a match rule on systemd's unique name, unitwatch). The caller
// closes it.
func Bus(ctx context.Context) (*dbus.Conn, error) {
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the system bus: %w", err)
	}
	return conn, nil
}

// RestrictNamespaces is the namespace types (CLONE_NEW* flags) the processes
// of service unit may make, as its RestrictNamespaces= says (all of them when
// it is not set).
func RestrictNamespaces(ctx context.Context, conn *sddbus.Conn, unit string) (uint64, error) {
	p, err := conn.GetUnitTypePropertyContext(ctx, unit, "Service", "RestrictNamespaces")
	if err != nil {
		return 0, fmt.Errorf("cannot ask systemd for RestrictNamespaces= of %s: %w", unit, err)
	}
	v, ok := p.Value.Value().(uint64)
	if !ok {
		return 0, fmt.Errorf("cannot read RestrictNamespaces= of %s: systemd answered a %s", unit, p.Value.Signature())
	}
	return v, nil
}

// maxDropIns bounds the drop-ins of a unit that UnitFiles accepts from systemd.
const maxDropIns = 64

// UnitFiles is the files systemd loaded unit from: its FragmentPath ("" for a
// unit without one: transient units have theirs under /run/systemd/transient,
// scopes none) and its DropInPaths, each an absolute path of at most
// PATH_MAX bytes, at most maxDropIns drop-ins.
func UnitFiles(ctx context.Context, conn *sddbus.Conn, unit string) (fragment string, dropIns []string, err error) {
	p, err := conn.GetUnitPropertyContext(ctx, unit, "FragmentPath")
	if err != nil {
		return "", nil, fmt.Errorf("cannot ask systemd for the FragmentPath of %s: %w", unit, err)
	}
	fragment, ok := p.Value.Value().(string)
	if !ok {
		return "", nil, fmt.Errorf("cannot read the FragmentPath of %s: systemd answered a %s", unit, p.Value.Signature())
	}
	if p, err = conn.GetUnitPropertyContext(ctx, unit, "DropInPaths"); err != nil {
		return "", nil, fmt.Errorf("cannot ask systemd for the DropInPaths of %s: %w", unit, err)
	}
	if dropIns, ok = p.Value.Value().([]string); !ok {
		return "", nil, fmt.Errorf("cannot read the DropInPaths of %s: systemd answered a %s", unit, p.Value.Signature())
	}
	if len(dropIns) > maxDropIns {
		return "", nil, fmt.Errorf("cannot read the DropInPaths of %s: %d drop-ins, at most %d", unit, len(dropIns), maxDropIns)
	}
	for _, f := range append([]string{fragment}, dropIns...) {
		if f != "" && (!filepath.IsAbs(f) || len(f) > unix.PathMax) {
			return "", nil, fmt.Errorf("cannot read the unit files of %s: systemd answered %q, not an absolute path", unit, f)
		}
	}
	return fragment, dropIns, nil
}
