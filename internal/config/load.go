package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
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
		PKI: PKI{Validity: Duration(8760 * time.Hour), ExtraNames: []string{}, CAKey: CAKeyMemory},
		Seal: Seal{
			Method:  "tpm2",
			IKMHook: IKMHook{Command: []string{"/etc/edgeseal/ikm-hook"}, Timeout: Duration(10 * time.Second)},
			TPM2: TPM2{Device: "/dev/tpmrm0", PCRs: []int{7}, Storage: TPM2StorageFile,
				NVIndex: 0x013e5e00, CounterIndex: 0x013e5e10},
			PKCS11: PKCS11{KeyLabel: "edgeseal-unseal", PINFile: "/etc/edgeseal/pkcs11-pin", Timeout: Duration(30 * time.Second), Environment: []string{}},
		},
		Tokens: Tokens{
			ServicePeriod: Duration(time.Hour),
			ServiceMaxTTL: Duration(720 * time.Hour),
			RevokeOnStop:  true,
			IssuingPeriod: Duration(24 * time.Hour),
			WrapTTL:       Duration(5 * time.Minute),
			RevokeDelay:   Duration(2 * time.Second),
			TokendUser:    "edgeseal-tokend",
		},
		Tokend: Tokend{
			IdleExit:       Duration(60 * time.Second),
			RequestTimeout: Duration(5 * time.Second),
			MaxInFlight:    64,
		},
		Services:   []Service{},
		ServiceTLS: ServiceTLS{Mount: "service-pki", TTL: Duration(24 * time.Hour)},
		FileVaults: FileVaults{Dir: "/var/lib/edgeseal/vaults", Defaults: true, Vaults: []FileVault{}},
		Controller: Controller{Claims: map[string]string{}, Timeout: Duration(10 * time.Second)},
	}
}

// Load reads and parses the config file at path. A missing file is an error
// that errors.Is(err, os.ErrNotExist) recognises; any other is an *Error.
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
// validates the result. An empty document means all defaults. Every error is an
// *Error.
func Parse(filename string, data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, &Error{File: filename, Msg: fmt.Sprintf("file is larger than %d bytes: is this the right file?", MaxSize)}
	}
	doc, err := parseDocument(filename, data)
	if err != nil {
		return nil, err
	}
	cfg := Default()
	if !isEmpty(doc) {
		// A second decode of the same bytes: only a Decoder refuses unknown keys.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil {
			return nil, yamlError(filename, err, doc)
		}
	}
	if e := cfg.validate(); e != nil {
		e.File, e.Line = filename, lineOf(doc, e.Field)
		return nil, e
	}
	return cfg, nil
}

// parseDocument decodes data's one YAML document as nodes, which name the lines of
// fields in errors; nil if data holds none.
func parseDocument(filename string, data []byte) (*yaml.Node, error) {
	var doc, extra yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		return nil, yamlError(filename, err, nil)
	}
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		e := &Error{File: filename, Line: extra.Line, Msg: "more than one YAML document: a config file holds one (a line --- starts another)"}
		if err != nil {
			e.Line = yamlError(filename, err, nil).Line
		}
		return nil, e
	}
	return &doc, nil
}

// isEmpty is true of no document, or one that is only a null ("", "~", "---").
func isEmpty(doc *yaml.Node) bool {
	if doc == nil || len(doc.Content) == 0 {
		return true
	}
	n := doc.Content[0]
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}
