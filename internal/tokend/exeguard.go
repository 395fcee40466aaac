package tokend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/access"
	"github.com/edgeseal/edgeseal/internal/peer"
)

// forgingCaps are the capabilities with which a process may point its
// /proc/PID/exe at any file without exec (prctl PR_SET_MM_EXE_FILE and
// PR_SET_MM_MAP's exe_fd): CAP_SYS_RESOURCE (the former), CAP_SYS_ADMIN and
// CAP_CHECKPOINT_RESTORE (the latter).
var forgingCaps = []struct {
	bit  uint
	name string
}{{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}, {unix.CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE"}, {unix.CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE"}}

// exeFixed checks that the caller cannot have made its /proc/PID/exe name a
// file it does not run: it holds none of forgingCaps in the initial user
// namespace (its own, its uid map the identity) and cannot make a user
// namespace in which it would hold them (the kernel allows none, or its unit
// has RestrictNamespaces= without user). Otherwise a pin proves nothing, and
// the caller is refused (access.ErrExecutable), told what its unit must set.
func (s *Server) exeFixed(ctx context.Context, p *peer.Peer, id peer.Identity) error {
	proc := "/proc"
	uidMap, err := os.ReadFile(fmt.Sprintf("%s/%d/uid_map", proc, p.PID))
	if errors.Is(err, os.ErrNotExist) {
		return peer.ErrGone
	}
	if err != nil {
		return fmt.Errorf("cannot read the uid map of pid %d: %w", p.PID, err)
	}
	if f := strings.Fields(string(uidMap)); len(f) != 3 || f[0] != "0" || f[1] != "0" || f[2] != "4294967295" {
		return fmt.Errorf("%w: %s runs in a user namespace of its own, where it may point /proc/PID/exe at any file: a service that pins its executables must run in the initial one (no PrivateUsers=)", access.ErrExecutable, id)
	}
	status, err := os.ReadFile(fmt.Sprintf("%s/%d/status", proc, p.PID))
	if errors.Is(err, os.ErrNotExist) {
		return peer.ErrGone
	}
	if err != nil {
		return fmt.Errorf("cannot read the status of pid %d: %w", p.PID, err)
	}
	prm, err := capLine(string(status), "CapPrm:")
	if err != nil {
		return fmt.Errorf("cannot read the capabilities of pid %d: %w", p.PID, err)
	}
	for _, c := range forgingCaps {
		if prm&(1<<c.bit) != 0 {
			return fmt.Errorf("%w: %s holds %s, with which a process may point /proc/PID/exe at any file: take it from the unit (CapabilityBoundingSet=)", access.ErrExecutable, id, c.name)
		}
	}
	if !s.userNamespacesOff() {
		allowed, err := s.unitNamespaces(ctx, id.Unit)
		if err != nil {
			return fmt.Errorf("%w: %s may make user namespaces, in which a process may point /proc/PID/exe at any file, and its unit's RestrictNamespaces= cannot be read (%v): "+
				"pin executables of a service unit with RestrictNamespaces=yes (or ~user)", access.ErrExecutable, id, err)
		}
		if allowed&unix.CLONE_NEWUSER != 0 {
			return fmt.Errorf("%w: %s may make user namespaces, in which a process may point /proc/PID/exe at any file: set RestrictNamespaces=yes (or ~user) in %s", access.ErrExecutable, id, id.Unit)
		}
	}
	// What was read is about the caller only if it is still the same process.
	return p.Same()
}

// capLine parses a capability set line of /proc/PID/status (hex).
func capLine(status, key string) (uint64, error) {
	for line := range strings.Lines(status) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			return strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
		}
	}
	return 0, fmt.Errorf("no %s line", strings.TrimSuffix(key, ":"))
}

// userNamespacesOff reports whether the kernel lets no one make a user
// namespace (user.max_user_namespaces 0).
func (s *Server) userNamespacesOff() bool {
	data, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	return err == nil && strings.TrimSpace(string(data)) == "0"
}

// unitNamespaces is the namespace types the unit's processes may make
// (RestrictNamespaces=), from systemd.
func (s *Server) unitNamespaces(ctx context.Context, unit string) (uint64, error) {
	if s.UnitNamespaces == nil {
		return 0, errors.New("systemd is not asked here")
	}
	if !strings.HasSuffix(unit, ".service") {
		return 0, fmt.Errorf("%q is not a service unit", unit)
	}
	return s.UnitNamespaces(ctx, unit)
}
