package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/edgeseal/edgeseal/internal/naming"
)

// UnitLookup asks systemd which unit a process belongs to; go-systemd's
// *dbus.Conn is one.
type UnitLookup interface {
	GetUnitNameByPID(ctx context.Context, pid uint32) (string, error)
}

// Identity is who a caller is.
type Identity struct {
	PID  int32
	UID  uint32
	GID  uint32
	Unit string // the systemd unit of the process, "" if systemd knows none
	// SnapApp is "<snap>.<app>" when Unit is a snap daemon's service or a
	// system-level app scope and the process sits in that unit's cgroup at
	// the top of system.slice; never taken from a cgroup path alone (see
	// SnapAppOf).
	SnapApp string
	// Credential is set when systemd itself asks, for LoadCredential=.
	Credential *CredentialRequest
	// Exe is the SHA-256 (hex) of the executable file the process runs, read
	// (by edgeseal-exeid) only when the service it matched pins executables;
	// "" otherwise.
	Exe string
	// UnitFiles are the files systemd loaded the caller's unit from (for
	// LoadCredential=, the unit it asks for), read over D-Bus only when the
	// service it matched pins them; nil otherwise.
	UnitFiles *UnitFiles
	// Snap is what snapd says of the snap of the caller's snap app (for
	// LoadCredential=, of the unit asking), read only when the service it
	// matched pins its revision or publisher; nil otherwise.
	Snap *SnapInfo
}

// SnapInfo is what snapd says of an installed snap: its (instance) name, its
// current revision as snapd writes it ("42", "x1" for a local install) and
// its publisher's account id ("" for a snap without one: a local install).
type SnapInfo struct {
	Name      string
	Revision  string
	Publisher string
}

// UnitFiles are the files systemd loaded a unit from: its fragment (its
// FragmentPath, "" for a unit that has none) and its drop-ins (DropInPaths),
// absolute paths.
type UnitFiles struct {
	Fragment string
	DropIns  []string
}

// String is how the caller was seen, for refusals and the journal, e.g.
// "unit app-one.service (pid 812, uid 61234, gid 61234)".
func (id Identity) String() string {
	ids := fmt.Sprintf("pid %d, uid %d, gid %d", id.PID, id.UID, id.GID)
	switch {
	case id.Credential != nil:
		return fmt.Sprintf("LoadCredential=%s of unit %s (%s)", id.Credential.ID, id.Credential.Unit, ids)
	case id.SnapApp != "":
		return fmt.Sprintf("snap app %s (%s)", id.SnapApp, ids)
	case id.Unit != "":
		return fmt.Sprintf("unit %s (%s)", id.Unit, ids)
	}
	return fmt.Sprintf("uid %d (pid %d, gid %d)", id.UID, id.PID, id.GID)
}

// Resolver turns a Peer into an Identity.
type Resolver struct {
	Units UnitLookup
	// Proc is the procfs root; "" means /proc.
	Proc string
}

// Resolve says who p is: its unit (from systemd over D-Bus), its snap app (from
// that unit, confirmed by its cgroup), and, for a root caller bound to a LoadCredential= address, the
// credential it asks for. It checks after every lookup that p is still the
// process that connected, and fails with ErrGone if not.
func (r *Resolver) Resolve(ctx context.Context, p *Peer) (Identity, error) {
	if r.Proc != "" {
		p.proc = r.Proc
	}
	id := Identity{PID: p.PID, UID: p.UID, GID: p.GID}
	if p.UID == 0 {
		if cr, err := ParseCredentialAddr(p.Addr); err == nil {
			id.Credential = &cr
		}
	}
	unit, err := r.Units.GetUnitNameByPID(ctx, uint32(p.PID))
	if err != nil {
		if err := p.Same(); err != nil {
			return id, err
		}
		// A live process outside any unit (rare: a process systemd has not
		// placed yet) is known by uid and gid alone.
		unit = ""
	}
	if unit != "" && naming.ValidUnitName(unit) != nil {
		return id, fmt.Errorf("cannot use the unit name systemd gave for pid %d: %q is not a unit name", p.PID, unit)
	}
	id.Unit = unit
	cg, err := readBounded(fmt.Sprintf("%s/%d/cgroup", p.proc, p.PID), maxCgroupFile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return id, ErrGone
		}
		return id, fmt.Errorf("cannot read the cgroup of pid %d: %w", p.PID, err)
	}
	id.SnapApp = SnapAppOf(unit, string(cg))
	// The lookups above were by pid: they are about the caller only if it is
	// still the same live process now.
	if err := p.Same(); err != nil {
		return id, err
	}
	return id, nil
}

// CgroupUnits tells which unit a process runs in from its cgroup, by systemd's
// own rule (cg_path_get_unit): the first component of the process's path in
// systemd's hierarchy that is not a slice. It answers as GetUnitByPID does for
// every process in a unit of the system manager, and needs no D-Bus: a
// strictly confined snap may read /proc/PID/cgroup (system-observe) but may not
// ask systemd (system-observe grants no call on org.freedesktop.systemd1).
//
// It is as strong as the D-Bus lookup because only the system manager (root)
// makes the cgroups under the root's slices: a unit with Delegate=yes, a user's
// manager or a container manager makes cgroups only below its own unit, so
// whatever it names them, the first component that is not a slice is still its
// unit (user@1000.service for a user's apps, as systemd reports). A process of
// a cgroup namespace other than the reader's shows a path relative to it
// ("/.." first), which names no unit.
type CgroupUnits struct {
	// Proc is the procfs root; "" means /proc.
	Proc string
}

// GetUnitNameByPID implements UnitLookup from /proc/PID/cgroup. A process in
// no unit (the root cgroup, a path that names no unit) is an error, as
// systemd's NoUnitForPID is.
func (c CgroupUnits) GetUnitNameByPID(_ context.Context, pid uint32) (string, error) {
	proc := c.Proc
	if proc == "" {
		proc = "/proc"
	}
	data, err := readBounded(fmt.Sprintf("%s/%d/cgroup", proc, pid), maxCgroupFile)
	if err != nil {
		return "", fmt.Errorf("cannot read the cgroup of pid %d: %w", pid, err)
	}
	unit := UnitOfCgroup(string(data))
	if unit == "" {
		return "", fmt.Errorf("%w: pid %d", ErrNoUnit, pid)
	}
	return unit, nil
}

// CgroupFirst tells a process's unit from its cgroup (CgroupUnits), and asks
// Fallback (systemd over D-Bus) only for a process whose cgroup names no unit:
// one in the root cgroup, in another cgroup namespace, or on a host without
// the unified hierarchy. The cgroup's answer is systemd's own rule read from
// the kernel, as strong as the D-Bus one (see CgroupUnits), and costs a file
// read instead of a round trip to PID 1, which the token provider made for
// every request (0.9 to 1.7 ms each, measured: issue 18).
type CgroupFirst struct {
	Cgroup   CgroupUnits
	Fallback UnitLookup
}

// GetUnitNameByPID implements UnitLookup.
func (c CgroupFirst) GetUnitNameByPID(ctx context.Context, pid uint32) (string, error) {
	unit, err := c.Cgroup.GetUnitNameByPID(ctx, pid)
	if errors.Is(err, ErrNoUnit) && c.Fallback != nil {
		return c.Fallback.GetUnitNameByPID(ctx, pid)
	}
	return unit, err
}

// ErrNoUnit is CgroupUnits' answer for a process in no unit.
var ErrNoUnit = errors.New("no unit for the process")

// maxCgroupFile bounds a /proc/PID/cgroup read: one line per hierarchy, each
// at most a path (4096) and a controller list.
const maxCgroupFile = 64 << 10

// UnitOfCgroup returns the unit systemd's rule finds in the content of a
// /proc/PID/cgroup (see CgroupUnits), "" if none: the first path component
// that is not a slice, with systemd's cgroup escape (a leading "_") undone,
// if it is a valid unit name.
func UnitOfCgroup(content string) string {
	path := cgroupPath(content)
	if !strings.HasPrefix(path, "/") {
		return ""
	}
	for comp := range strings.SplitSeq(path[1:], "/") {
		// cg_escape prefixes "_" to names that could clash with the kernel's
		// own files (cgroup.*, tasks, a controller's prefix) or start with "_".
		comp = strings.TrimPrefix(comp, "_")
		if naming.ValidUnitName(comp) != nil {
			return ""
		}
		if !strings.HasSuffix(comp, ".slice") {
			return comp
		}
	}
	return ""
}

func readBounded(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: longer than %d bytes", name, limit)
	}
	return data, nil
}

// CredentialRequest is what systemd asks for when it loads a credential from a
// socket: the credential ID of a unit.
type CredentialRequest struct {
	Unit string
	ID   string
}

// ParseCredentialAddr parses the abstract address systemd binds to before it
// connects to load a credential: "@<random hex>/unit/<unit>/<credential id>".
func ParseCredentialAddr(addr string) (CredentialRequest, error) {
	rest, ok := strings.CutPrefix(addr, "@")
	if !ok {
		return CredentialRequest{}, errors.New("not an abstract socket address")
	}
	random, rest, ok := strings.Cut(rest, "/unit/")
	if !ok || random == "" || len(random) > 16 || strings.Trim(random, "0123456789abcdef") != "" {
		return CredentialRequest{}, errors.New(`not "@<hex>/unit/<unit>/<credential id>"`)
	}
	unit, cred, ok := strings.Cut(rest, "/")
	if !ok {
		return CredentialRequest{}, errors.New("no credential id after the unit name")
	}
	if err := naming.ValidUnitName(unit); err != nil {
		return CredentialRequest{}, fmt.Errorf("unit %q: %w", unit, err)
	}
	if err := validCredentialID(cred); err != nil {
		return CredentialRequest{}, fmt.Errorf("credential id %q: %w", cred, err)
	}
	return CredentialRequest{Unit: unit, ID: cred}, nil
}

// validCredentialID follows systemd's credential_name_valid: a file name.
func validCredentialID(s string) error {
	switch {
	case s == "" || s == "." || s == "..":
		return errors.New("not a file name")
	case len(s) > 255:
		return errors.New("longer than 255 bytes")
	}
	for _, c := range []byte(s) {
		if c == '/' || c < 0x20 || c >= 0x7f {
			return fmt.Errorf("holds %q", c)
		}
	}
	return nil
}

// SnapAppOf returns "<snap>.<app>" when a process is a snap app, else "". unit
// is the unit systemd reports for the process (GetUnitByPID) and cgroup the
// content of its /proc/PID/cgroup. Both must say the same: the unit is one
// snapd names for an app, and the process sits in that unit's own cgroup at
// the top of system.slice, "/system.slice/<unit>", not below it.
//
// The name is never taken from a cgroup path alone: whoever may make cgroups
// (a unit with Delegate=yes, a container manager, a user's systemd) can name
// one like a snap's, at any depth. systemd reports the unit that owns the
// cgroup, which for a process in /system.slice/x.service/snap.a.b.service is
// x.service; and the path check refuses a process in a subgroup of the snap's
// own unit, or seen from a cgroup namespace that is not the system's.
//
// # The names snapd makes
//
// From snapd's source (snap/info.go AppInfo.ServiceName and SecurityTag;
// sandbox/cgroup/tracking.go CreateTransientScopeForTracking;
// sandbox/cgroup/scanning.go SecurityTagFromCgroupPath):
//
//   - a daemon: "snap.<instance>.<app>.service", where <instance> is the snap
//     name, or "<snap>_<key>" for a parallel install;
//   - an app started by `snap run`: a transient scope,
//     "snap.<instance>.<app>-<uuid>.scope" since snapd 2.60 and
//     "snap.<instance>.<app>.<uuid>.scope" before (the UUID from the kernel's
//     random/uuid: lower-case);
//   - a hook: "snap.<instance>.hook.<hook>-<uuid>.scope" (or ".<uuid>"): no app.
//
// # Which count
//
// A daemon counts. An app scope counts only where systemd's system manager
// made it, at /system.slice/<scope>: `snap run` asks the user's manager first
// and the system manager only for root with no session bus, and only a
// privileged caller (polkit's manage-units: root by default) may create a
// system scope. A scope under a user's manager (user@UID.service) never
// counts: its user names scopes freely, and the system manager reports
// user@UID.service for it anyway. A snap's user daemons (daemon-scope: user)
// run there too and are no snap app here.
//
// Not recognised, so refused unless another rule of the config matches: a
// daemon in a snapd quota group (its cgroup is under snap.<group>.slice, not
// system.slice), and any process in a subgroup of a snap's unit.
func SnapAppOf(unit, cgroup string) string {
	app := SnapAppOfUnit(unit)
	if app == "" {
		return ""
	}
	if cgroupPath(cgroup) != "/system.slice/"+unit {
		return ""
	}
	return app
}

// cgroupPath returns the path of the process in systemd's hierarchy from the
// content of /proc/PID/cgroup, "" if it names none. "0::/path" is the unified
// hierarchy, which systemd keeps on unified and hybrid systems;
// "N:name=systemd:/path" is its v1 tree, the only one on a legacy system (where
// the unified line is absent or "/"). A stale name=systemd line can remain
// beside a unified tree (seen inside systemd-nspawn: "name=systemd:/.."): the
// unified path wins when it says anything.
func cgroupPath(content string) string {
	var unified, named string
	for line := range strings.Lines(content) {
		line = strings.TrimSuffix(line, "\n")
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrl, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		switch {
		case id == "0" && ctrl == "":
			unified = p
		case ctrl == "name=systemd":
			named = p
		}
	}
	if unified != "" && unified != "/" {
		return unified
	}
	return named
}

// SnapAppOfUnit returns "<snap>.<app>" for a unit name snapd makes for an app
// (see SnapAppOf), else "": the unit's name alone, for systemd asking for a
// unit's LoadCredential=, where no process of the unit is there to check.
func SnapAppOfUnit(unit string) string {
	rest, ok := strings.CutPrefix(unit, "snap.")
	if !ok {
		return ""
	}
	if r, ok := strings.CutSuffix(rest, ".service"); ok {
		rest = r
	} else if r, ok := strings.CutSuffix(rest, ".scope"); ok {
		// "<snap>.<app>-<uuid>" (snapd 2.60 and later) or "<snap>.<app>.<uuid>".
		tag, uuid := r[:max(len(r)-uuidLen, 0)], r[max(len(r)-uuidLen, 0):]
		if !isUUID(uuid) || !(strings.HasSuffix(tag, "-") || strings.HasSuffix(tag, ".")) {
			return ""
		}
		rest = tag[:len(tag)-1]
	} else {
		return ""
	}
	// An app name holds no ".": "<snap>.hook.<hook>" fails here.
	if naming.ValidSnapApp(rest) != nil {
		return ""
	}
	return rest
}

const uuidLen = len("0b4983ca-d58a-4eba-b6dc-6eab780ec021")

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range []byte(s) {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}
