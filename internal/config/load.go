package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Sample is the default config, every field commented; it is what `make install`
// puts in /etc/edgeseal/edgeseal.yaml and `edgeseal config default` prints.
//
//go:embed edgeseal.yaml
var Sample []byte

// MaxSize bounds a config file: far above any real one, small enough that a
// mistaken path (a disk image, /dev/zero) is refused before it is read whole.
const MaxSize = 1 << 20

// Error is a config error: which file, line and field, and what to do.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Default returns the default config (the same as parsing Sample).
func Default() *Config {
	return &Config{
		Vault: Vault{
			Listen:        "127.0.0.1:8200",
			StoragePath:   "/var/lib/edgeseal-vault/data",
			Mount:         "secret",
			KVVersion:     2,
			SecretPrefix:  "edgeseal",
			WatchInterval: Duration(250 * time.Millisecond),
		},
		PKI: PKI{Validity: Duration(8760 * time.Hour), ExtraNames: []string{}},
		Seal: Seal{
			Method:  "tpm2",
			IKMHook: IKMHook{Command: []string{"/etc/edgeseal/ikm-hook"}, Timeout: Duration(10 * time.Second)},
			TPM2:    TPM2{Device: "/dev/tpmrm0", PCRs: []int{7}},
		},
		Tokens: Tokens{
			ServicePeriod: Duration(time.Hour),
			IssuingPeriod: Duration(24 * time.Hour),
			TokendUser:    "edgeseal-tokend",
		},
		Services: []Service{},
	}
}

// Load reads and parses the config file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read config %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse decodes data (named filename in errors) over the defaults, strictly, and
// validates the result. Every error is an *Error.
func Parse(filename string, data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, &Error{File: filename, Msg: fmt.Sprintf("file is larger than %d bytes: is this the right file?", MaxSize)}
	}
	cfg := Default()
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(filename, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: filename, Line: extra.Line, Msg: "more than one YAML document: a config file holds one"}
	}
	if len(root.Content) > 0 && !(root.Content[0].Kind == yaml.ScalarNode && root.Content[0].Tag == "!!null") {
		strict := yaml.NewDecoder(bytes.NewReader(data))
		strict.KnownFields(true)
		if err := strict.Decode(cfg); err != nil {
			e := yamlError(filename, err)
			if e.Field == "" && e.Line > 0 {
				e.Field = fieldAtLine(root.Content[0], e.Line, "")
			}
			return nil, e
		}
	}
	if err := cfg.validate(); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.File = filename
			e.Line = lineOf(&root, e.Field)
		}
		return nil, err
	}
	return cfg, nil
}

var yamlLineRE = regexp.MustCompile(`line (\d+): (.*)`)
var unknownFieldRE = regexp.MustCompile(`field (\S+) not found in type config\.(\w+)`)

// yamlError turns yaml.v3's errors ("yaml: unmarshal errors:\n  line 3: field x
// not found in type config.Vault") into an *Error for the first problem.
func yamlError(filename string, err error) *Error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	e := &Error{File: filename, Msg: msg}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[2]
	}
	if m := unknownFieldRE.FindStringSubmatch(e.Msg); m != nil {
		e.Field = sectionOf(m[2]) + m[1]
		e.Msg = "unknown key (see edgeseal config default for the keys there are)"
	}
	if d, ok := errors.AsType[*durationError](err); ok {
		e.Msg = d.Error()
	}
	return e
}

// fieldAtLine names the deepest key written at line, as a dotted path.
func fieldAtLine(n *yaml.Node, line int, prefix string) string {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if k.Line == line {
				return path
			}
			if f := fieldAtLine(v, line, path); f != "" {
				return f
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			path := fmt.Sprintf("%s[%d]", prefix, i)
			if c.Kind == yaml.ScalarNode && c.Line == line {
				return path
			}
			if f := fieldAtLine(c, line, path); f != "" {
				return f
			}
		}
	}
	return ""
}

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
	case "Tokens":
		return "tokens."
	case "Service":
		return "services[]."
	}
	return ""
}

// lineOf finds the line of a dotted field path ("vault.listen", "services[2].name")
// in the document, falling back to the nearest parent found.
func lineOf(doc *yaml.Node, field string) int {
	if doc == nil || len(doc.Content) == 0 || field == "" {
		return 0
	}
	n := doc.Content[0]
	line := 0
	for _, part := range strings.Split(field, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		next := mapValue(n, name)
		if next == nil {
			return line
		}
		line, n = next.Line, next
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			v := n.Content[i+1]
			if v.Kind == yaml.MappingNode || v.Kind == yaml.SequenceNode {
				// Point at the key for a block; at the value for a scalar.
				if v.Line != n.Content[i].Line {
					return &yaml.Node{Kind: v.Kind, Content: v.Content, Line: n.Content[i].Line}
				}
			}
			return v
		}
	}
	return nil
}

type durationError struct{ value, why string }

func (e *durationError) Error() string {
	return fmt.Sprintf("%q is not a duration: %s (write e.g. 250ms, 10s, 15m, 24h)", e.value, e.why)
}

// UnmarshalYAML reads "250ms", "15m", "24h".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &Error{Line: n.Line, Msg: "a duration must be a string such as 10s"}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, &durationError{n.Value, "unknown form"})
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as "250ms", "15m0s".
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }
