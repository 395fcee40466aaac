package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is a config error: which file, line and field, and what to do. Parse and
// Load return every decoding and validation problem as an *Error.
type Error struct {
	File  string // the file name given to Parse or Load
	Line  int    // 1-based; 0 if unknown
	Field string // dotted path, e.g. "vault.kv_version" or "services[2].name"; "" if unknown
	Msg   string // what is wrong and what to write instead
}

// Error renders FILE:LINE: FIELD: MSG, leaving out the parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// nodeError is an error of one YAML node (a bad duration): Parse names its field
// from the node's position.
type nodeError struct {
	line, column int
	msg          string
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

var (
	yamlLineRE     = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
	unknownFieldRE = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
	duplicateKeyRE = regexp.MustCompile(`^mapping key "(.*)" already defined at line (\d+)$`)
	wrongTypeRE    = regexp.MustCompile("(?s)^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")
)

// yamlError turns an error of yaml.v3 ("yaml: unmarshal errors:\n  line 3: field x
// not found in type config.Vault") into an *Error for its first problem, naming
// the field by finding the line in doc (nil if the document did not parse).
func yamlError(filename string, err error, doc *yaml.Node) *Error {
	e := &Error{File: filename}
	if ne, ok := errors.AsType[*nodeError](err); ok {
		e.Line, e.Msg = ne.line, ne.msg
		e.Field = findField(doc, func(k entry) bool { return k.value.Line == ne.line && k.value.Column == ne.column })
		return e
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	te, isType := errors.AsType[*yaml.TypeError](err)
	if isType && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	onLine := func(k entry) bool { return k.key != nil && k.key.Line == e.Line }
	var m match
	switch {
	case !isType:
		e.Msg = "invalid YAML: " + msg
	case m.find(unknownFieldRE, msg):
		want := sectionOf(m[2]) + m[1]
		e.Field = findField(doc, func(k entry) bool { return onLine(k) && k.key.Value == m[1] && anyIndex(k.path) == want })
		if e.Field == "" {
			e.Field = want // set through an alias: the path is still right, less its index
		}
		e.Msg = "unknown key: check its spelling against `edgeseal config default`"
	case m.find(duplicateKeyRE, msg):
		e.Field = findField(doc, func(k entry) bool { return onLine(k) && k.key.Value == m[1] })
		e.Msg = fmt.Sprintf("is set twice (first at line %s): keep one", m[2])
	case m.find(wrongTypeRE, msg):
		shown := strings.TrimSuffix(m[2], "...")
		e.Field = findField(doc, func(k entry) bool {
			return k.value.Line == e.Line && k.value.Kind == yaml.ScalarNode && m[2] != "" && strings.HasPrefix(k.value.Value, shown)
		})
		if e.Field == "" {
			e.Field = findField(doc, onLine)
		}
		e.Msg = typeHint(m[3]) + ", not " + typeShown(m[1], m[2])
	default:
		e.Field = findField(doc, onLine)
		e.Msg = msg
	}
	return e
}

// match holds the submatches of the last successful find.
type match []string

func (m *match) find(re *regexp.Regexp, s string) bool {
	*m = re.FindStringSubmatch(s)
	return *m != nil
}

func typeHint(goType string) string {
	switch {
	case goType == "int":
		return "must be a whole number"
	case goType == "bool":
		return "must be true or false"
	case goType == "string":
		return "must be a string"
	case strings.HasPrefix(goType, "[]"):
		return "must be a list"
	case strings.HasPrefix(goType, "config."):
		return "must be a mapping of keys to values"
	}
	return "must be a " + goType
}

func typeShown(tag, value string) string {
	switch {
	case tag == "seq":
		return "a list"
	case tag == "map":
		return "a mapping"
	case value != "":
		return "`" + value + "`"
	}
	return "!!" + tag
}

// sectionOf is the dotted path of a field of type config.<typeName>.
func sectionOf(typeName string) string {
	switch typeName {
	case "Vault":
		return "vault."
	case "PKI":
		return "pki."
	case "Seal":
		return "seal."
	case "IKMHook":
		return "seal.ikm_hook."
	case "TPM2":
		return "seal.tpm2."
	case "PKCS11":
		return "seal.pkcs11."
	case "Tokens":
		return "tokens."
	case "Tokend":
		return "tokend."
	case "Service":
		return "services[]."
	case "ServiceTLS":
		return "service_tls."
	case "FileVaults":
		return "file_vaults."
	case "FileVault":
		return "file_vaults.vaults[]."
	}
	return ""
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

// anyIndex writes "services[2].name" as "services[].name".
func anyIndex(path string) string { return indexRE.ReplaceAllString(path, "[]") }

// entry is one mapping key, or one sequence item (key nil), of a document.
type entry struct {
	path       string
	depth      int
	key, value *yaml.Node
}

// entries lists every key and sequence item under n, parents first. Aliases are
// not followed.
func entries(n *yaml.Node, path string, depth int, out []entry) []entry {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out = append(out, entry{p, depth, k, v})
			out = entries(v, p, depth+1, out)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out = append(out, entry{p, depth, nil, v})
			out = entries(v, p, depth+1, out)
		}
	}
	return out
}

func documentEntries(doc *yaml.Node) []entry {
	if doc == nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	return entries(doc.Content[0], "", 0, nil)
}

// findField is the path of the deepest entry of doc that ok accepts (the first
// of those as deep), or "".
func findField(doc *yaml.Node, ok func(entry) bool) string {
	best := entry{depth: -1}
	for _, k := range documentEntries(doc) {
		if k.depth > best.depth && ok(k) {
			best = k
		}
	}
	return best.path
}

// lineOf is the line of a dotted field path ("vault.listen", "services[2].name")
// in doc: its key's line, or an item's; if the path is not written there (a
// default), the line of the nearest parent that is; 0 if none is.
func lineOf(doc *yaml.Node, field string) int {
	lines := map[string]int{}
	for _, k := range documentEntries(doc) {
		if k.key != nil {
			lines[k.path] = k.key.Line
		} else {
			lines[k.path] = k.value.Line
		}
	}
	for field != "" {
		if l, ok := lines[field]; ok {
			return l
		}
		field = field[:max(strings.LastIndexAny(field, ".["), 0)]
	}
	return 0
}
