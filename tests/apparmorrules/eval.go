package apparmorrules

import (
	"fmt"
	"slices"
	"strings"
)

// Allows reports whether the profile grants every permission in perms on
// path: its allow rules grant it and no deny rule takes it away. perms holds
// letters of "rwaklmx"; x is any exec mode, a is granted by w too. owner says
// whether the process's fsuid owns the file, for owner rules. Only the
// profile's own rules count: includes (other than the variables of
// tunables/global) are not read, nor child profiles.
func (p *Profile) Allows(path, perms string, owner bool) bool {
	if perms == "" {
		return false
	}
	for i := 0; i < len(perms); i++ {
		if !p.allows(path, perms[i], owner) {
			return false
		}
	}
	return true
}

// MayAccess reports whether the profile grants perms on path to a process
// that owns the file or to one that does not: false means no owner rule or
// other rule lets anyone confined by it have that access.
func (p *Profile) MayAccess(path, perms string) bool {
	return p.Allows(path, perms, true) || p.Allows(path, perms, false)
}

func (p *Profile) allows(path string, perm byte, owner bool) bool {
	granted := false
	for _, r := range p.Files {
		if r.Owner && !owner || !r.Matches(path) || !r.covers(perm) {
			continue
		}
		if r.Deny {
			return false
		}
		granted = true
	}
	return granted
}

// covers reports whether the rule names perm (a bare file rule names all).
func (r FileRule) covers(perm byte) bool {
	if r.Bare() {
		return true
	}
	switch perm {
	case 'r':
		return r.Perms&PermRead != 0
	case 'w':
		return r.Perms&PermWrite != 0
	case 'a':
		return r.Perms&(PermAppend|PermWrite) != 0
	case 'k':
		return r.Perms&PermLock != 0
	case 'l':
		return r.Perms&PermLink != 0
	case 'm':
		return r.Perms&PermMmap != 0
	case 'x':
		return r.Exec != ""
	}
	return false
}

// AllowsNetwork reports whether the profile lets the process create a socket
// of domain (inet, inet6, unix, netlink, ...) and type (stream, dgram, ...).
func (p *Profile) AllowsNetwork(domain, typ string) bool {
	granted := false
	for _, r := range p.Network {
		if r.Domain != "" && r.Domain != domain || r.Type != "" && r.Type != typ {
			continue
		}
		if r.Deny {
			if r.Protocol == "" {
				return false
			}
			continue
		}
		granted = true
	}
	return granted
}

// NetworkRulesFor returns the allow rules that name domain or any domain: a
// profile with none for inet and inet6 has no IP networking at all.
func (p *Profile) NetworkRulesFor(domain string) []NetworkRule {
	var out []NetworkRule
	for _, r := range p.Network {
		if !r.Deny && (r.Domain == "" || r.Domain == domain) {
			out = append(out, r)
		}
	}
	return out
}

// AllowsCapability reports whether the profile grants capability name
// (lower case, without CAP_: "chown", "sys_admin").
func (p *Profile) AllowsCapability(name string) bool {
	granted := false
	for _, r := range p.CapabilityRules {
		if len(r.Names) > 0 && !slices.Contains(r.Names, name) {
			continue
		}
		if r.Deny {
			return false
		}
		granted = true
	}
	return granted
}

// GrantsAllCapabilities reports a bare "capability," allow rule.
func (p *Profile) GrantsAllCapabilities() bool {
	for _, r := range p.CapabilityRules {
		if !r.Deny && len(r.Names) == 0 {
			return true
		}
	}
	return false
}

// Capabilities returns the capability names the profile's allow rules list,
// sorted, without those denied.
func (p *Profile) Capabilities() []string {
	var out []string
	for _, r := range p.CapabilityRules {
		for _, n := range r.Names {
			if !r.Deny && p.AllowsCapability(n) && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// DBusMessage is a D-Bus message as a rule sees it: Access is "send" or
// "receive" (or "bind", "eavesdrop"); the peer is the other end.
type DBusMessage struct {
	Access, Bus, Path, Interface, Member string
	Name                                 string // for bind
	PeerName, PeerLabel                  string
}

func (m DBusMessage) String() string {
	return fmt.Sprintf("%s bus=%s path=%s interface=%s member=%s peer=(name=%s label=%s)",
		m.Access, m.Bus, m.Path, m.Interface, m.Member, m.PeerName, m.PeerLabel)
}

// AllowsDBus reports whether the profile's dbus rules allow m. A rule's
// condition on a field that m leaves empty does not match.
func (p *Profile) AllowsDBus(m DBusMessage) bool {
	granted := false
	for _, r := range p.DBus {
		if !r.matches(m) {
			continue
		}
		if r.Deny {
			return false
		}
		granted = true
	}
	return granted
}

func (r DBusRule) matches(m DBusMessage) bool {
	if len(r.Access) > 0 && !slices.Contains(r.Access, m.Access) {
		return false
	}
	for _, c := range []struct {
		g *Glob
		v string
	}{
		{r.bus, m.Bus}, {r.path, m.Path}, {r.iface, m.Interface}, {r.member, m.Member},
		{r.name, m.Name}, {r.peerN, m.PeerName}, {r.peerL, m.PeerLabel},
	} {
		if c.g != nil && (c.v == "" || !c.g.Match(c.v)) {
			return false
		}
	}
	return true
}

// ExecRules returns the file rules that let the process execute something
// (any exec mode) or map a file executable (m).
func (p *Profile) ExecRules() []FileRule {
	var out []FileRule
	for _, r := range p.Files {
		if !r.Deny && (r.Exec != "" || r.Perms&PermMmap != 0 || r.Bare()) {
			out = append(out, r)
		}
	}
	return out
}

// String is the rule as one line, for messages.
func (r FileRule) String() string {
	if r.Bare() {
		return r.prefix() + "file"
	}
	s := r.prefix() + r.Path + " " + r.permString()
	if r.Target != "" {
		s += " -> " + r.Target
	}
	return s
}

func (q Qualifiers) prefix() string {
	var b strings.Builder
	if q.Audit {
		b.WriteString("audit ")
	}
	if q.Deny {
		b.WriteString("deny ")
	}
	if q.Owner {
		b.WriteString("owner ")
	}
	return b.String()
}

func (r FileRule) permString() string {
	var b strings.Builder
	for _, x := range []struct {
		p Perms
		c byte
	}{{PermRead, 'r'}, {PermWrite, 'w'}, {PermAppend, 'a'}, {PermLock, 'k'}, {PermLink, 'l'}, {PermMmap, 'm'}} {
		if r.Perms&x.p != 0 {
			b.WriteByte(x.c)
		}
	}
	b.WriteString(r.Exec)
	return b.String()
}
