package apparmorrules

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Limits that keep a hostile or mistaken profile text from making the reader
// slow: AppArmor's own nesting limit of {} groups, and bounds on what variable
// expansion may produce.
const (
	maxAltDepth     = 50
	maxExpandDepth  = 16
	maxExpandedSize = 64 << 10
)

// Variables are AppArmor variables (@{NAME}): each a list of values, which a
// pattern using it matches any of.
type Variables map[string][]string

// pidPattern is @{pid} of Debian's tunables/kernelvars: 1 to 4999999.
const pidPattern = "{[1-9],[1-9][0-9],[1-9][0-9][0-9],[1-9][0-9][0-9][0-9],[1-9][0-9][0-9][0-9][0-9],[1-9][0-9][0-9][0-9][0-9][0-9],[1-4][0-9][0-9][0-9][0-9][0-9][0-9]}"

// Builtin returns the variables of <tunables/global> that edgeseal's profiles
// use, with the values Debian and Ubuntu give them. A profile's own definitions
// take precedence.
func Builtin() Variables {
	return Variables{
		"PROC": {"/proc/"},
		"sys":  {"/sys/"},
		"run":  {"/run/", "/var/run/"},
		"pid":  {pidPattern},
		"pids": {"@{pid}"},
		"tid":  {"@{pid}"},
	}
}

// Glob is a compiled AppArmor pattern (AARE): * matches within one path
// element, ** across elements, ? one character other than /, [...] a
// character class, {a,b} alternatives, \ quotes the next character. As in
// apparmor_parser, a * or ** that makes up a whole path element (/*, /**,
// /*/) must match at least one character, so /dir/* and /dir/** do not match
// /dir/ itself.
type Glob struct {
	pattern string
	re      *regexp.Regexp
}

// String is the pattern the glob was compiled from (variables expanded).
func (g *Glob) String() string { return g.pattern }

// Match reports whether s matches the whole pattern.
func (g *Glob) Match(s string) bool { return g.re.MatchString(s) }

// CompilePath expands the variables in pattern (vars over Builtin), folds
// repeated slashes as apparmor_parser does for path rules, and compiles the
// result.
func CompilePath(pattern string, vars Variables) (*Glob, error) {
	s, err := Expand(pattern, vars)
	if err != nil {
		return nil, err
	}
	return CompileGlob(foldSlashes(s))
}

// foldSlashes turns every run of slashes into one.
func foldSlashes(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '/' && i > 0 && s[i-1] == '/' {
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Expand replaces every @{NAME} in s with its value, or with {v1,v2,...} when
// it has several, recursively. vars is looked up before Builtin. An undefined
// or malformed variable is an error.
func Expand(s string, vars Variables) (string, error) {
	return expand(s, vars, 0)
}

func expand(s string, vars Variables, depth int) (string, error) {
	if !strings.Contains(s, "@{") {
		return s, nil
	}
	if depth >= maxExpandDepth {
		return "", errors.New("variables nest too deep (a variable defined through itself?)")
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "@{")
		if i < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated variable in %q", s)
		}
		name := s[i+2 : i+end]
		if !validVarName(name) {
			return "", fmt.Errorf("bad variable name %q", name)
		}
		vals, ok := vars[name]
		if !ok {
			vals, ok = Builtin()[name]
		}
		if !ok {
			return "", fmt.Errorf("undefined variable @{%s}", name)
		}
		if len(vals) == 0 {
			return "", fmt.Errorf("variable @{%s} has no value", name)
		}
		// As apparmor_parser does, a value's leading slashes go when the text
		// before the variable ends with one, and its trailing slashes when
		// the text after it starts with one: @{run}/dbus is /run/dbus.
		afterSlash := strings.HasSuffix(b.String(), "/")
		beforeSlash := strings.HasPrefix(s[i+end+1:], "/")
		exp := make([]string, len(vals))
		for j, v := range vals {
			e, err := expand(v, vars, depth+1)
			if err != nil {
				return "", err
			}
			if afterSlash {
				e = strings.TrimLeft(e, "/")
			}
			if beforeSlash {
				e = strings.TrimRight(e, "/")
			}
			exp[j] = e
		}
		if len(exp) == 1 {
			b.WriteString(exp[0])
		} else {
			b.WriteString("{" + strings.Join(exp, ",") + "}")
		}
		if b.Len() > maxExpandedSize {
			return "", fmt.Errorf("variables expand to more than %d bytes", maxExpandedSize)
		}
		s = s[i+end+1:]
	}
	if b.Len() > maxExpandedSize {
		return "", fmt.Errorf("variables expand to more than %d bytes", maxExpandedSize)
	}
	return b.String(), nil
}

func validVarName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// CompileGlob compiles an AppArmor pattern whose variables are already
// expanded. It refuses what apparmor_parser refuses: unbalanced {} or [],
// a {} group without a comma, a trailing backslash.
func CompileGlob(pattern string) (*Glob, error) {
	if pattern == "" {
		return nil, errors.New("empty pattern")
	}
	if strings.Contains(pattern, "@{") {
		return nil, fmt.Errorf("pattern %q has an unexpanded variable", pattern)
	}
	var out strings.Builder
	out.WriteString(`(?s)^`)
	// lastSlash: the regexp so far ends with a literal /, as in the parser's
	// check of its PCRE buffer.
	lastSlash := false
	escaped := false
	inClass, classFirst := false, false
	depth := 0
	var items [maxAltDepth + 1]int
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		if escaped {
			escaped = false
			if inClass {
				writeClassByte(&out, c)
			} else {
				out.WriteString(regexp.QuoteMeta(string([]byte{c})))
				lastSlash = c == '/'
			}
			classFirst = false
			continue
		}
		if c == '\\' {
			escaped = true
			continue
		}
		if inClass {
			switch {
			case c == ']':
				if classFirst {
					return nil, fmt.Errorf("pattern %q: empty character class", pattern)
				}
				inClass = false
				out.WriteByte(']')
				lastSlash = false
			case c == '^' && classFirst:
				out.WriteByte('^')
				continue // the class is still empty
			case c == '-' && !classFirst:
				out.WriteByte('-')
			default:
				writeClassByte(&out, c)
			}
			classFirst = false
			continue
		}
		switch c {
		case '*':
			if lastSlash {
				j := i
				for j < len(pattern) && pattern[j] == '*' {
					j++
				}
				if j == len(pattern) || pattern[j] == '/' {
					out.WriteString(`[^/]`)
				}
			}
			if i+1 < len(pattern) && pattern[i+1] == '*' {
				out.WriteString(`.*`)
				i++
			} else {
				out.WriteString(`[^/]*`)
			}
		case '?':
			out.WriteString(`[^/]`)
		case '[':
			inClass, classFirst = true, true
			out.WriteByte('[')
		case ']':
			return nil, fmt.Errorf("pattern %q: ] without [", pattern)
		case '{':
			depth++
			if depth >= maxAltDepth {
				return nil, fmt.Errorf("pattern %q: {} nested deeper than %d", pattern, maxAltDepth)
			}
			items[depth] = 0
			out.WriteString(`(?:`)
		case '}':
			if depth == 0 {
				return nil, fmt.Errorf("pattern %q: } without {", pattern)
			}
			if items[depth] == 0 {
				return nil, fmt.Errorf("pattern %q: a {} group needs at least two alternatives", pattern)
			}
			depth--
			out.WriteByte(')')
		case ',':
			if depth > 0 {
				items[depth]++
				out.WriteByte('|')
			} else {
				out.WriteByte(',')
			}
		default:
			out.WriteString(regexp.QuoteMeta(string([]byte{c})))
		}
		lastSlash = c == '/'
	}
	switch {
	case escaped:
		return nil, fmt.Errorf("pattern %q: trailing backslash", pattern)
	case inClass:
		return nil, fmt.Errorf("pattern %q: unclosed [", pattern)
	case depth > 0:
		return nil, fmt.Errorf("pattern %q: unclosed {", pattern)
	}
	out.WriteByte('$')
	re, err := regexp.Compile(out.String())
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	return &Glob{pattern: pattern, re: re}, nil
}

// writeClassByte writes c as a literal member of a character class.
func writeClassByte(out *strings.Builder, c byte) {
	switch {
	case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= 0x80:
		out.WriteByte(c)
	case c < 0x20 || c == 0x7f:
		fmt.Fprintf(out, `\x{%02x}`, c)
	default:
		out.WriteByte('\\')
		out.WriteByte(c)
	}
}
