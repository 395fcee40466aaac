package apparmorrules

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Policy is one profile file: its abi, the includes and variables at its top
// level, and its profiles.
type Policy struct {
	ABI       string
	Includes  []Include
	Variables Variables // defined in the text; Builtin ones are implied
	Profiles  []*Profile
}

// Profile returns the profile called name, or nil.
func (p *Policy) Profile(name string) *Profile {
	for _, pr := range p.Profiles {
		if pr.Name == name {
			return pr
		}
	}
	return nil
}

// Include is an include directive; IfExists for "include if exists".
type Include struct {
	Path     string // as written, with its <> or ""
	IfExists bool
}

// Profile is one profile (or a child profile or hat) and its rules.
type Profile struct {
	Name       string
	Attachment string // "" for a profile attached by name only
	Flags      []string
	Includes   []Include

	Files           []FileRule
	Network         []NetworkRule
	CapabilityRules []CapabilityRule
	DBus            []DBusRule
	Other           []OtherRule // unix, signal, ptrace, mount, ...: kept as text
	Children        []*Profile
}

// Qualifiers prefix a rule.
type Qualifiers struct {
	Audit bool
	Deny  bool
	Owner bool // applies only to files the process's fsuid owns
}

// Perms are file permissions.
type Perms uint8

// File permissions (apparmor.d(5)); exec modes are in FileRule.Exec.
const (
	PermRead Perms = 1 << iota
	PermWrite
	PermAppend
	PermLock
	PermLink
	PermMmap
)

// FileRule is a file rule: PATH PERMS [-> TARGET], or a bare "file,".
type FileRule struct {
	Qualifiers
	Path   string // as written; "" for a bare file rule
	Perms  Perms
	Exec   string // "ix", "Px", "Cx", "x" (deny only), ...; "" for none
	Target string // exec transition target, if any
	glob   *Glob  // nil for a bare file rule: every path
}

// Bare reports a bare "file," rule, which covers every path.
func (r FileRule) Bare() bool { return r.glob == nil }

// Matches reports whether the rule's path pattern covers path.
func (r FileRule) Matches(path string) bool { return r.glob == nil || r.glob.Match(path) }

// NetworkRule is "network [DOMAIN] [TYPE] [PROTOCOL],"; "" is any.
type NetworkRule struct {
	Qualifiers
	Domain, Type, Protocol string
}

// CapabilityRule is "capability [NAME ...],"; no names is every capability.
type CapabilityRule struct {
	Qualifiers
	Names []string
}

// DBusRule is a dbus rule; an empty field is unconditional.
type DBusRule struct {
	Qualifiers
	Access                                       []string // send, receive, bind, eavesdrop; empty: all
	Bus, Path, Interface, Member, Name           string
	PeerName, PeerLabel                          string
	bus, path, iface, member, name, peerN, peerL *Glob
}

// OtherRule is a rule of a kind this reader does not evaluate.
type OtherRule struct {
	Qualifiers
	Kind string // the first word: unix, signal, ptrace, mount, ...
	Text string // the whole rule, qualifiers and all, on one line
}

// Parse reads a profile file. It understands the parts of the language
// edgeseal's profiles use and refuses the rest with an error naming the line.
func Parse(text string) (*Policy, error) {
	stmts, err := scan(text)
	if err != nil {
		return nil, err
	}
	pol := &Policy{Variables: Variables{}}
	var stack []*Profile
	for _, st := range stmts {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d: %s", st.line, fmt.Sprintf(format, args...))
		}
		switch st.kind {
		case stmtVar:
			if err := pol.Variables.assign(st.text); err != nil {
				return nil, fail("%v", err)
			}
		case stmtInclude:
			inc, err := parseInclude(st.text)
			if err != nil {
				return nil, fail("%v", err)
			}
			if len(stack) == 0 {
				pol.Includes = append(pol.Includes, inc)
			} else {
				top := stack[len(stack)-1]
				top.Includes = append(top.Includes, inc)
			}
		case stmtOpen:
			pr, err := parseHeader(st.text, len(stack) > 0)
			if err != nil {
				return nil, fail("%v", err)
			}
			if len(stack) == 0 {
				pol.Profiles = append(pol.Profiles, pr)
			} else {
				top := stack[len(stack)-1]
				top.Children = append(top.Children, pr)
			}
			stack = append(stack, pr)
		case stmtClose:
			if len(stack) == 0 {
				return nil, fail("} without a profile to close")
			}
			stack = stack[:len(stack)-1]
		case stmtRule:
			toks, err := tokenize(st.text)
			if err != nil {
				return nil, fail("%v", err)
			}
			if len(toks) == 0 {
				return nil, fail("empty rule")
			}
			if len(stack) == 0 {
				if toks[0] == "abi" && len(toks) == 2 && pol.ABI == "" {
					pol.ABI = toks[1]
					continue
				}
				return nil, fail("rule %q outside a profile", st.text)
			}
			if err := stack[len(stack)-1].addRule(toks, pol.Variables); err != nil {
				return nil, fail("%v", err)
			}
		}
	}
	if len(stack) > 0 {
		return nil, fmt.Errorf("profile %s is not closed", stack[len(stack)-1].Name)
	}
	if len(pol.Profiles) == 0 {
		return nil, errors.New("no profile")
	}
	return pol, nil
}

type stmtKind int

const (
	stmtRule stmtKind = iota
	stmtOpen
	stmtClose
	stmtInclude
	stmtVar
)

type stmt struct {
	kind stmtKind
	text string
	line int
}

var (
	varAssign   = regexp.MustCompile(`^@\{([A-Za-z0-9_]+)\}\s*(\+?=)\s*(.*)$`)
	includeLine = regexp.MustCompile(`^#?include(\s+if\s+exists)?\s*([<"].*[>"])$`)
)

// scan splits text into statements: rules (ended by a comma outside (), {}
// and []), profile headers (ended by a { followed by white space), closing
// braces, and the line-based includes and variable assignments. Comments go.
func scan(text string) ([]stmt, error) {
	var out []stmt
	var buf strings.Builder
	line, start := 1, 1
	alt, paren := 0, 0
	inClass, inQuote := false, false
	hasText := false // buf holds more than white space
	blank := func() bool { return !hasText }
	reset := func() { buf.Reset(); hasText = false }
	restOfLine := func(i int) (string, int) {
		j := strings.IndexByte(text[i:], '\n')
		if j < 0 {
			return text[i:], len(text)
		}
		return text[i : i+j], i + j
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		if inQuote {
			buf.WriteByte(c)
			switch c {
			case '\\':
				if i+1 < len(text) {
					i++
					buf.WriteByte(text[i])
					if text[i] == '\n' {
						line++
					}
				}
			case '"':
				inQuote = false
			case '\n':
				line++
			}
			continue
		}
		if blank() {
			// Line-based statements start where a statement may start.
			if c == '\n' {
				line++
				reset()
				continue
			}
			if c == ' ' || c == '\t' || c == '\r' {
				continue
			}
			start = line
			rest, end := restOfLine(i)
			trimmed := strings.TrimSpace(rest)
			switch {
			case includeLine.MatchString(trimmed):
				out = append(out, stmt{stmtInclude, trimmed, line})
				i = end - 1
				continue
			case c == '#':
				i = end - 1 // a comment line
				continue
			case varAssign.MatchString(trimmed):
				out = append(out, stmt{stmtVar, trimmed, line})
				i = end - 1
				continue
			}
		}
		switch c {
		case '#':
			_, end := restOfLine(i)
			i = end - 1
			continue
		case '"':
			inQuote = true
		case '\n':
			line++
			buf.WriteByte(' ')
			continue
		case '[':
			if !inClass {
				inClass = true
			}
		case ']':
			inClass = false
		case '(':
			if !inClass {
				paren++
			}
		case ')':
			if !inClass {
				if paren == 0 {
					return nil, fmt.Errorf("line %d: ) without (", line)
				}
				paren--
			}
		case '{':
			if inClass || paren > 0 {
				break
			}
			next := byte(' ')
			if i+1 < len(text) {
				next = text[i+1]
			}
			if alt == 0 && (next == ' ' || next == '\t' || next == '\n' || next == '\r') {
				if blank() {
					return nil, fmt.Errorf("line %d: { without a profile name", line)
				}
				out = append(out, stmt{stmtOpen, strings.TrimSpace(buf.String()), start})
				reset()
				continue
			}
			alt++
		case '}':
			if inClass || paren > 0 {
				break
			}
			if alt > 0 {
				alt--
				break
			}
			if !blank() {
				return nil, fmt.Errorf("line %d: rule %q has no trailing comma", start, strings.TrimSpace(buf.String()))
			}
			out = append(out, stmt{stmtClose, "}", line})
			reset()
			continue
		case ',':
			if alt == 0 && paren == 0 && !inClass {
				if blank() {
					return nil, fmt.Errorf("line %d: empty rule", line)
				}
				out = append(out, stmt{stmtRule, strings.TrimSpace(buf.String()), start})
				reset()
				continue
			}
		}
		if c != ' ' && c != '\t' && c != '\r' {
			hasText = true
		}
		buf.WriteByte(c)
	}
	switch {
	case inQuote:
		return nil, fmt.Errorf("line %d: unterminated quote", start)
	case !blank():
		return nil, fmt.Errorf("line %d: rule %q has no trailing comma", start, strings.TrimSpace(buf.String()))
	}
	return out, nil
}

// tokenize splits a statement on white space outside quotes, () and {}.
// Quotes stay in the tokens.
func tokenize(s string) ([]string, error) {
	var toks []string
	var cur strings.Builder
	depth, inQuote := 0, false
	flush := func() {
		if cur.Len() > 0 {
			toks = append(toks, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			if c == '\\' && i+1 < len(s) {
				cur.WriteByte(c)
				i++
				c = s[i]
			} else if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
		case c == '(' || c == '{':
			depth++
		case c == ')' || c == '}':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced %q in %q", c, s)
			}
		case (c == ' ' || c == '\t' || c == '\r' || c == '\n') && depth == 0:
			flush()
			continue
		}
		cur.WriteByte(c)
	}
	if inQuote || depth != 0 {
		return nil, fmt.Errorf("unbalanced quotes or brackets in %q", s)
	}
	flush()
	return toks, nil
}

// unquote removes the quotes of a quoted token.
func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
				i++
			}
			b.WriteByte(s[i])
		}
		return b.String()
	}
	return s
}

func (v Variables) assign(line string) error {
	m := varAssign.FindStringSubmatch(line)
	if m == nil {
		return fmt.Errorf("bad variable assignment %q", line)
	}
	toks, err := tokenize(m[3])
	if err != nil {
		return err
	}
	vals := make([]string, 0, len(toks))
	for _, t := range toks {
		vals = append(vals, unquote(t))
	}
	if len(vals) == 0 {
		return fmt.Errorf("variable @{%s} has no value", m[1])
	}
	name := m[1]
	if m[2] == "+=" {
		v[name] = append(v[name], vals...)
		return nil
	}
	if _, ok := v[name]; ok {
		return fmt.Errorf("variable @{%s} is defined twice", name)
	}
	v[name] = vals
	return nil
}

func parseInclude(line string) (Include, error) {
	m := includeLine.FindStringSubmatch(line)
	if m == nil {
		return Include{}, fmt.Errorf("bad include %q", line)
	}
	return Include{Path: m[2], IfExists: m[1] != ""}, nil
}

// parseHeader reads "profile NAME [ATTACHMENT] [flags=(...)]", "ATTACHMENT
// [flags=(...)]", or, nested, "^HAT" / "hat NAME".
func parseHeader(h string, nested bool) (*Profile, error) {
	toks, err := tokenize(h)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, errors.New("empty profile header")
	}
	pr := &Profile{}
	rest := toks[1:]
	switch {
	case toks[0] == "profile" && len(toks) >= 2:
		pr.Name = unquote(toks[1])
		rest = toks[2:]
		if len(rest) > 0 && isPathStart(rest[0]) {
			pr.Attachment = unquote(rest[0])
			rest = rest[1:]
		}
	case isPathStart(toks[0]):
		pr.Name = unquote(toks[0])
		pr.Attachment = pr.Name
	case nested && strings.HasPrefix(toks[0], "^") && len(toks[0]) > 1:
		pr.Name = toks[0][1:]
	case nested && toks[0] == "hat" && len(toks) >= 2:
		pr.Name = toks[1]
		rest = toks[2:]
	default:
		return nil, fmt.Errorf("cannot read profile header %q", h)
	}
	if pr.Name == "" {
		return nil, fmt.Errorf("profile header %q has no name", h)
	}
	for _, t := range rest {
		f, ok := strings.CutPrefix(t, "flags=")
		if !ok {
			return nil, fmt.Errorf("cannot read %q in profile header %q", t, h)
		}
		f = strings.TrimSuffix(strings.TrimPrefix(f, "("), ")")
		pr.Flags = append(pr.Flags, strings.FieldsFunc(f, func(r rune) bool { return r == ',' || r == ' ' })...)
	}
	return pr, nil
}

func isPathStart(t string) bool {
	return strings.HasPrefix(t, "/") || strings.HasPrefix(t, "@{") || strings.HasPrefix(t, `"/`) || strings.HasPrefix(t, `"@{`)
}

// otherKinds are rule kinds kept as text.
var otherKinds = []string{"unix", "signal", "ptrace", "mount", "remount", "umount", "pivot_root",
	"change_profile", "rlimit", "set", "link", "userns", "mqueue", "io_uring", "all"}

func (pr *Profile) addRule(toks []string, vars Variables) error {
	var q Qualifiers
	text := strings.Join(toks, " ")
qualifiers:
	for len(toks) > 0 {
		switch toks[0] {
		case "audit":
			q.Audit = true
		case "deny":
			q.Deny = true
		case "allow":
		case "owner":
			q.Owner = true
		default:
			break qualifiers
		}
		toks = toks[1:]
	}
	if len(toks) == 0 {
		return fmt.Errorf("rule %q has only qualifiers", text)
	}
	switch k := toks[0]; {
	case k == "file":
		if len(toks) == 1 {
			pr.Files = append(pr.Files, FileRule{Qualifiers: q})
			return nil
		}
		return pr.addFile(q, toks[1:], vars)
	case k == "capability":
		r := CapabilityRule{Qualifiers: q}
		for _, n := range toks[1:] {
			if !validCapName(n) {
				return fmt.Errorf("bad capability %q", n)
			}
			r.Names = append(r.Names, n)
		}
		pr.CapabilityRules = append(pr.CapabilityRules, r)
		return nil
	case k == "network":
		return pr.addNetwork(q, toks[1:])
	case k == "dbus":
		return pr.addDBus(q, toks[1:], vars)
	case slices.Contains(otherKinds, k) || strings.HasPrefix(k, "unix(") || strings.HasPrefix(k, "signal(") || strings.HasPrefix(k, "ptrace("):
		kind, _, _ := strings.Cut(k, "(")
		pr.Other = append(pr.Other, OtherRule{Qualifiers: q, Kind: kind, Text: text})
		return nil
	case isPathStart(k):
		return pr.addFile(q, toks, vars)
	case len(toks) >= 2 && isPathStart(toks[1]):
		// PERMS PATH [-> TARGET]
		return pr.addFile(q, append([]string{toks[1], toks[0]}, toks[2:]...), vars)
	}
	return fmt.Errorf("cannot read rule %q", text)
}

func validCapName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; !(c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// addFile reads PATH PERMS [-> TARGET].
func (pr *Profile) addFile(q Qualifiers, toks []string, vars Variables) error {
	if len(toks) != 2 && !(len(toks) == 4 && toks[2] == "->") {
		return fmt.Errorf("cannot read file rule %q", strings.Join(toks, " "))
	}
	r := FileRule{Qualifiers: q, Path: unquote(toks[0])}
	if !strings.HasPrefix(r.Path, "/") && !strings.HasPrefix(r.Path, "@{") {
		return fmt.Errorf("file rule path %q is not absolute", r.Path)
	}
	perms, exec, err := parsePerms(toks[1])
	if err != nil {
		return err
	}
	if exec == "x" && !q.Deny {
		return fmt.Errorf("file rule %q: x needs an exec mode (ix, Px, ...) unless denied", strings.Join(toks, " "))
	}
	r.Perms, r.Exec = perms, exec
	if len(toks) == 4 {
		if exec == "" {
			return fmt.Errorf("file rule %q: -> without an exec mode", strings.Join(toks, " "))
		}
		r.Target = unquote(toks[3])
	}
	if r.glob, err = CompilePath(r.Path, vars); err != nil {
		return err
	}
	pr.Files = append(pr.Files, r)
	return nil
}

var execModes = []string{"ix", "ux", "Ux", "px", "Px", "cx", "Cx", "pix", "Pix", "cix", "Cix", "pux", "PUx", "cux", "CUx"}

// parsePerms reads a file rule's permissions, e.g. "rw", "mr", "Pix".
func parsePerms(s string) (Perms, string, error) {
	var p Perms
	exec := ""
	if s == "" {
		return 0, "", errors.New("file rule without permissions")
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 'r':
			p |= PermRead
		case 'w':
			p |= PermWrite
		case 'a':
			p |= PermAppend
		case 'k':
			p |= PermLock
		case 'l':
			p |= PermLink
		case 'm':
			p |= PermMmap
		case 'x', 'i', 'u', 'p', 'c', 'P', 'U', 'C':
			j := i
			for j < len(s) && strings.IndexByte("iupcPUC", s[j]) >= 0 {
				j++
			}
			if j == len(s) || s[j] != 'x' {
				return 0, "", fmt.Errorf("bad permissions %q", s)
			}
			mode := s[i : j+1]
			if exec != "" || (mode != "x" && !slices.Contains(execModes, mode)) {
				return 0, "", fmt.Errorf("bad exec permissions %q", s)
			}
			exec = mode
			i = j
		default:
			return 0, "", fmt.Errorf("bad permission %q in %q", c, s)
		}
	}
	if p&PermWrite != 0 && p&PermAppend != 0 {
		return 0, "", fmt.Errorf("permissions %q: w and a conflict", s)
	}
	return p, exec, nil
}

var (
	netTypes     = []string{"stream", "dgram", "seqpacket", "rdm", "raw", "packet"}
	netProtocols = []string{"tcp", "udp", "icmp"}
)

func (pr *Profile) addNetwork(q Qualifiers, toks []string) error {
	r := NetworkRule{Qualifiers: q}
	for _, t := range toks {
		if !validCapName(t) {
			return fmt.Errorf("cannot read network rule element %q", t)
		}
		switch {
		case slices.Contains(netTypes, t) && r.Type == "":
			r.Type = t
		case slices.Contains(netProtocols, t) && r.Protocol == "":
			r.Protocol = t
		case r.Domain == "" && r.Type == "" && r.Protocol == "":
			r.Domain = t
		default:
			return fmt.Errorf("cannot read network rule element %q", t)
		}
	}
	pr.Network = append(pr.Network, r)
	return nil
}

var dbusAccess = map[string][]string{
	"send": {"send"}, "receive": {"receive"}, "bind": {"bind"}, "eavesdrop": {"eavesdrop"},
	"r": {"receive"}, "read": {"receive"}, "w": {"send"}, "write": {"send"}, "rw": {"send", "receive"},
}

func (pr *Profile) addDBus(q Qualifiers, toks []string, vars Variables) error {
	r := DBusRule{Qualifiers: q}
	for _, t := range toks {
		key, val, ok := strings.Cut(t, "=")
		if !ok {
			words := strings.FieldsFunc(strings.TrimSuffix(strings.TrimPrefix(t, "("), ")"),
				func(r rune) bool { return r == ',' || r == ' ' })
			if len(words) == 0 {
				return fmt.Errorf("cannot read dbus access %q", t)
			}
			for _, w := range words {
				acc, ok := dbusAccess[w]
				if !ok {
					return fmt.Errorf("cannot read dbus access %q", w)
				}
				r.Access = append(r.Access, acc...)
			}
			continue
		}
		val = unquote(val)
		var dst *string
		switch key {
		case "bus":
			dst = &r.Bus
		case "path":
			dst = &r.Path
		case "interface":
			dst = &r.Interface
		case "member":
			dst = &r.Member
		case "name":
			dst = &r.Name
		case "peer":
			if !strings.HasPrefix(val, "(") || !strings.HasSuffix(val, ")") {
				return fmt.Errorf("cannot read dbus peer %q", val)
			}
			for _, kv := range strings.FieldsFunc(val[1:len(val)-1], func(r rune) bool { return r == ',' || r == ' ' }) {
				k, v, ok := strings.Cut(kv, "=")
				switch {
				case ok && k == "name" && r.PeerName == "":
					r.PeerName = unquote(v)
				case ok && k == "label" && r.PeerLabel == "":
					r.PeerLabel = unquote(v)
				default:
					return fmt.Errorf("cannot read dbus peer condition %q", kv)
				}
			}
			continue
		default:
			return fmt.Errorf("cannot read dbus condition %q", key)
		}
		if *dst != "" {
			return fmt.Errorf("dbus condition %s given twice", key)
		}
		if val == "" {
			return fmt.Errorf("dbus condition %s is empty", key)
		}
		*dst = val
	}
	for _, f := range []struct {
		src string
		dst **Glob
	}{
		{r.Bus, &r.bus}, {r.Path, &r.path}, {r.Interface, &r.iface}, {r.Member, &r.member},
		{r.Name, &r.name}, {r.PeerName, &r.peerN}, {r.PeerLabel, &r.peerL},
	} {
		if f.src == "" {
			continue
		}
		s, err := Expand(f.src, vars)
		if err != nil {
			return err
		}
		if *f.dst, err = CompileGlob(s); err != nil {
			return err
		}
	}
	pr.DBus = append(pr.DBus, r)
	return nil
}
