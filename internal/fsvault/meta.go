package fsvault

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fscrypt"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// The metadata file of a vault: docs/fsvault.md describes every field.
const (
	MetaFormat  = "edgeseal-fsvault"
	MetaVersion = 1
	// maxMeta bounds a metadata file: a few sealed blobs are a few KiB.
	maxMeta = 64 << 10
	// maxProtectors bounds the protectors of one vault.
	maxProtectors = 8
	// maxBlob bounds one protector's wrapped key.
	maxBlob = 16 << 10
)

// Protector types.
const (
	// ProtectorTPM2: the vault key sealed by the device's TPM (a seal package
	// tpm2 envelope), released only in an approved PCR state.
	ProtectorTPM2 = "tpm2"
	// ProtectorRecovery: the vault key encrypted to the operator's recovery
	// public key (seal.recovery_key), for `edgeseal recover`.
	ProtectorRecovery = "recovery"
	// ProtectorController: the vault key encrypted under a key the controller
	// releases (key_version is the controller key's version); cache, if set,
	// is that controller key sealed by the TPM, for an offline unlock.
	ProtectorController = "controller"
	// ProtectorTPMController: the vault key encrypted under a key derived from
	// both a secret sealed by the TPM (share) and the controller's key: the
	// TPM alone, or the controller alone, cannot unwrap it.
	ProtectorTPMController = "tpm+controller"
)

// sources are the protector types that stand for a key source, one per
// vault; the recovery protector is beside it.
var sources = map[string]string{
	ProtectorTPM2:          config.KeySourceTPM,
	ProtectorController:    config.KeySourceController,
	ProtectorTPMController: config.KeySourceTPMController,
}

// ErrCorruptMeta: a metadata file that does not parse or is out of shape.
var ErrCorruptMeta = errors.New("vault metadata is corrupt")

var (
	uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

// Meta is what the device keeps of a vault: where it is, which key the kernel
// knows it by, and that key wrapped by each protector. The key itself is never
// in it.
type Meta struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	UUID    string `json:"uuid"`
	Name    string `json:"name"`
	Path    string `json:"path"`
	// KeyIdentifier is the kernel's identifier of the vault key (hex): the
	// directory's policy names it, and an unwrapped key must hash to it.
	KeyIdentifier string      `json:"key_identifier"`
	Created       time.Time   `json:"created"`
	Changed       time.Time   `json:"changed"`
	Protectors    []Protector `json:"protectors"`
}

// Protector is the vault key wrapped by one key source.
type Protector struct {
	Type string `json:"type"`
	// KeyVersion counts the keys this protector has wrapped the vault key with
	// (tpm2: 1 at creation, one more at each change-key).
	KeyVersion int `json:"key_version,omitempty"`
	// Recipient is the fingerprint of the recovery key (recovery only).
	Recipient string `json:"recipient,omitempty"`
	Blob      []byte `json:"blob"`
	// Share is the TPM-sealed secret of a tpm+controller protector.
	Share []byte `json:"share,omitempty"`
	// Cache is the controller key of KeyVersion sealed by the TPM (a
	// controller protector of a vault with offline: true).
	Cache []byte `json:"cache,omitempty"`
}

// Identifier returns the key identifier.
func (m *Meta) Identifier() fscrypt.Identifier {
	var id fscrypt.Identifier
	b, _ := hex.DecodeString(m.KeyIdentifier)
	copy(id[:], b)
	return id
}

// Protector returns the protector of type typ, or nil.
func (m *Meta) Protector(typ string) *Protector {
	for i := range m.Protectors {
		if m.Protectors[i].Type == typ {
			return &m.Protectors[i]
		}
	}
	return nil
}

// KeyVersion is the key version of the vault's key source protector: for
// tpm, the count of change-keys; for the controller sources, the version of
// the controller key it is wrapped with.
func (m *Meta) KeyVersion() int {
	if p := m.SourceProtector(); p != nil {
		return p.KeyVersion
	}
	return 0
}

// SourceProtector is the protector of the vault's key source.
func (m *Meta) SourceProtector() *Protector {
	for i := range m.Protectors {
		if _, ok := sources[m.Protectors[i].Type]; ok {
			return &m.Protectors[i]
		}
	}
	return nil
}

// Source is the vault's key source, as the config names it.
func (m *Meta) Source() string {
	if p := m.SourceProtector(); p != nil {
		return sources[p.Type]
	}
	return ""
}

// Marshal encodes m as indented JSON ending in a newline.
func (m *Meta) Marshal() []byte {
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("internal error: cannot encode vault metadata: %v", err))
	}
	return append(out, '\n')
}

// ParseMeta decodes a metadata file strictly (unknown fields, a second value,
// an unknown version or a field out of shape are ErrCorruptMeta).
func ParseMeta(data []byte) (*Meta, error) {
	var m Meta
	if err := strictjson.Decode(data, maxMeta, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptMeta, err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptMeta, err)
	}
	return &m, nil
}

func (m *Meta) check() error {
	switch {
	case m.Format != MetaFormat:
		return fmt.Errorf("format is %q, not %q", m.Format, MetaFormat)
	case m.Version != MetaVersion:
		return fmt.Errorf("version %d: this build reads version %d", m.Version, MetaVersion)
	case !uuidRE.MatchString(m.UUID):
		return fmt.Errorf("uuid %q is not a lowercase RFC 4122 UUID", m.UUID)
	case !nameRE.MatchString(m.Name):
		return fmt.Errorf("name %q is not a vault name", m.Name)
	case !filepath.IsAbs(m.Path) || filepath.Clean(m.Path) != m.Path || m.Path == "/":
		return fmt.Errorf("path %q is not a clean absolute path", m.Path)
	case len(m.Protectors) == 0 || len(m.Protectors) > maxProtectors:
		return fmt.Errorf("%d protectors: want 1 to %d", len(m.Protectors), maxProtectors)
	}
	if b, err := hex.DecodeString(m.KeyIdentifier); err != nil || len(b) != len(fscrypt.Identifier{}) {
		return fmt.Errorf("key_identifier %q is not %d hex bytes", m.KeyIdentifier, len(fscrypt.Identifier{}))
	}
	seen := map[string]bool{}
	for i, p := range m.Protectors {
		if seen[p.Type] {
			return fmt.Errorf("protectors[%d]: a second %s protector", i, p.Type)
		}
		seen[p.Type] = true
		if len(p.Blob) == 0 || len(p.Blob) > maxBlob {
			return fmt.Errorf("protectors[%d]: blob of %d bytes: want 1 to %d", i, len(p.Blob), maxBlob)
		}
		if len(p.Share) > maxBlob || len(p.Cache) > maxBlob {
			return fmt.Errorf("protectors[%d]: share or cache of more than %d bytes", i, maxBlob)
		}
		switch p.Type {
		case ProtectorTPM2:
			if p.KeyVersion < 1 || p.Recipient != "" || p.Share != nil || p.Cache != nil {
				return fmt.Errorf("protectors[%d]: a tpm2 protector needs key_version >= 1, and no recipient, share or cache", i)
			}
		case ProtectorController:
			if p.KeyVersion < 1 || p.Recipient != "" || p.Share != nil {
				return fmt.Errorf("protectors[%d]: a controller protector needs key_version >= 1, and no recipient or share", i)
			}
		case ProtectorTPMController:
			if p.KeyVersion < 1 || p.Recipient != "" || len(p.Share) == 0 {
				return fmt.Errorf("protectors[%d]: a tpm+controller protector needs key_version >= 1, a share, and no recipient", i)
			}
		case ProtectorRecovery:
			if p.Recipient == "" || len(p.Recipient) > 128 || p.KeyVersion != 0 || p.Share != nil || p.Cache != nil {
				return fmt.Errorf("protectors[%d]: a recovery protector needs a recipient, and no key_version, share or cache", i)
			}
		default:
			return fmt.Errorf("protectors[%d]: unknown type %q (this build knows %s, %s, %s and %s)", i, p.Type,
				ProtectorTPM2, ProtectorController, ProtectorTPMController, ProtectorRecovery)
		}
	}
	n := 0
	for t := range sources {
		if seen[t] {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%d key source protectors (%s, %s or %s): want exactly one", n, ProtectorTPM2, ProtectorController, ProtectorTPMController)
	}
	return nil
}
