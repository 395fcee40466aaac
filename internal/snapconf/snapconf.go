// Package snapconf maps the snap's options (`snap set edgeseal key=value`, which
// the configure hook reads as one JSON document with `snapctl get -d`) onto
// edgeseal's YAML config, and the effective config back onto the options, so
// that `snap get edgeseal` shows every value in force.
//
// The mapping is mechanical, so that docs/snap.md and the YAML sample document
// the same keys: a snap option is the YAML key with "-" for "_" (snap option
// names cannot hold underscores): seal.tpm2.pin_file is seal.tpm2.pin-file.
// Lists and the services table are JSON values:
//
//	snap set edgeseal seal.tpm2.pcrs='[7,11]'
//	snap set edgeseal services='[{"name":"app","snap-apps":["app.daemon"]}]'
//
// A document that does not make a valid config is refused whole, with an error
// naming the option at fault: the hook then fails, snapd keeps the previous
// options, and the config file is left as it was.
package snapconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/edgeseal/edgeseal/internal/config"
)

// Sections are the top-level options, one per section of the YAML config (the
// configure hook asks snapctl for these only).
var Sections = []string{"vault", "pki", "seal", "tokens", "tokend", "services", "service-tls", "file-vaults", "controller"}

// MaxDocument bounds the options document read from snapctl.
const MaxDocument = config.MaxSize

// Defaults is the config the snap starts with: the config package's defaults,
// with Vault's storage in the snap's data directory (through "current", so the
// path stays valid across refreshes) and the token-issuing token owned by
// root, the user every app of the snap runs as. The file vaults live in the
// snap's common directory: snapd copies the revision's data directory at every
// refresh, which would copy a vault's files in clear (unlocked) or fail on them
// (locked), and the snap may not write /var/lib/edgeseal.
func Defaults(instance string) *config.Config {
	c := config.Default()
	c.Vault.StoragePath = filepath.Join("/var/snap", instance, "current", "vault", "data")
	c.Tokens.TokendUser = "root"
	c.FileVaults.Dir = filepath.Join("/var/snap", instance, "common", "vaults")
	return c
}

// Parse turns the options document into a validated config, over the snap's
// defaults, and the YAML that the config file should hold. Errors name snap
// options ("vault.kv-version"), not YAML keys.
func Parse(instance string, doc []byte) (*config.Config, []byte, error) {
	if len(doc) > MaxDocument {
		return nil, nil, fmt.Errorf("the options are larger than %d bytes", MaxDocument)
	}
	var opts map[string]any
	if len(bytes.TrimSpace(doc)) > 0 {
		if err := json.Unmarshal(doc, &opts); err != nil {
			return nil, nil, fmt.Errorf("cannot decode the options from snapctl: %w", err)
		}
	}
	// The defaults first, then the options over them: an option not set keeps
	// the snap's default (which differs from the config file's for some keys).
	base, err := toMap(Defaults(instance))
	if err != nil {
		return nil, nil, err
	}
	over, ok := rename(opts, "-", "_").(map[string]any)
	if !ok && opts != nil {
		return nil, nil, errors.New("the options are not a JSON object")
	}
	merged := merge(base, over)
	data, err := yaml.Marshal(merged)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot encode the options as YAML: %w", err)
	}
	cfg, err := config.Parse("snap options", data)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			if ce.Field == "" {
				return nil, nil, errors.New(ce.Msg)
			}
			return nil, nil, fmt.Errorf("%s: %s", Option(ce.Field), optionMsg(ce.Msg))
		}
		return nil, nil, err
	}
	if cfg.Seal.Method == "pkcs11" {
		// The snap ships no edgeseal-pkcs11 (the one cgo binary) and has no
		// interface to a vendor's module or its token: refused here rather
		// than half working at the next boot.
		return nil, nil, errors.New("seal.method: pkcs11 is not available in the snap (it does not ship the PKCS#11 helper edgeseal-pkcs11): " +
			"use tpm2 or ikm-hook, or install edgeseal from its Debian build (make install) to seal with a PKCS#11 token")
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot encode the config: %w", err)
	}
	return cfg, append([]byte(header), out...), nil
}

const header = `# edgeseal configuration, written by the snap's configure hook from its options.
# Change it with "snap set edgeseal KEY=VALUE" (see "snap get edgeseal"), not here:
# the next configure writes this file again.
`

// Effective returns the options of cfg, one JSON value per top-level key, for
// `snapctl set KEY=VALUE`.
func Effective(cfg *config.Config) (map[string]string, error) {
	m, err := toMap(cfg)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(m))
	for k, v := range rename(m, "_", "-").(map[string]any) {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("cannot encode option %s: %w", k, err)
		}
		out[k] = string(b)
	}
	return out, nil
}

// Option turns a YAML field path ("services[2].snap_apps") into the snap
// option's name ("services[2].snap-apps").
func Option(field string) string { return strings.ReplaceAll(field, "_", "-") }

// optionMsg rewrites field names quoted inside a config error message, and
// points at the snap's options rather than the config file's.
func optionMsg(msg string) string {
	msg = strings.ReplaceAll(msg, "`edgeseal config default`", "`snap get -d edgeseal`")
	for _, k := range underscoreKeys {
		msg = strings.ReplaceAll(msg, k, Option(k))
	}
	return msg
}

// underscoreKeys are the config's YAML keys that hold an underscore, read from
// the config's struct tags so that a new key is never missed.
var underscoreKeys = func() []string {
	var keys []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if strings.Contains(name, "_") && !slices.Contains(keys, name) {
				keys = append(keys, name)
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[config.Config]())
	return keys
}()

// toMap is cfg as its YAML tree of maps, lists and scalars.
func toMap(cfg *config.Config) (map[string]any, error) {
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot encode the config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("cannot decode the config: %w", err)
	}
	return m, nil
}

// rename replaces from with to in every map key of v, at any depth.
func rename(v any, from, to string) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[strings.ReplaceAll(k, from, to)] = rename(e, from, to)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = rename(e, from, to)
		}
		return out
	default:
		return v
	}
}

// merge lays over onto base: maps merge key by key, anything else replaces.
func merge(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = merge(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}
