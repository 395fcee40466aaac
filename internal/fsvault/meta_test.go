package fsvault

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The version 1 metadata of docs/fsvault.md keeps parsing, field for field,
// and encodes back byte for byte.
func TestVersion1MetadataKeepsParsing(t *testing.T) {
	data, err := os.ReadFile("testdata/meta-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "images" || m.UUID != "0f9c4a3e-2b7d-4e1a-9c55-3d2f8e6a1b70" || m.KeyVersion() != 2 ||
		m.Protector(ProtectorRecovery).Recipient != "sha256:3f2a" || !m.Changed.Equal(time.Date(2026, 11, 30, 21, 0, 0, 0, time.UTC)) ||
		m.Identifier().String() != m.KeyIdentifier {
		t.Errorf("parsed %+v", m)
	}
	if out := m.Marshal(); !bytes.Equal(out, data) {
		t.Errorf("encodes back as\n%s\nnot\n%s", out, data)
	}
}

// A tpm+controller vault's metadata (its share, and the offline copy of the
// controller's key) keeps parsing, and encodes back byte for byte.
func TestVersion1TPMAndControllerMetadataKeepsParsing(t *testing.T) {
	data, err := os.ReadFile("testdata/meta-v1-tpm-controller.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	p := m.SourceProtector()
	if m.Source() != "tpm+controller" || m.KeyVersion() != 3 || p == nil || len(p.Share) == 0 || len(p.Cache) == 0 || m.Protector(ProtectorTPM2) != nil {
		t.Errorf("parsed %+v", m)
	}
	if out := m.Marshal(); !bytes.Equal(out, data) {
		t.Errorf("encodes back as\n%s\nnot\n%s", out, data)
	}
}

// Metadata out of shape is ErrCorruptMeta, saying what is wrong.
func TestMetadataOutOfShapeIsCorrupt(t *testing.T) {
	good, _ := os.ReadFile("testdata/meta-v1.json")
	edit := func(from, to string) []byte { return bytes.Replace(good, []byte(from), []byte(to), 1) }
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no JSON value"},
		{"another format", edit(`"edgeseal-fsvault"`, `"fscrypt"`), `format is "fscrypt"`},
		{"a newer version", edit(`"version": 1`, `"version": 2`), "version 2: this build reads version 1"},
		{"an unknown field", edit(`"name"`, `"colour": 1, "name"`), "unknown field"},
		{"two values", append(bytes.Clone(good), good...), "data after the JSON value"},
		{"an upper-case uuid", edit("0f9c4a3e", "0F9C4A3E"), "not a lowercase RFC 4122 UUID"},
		{"a bad name", edit(`"images"`, `"../x"`), "not a vault name"},
		{"a relative path", edit(`"/var/lib/edgeseal/vaults/images"`, `"vaults/images"`), "not a clean absolute path"},
		{"an unclean path", edit(`"/var/lib/edgeseal/vaults/images"`, `"/var/lib/../images"`), "not a clean absolute path"},
		{"a short identifier", edit("5f1e0c3a9b7d2e4f6a8c0b1d3e5f7a9c", "5f1e"), "key_identifier"},
		{"no protector", reshape(good, func(m *Meta) { m.Protectors = nil }), "0 protectors"},
		{"an unknown protector", edit(`"type": "recovery"`, `"type": "usb"`), `unknown type "usb"`},
		{"two tpm2 protectors", edit(`"type": "recovery",
      "recipient": "sha256:3f2a"`, `"type": "tpm2", "key_version": 1`), "a second tpm2 protector"},
		{"no key source protector", reshape(good, func(m *Meta) { m.Protectors = m.Protectors[1:] }), "0 key source protectors"},
		{"two key source protectors", reshape(good, func(m *Meta) {
			m.Protectors = append(m.Protectors, Protector{Type: ProtectorController, KeyVersion: 1, Blob: []byte{1}})
		}), "2 key source protectors"},
		{"a tpm+controller protector without its share", reshape(good, func(m *Meta) {
			m.Protectors[0] = Protector{Type: ProtectorTPMController, KeyVersion: 1, Blob: []byte{1}}
		}), "needs key_version >= 1, a share"},
		{"a controller protector with a share", reshape(good, func(m *Meta) {
			m.Protectors[0] = Protector{Type: ProtectorController, KeyVersion: 1, Blob: []byte{1}, Share: []byte{1}}
		}), "no recipient or share"},
		{"a tpm2 protector with a cache", reshape(good, func(m *Meta) { m.Protectors[0].Cache = []byte{1} }), "no recipient, share or cache"},
		{"key version 0", edit(`"key_version": 2`, `"key_version": 0`), "needs key_version >= 1"},
		{"an empty blob", edit(`"eyJ2ZXJzaW9uIjoxfQo="`, `""`), "blob of 0 bytes"},
		{"too big", append(bytes.Repeat([]byte(" "), maxMeta), good...), "more than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseMeta(tc.data)
			if !errors.Is(err, ErrCorruptMeta) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseMeta: %v; want ErrCorruptMeta with %q", err, tc.want)
			}
		})
	}
}

// reshape parses good, changes it with fn, and encodes it again (past the
// checks ParseMeta makes, which is what the test is for).
func reshape(good []byte, fn func(*Meta)) []byte {
	var m Meta
	if err := json.Unmarshal(good, &m); err != nil {
		panic(err)
	}
	fn(&m)
	return m.Marshal()
}

func FuzzParseMeta(f *testing.F) {
	good, _ := os.ReadFile("testdata/meta-v1.json")
	f.Add(good)
	both, _ := os.ReadFile("testdata/meta-v1-tpm-controller.json")
	f.Add(both)
	f.Add([]byte(`{"format":"edgeseal-fsvault","version":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMeta(data)
		if err != nil {
			if !errors.Is(err, ErrCorruptMeta) {
				t.Fatalf("an error that is not ErrCorruptMeta: %v", err)
			}
			return
		}
		// What parses encodes to what parses the same.
		again, err := ParseMeta(m.Marshal())
		if err != nil || again.Name != m.Name || again.KeyIdentifier != m.KeyIdentifier || len(again.Protectors) != len(m.Protectors) {
			t.Fatalf("round trip: %+v, %v", again, err)
		}
	})
}

// How a person reads each state.
func TestStatesReadAsAPersonWouldSayThem(t *testing.T) {
	cases := []struct {
		s    Status
		want string
	}{
		{Status{State: StateUnlocked}, "unlocked"},
		{Status{State: StateLockPending, Holders: []string{"pid 12 (app)"}}, "lock pending: files busy (pid 12 (app))"},
		{Status{State: StateLockPending, Orphaned: true}, "orphaned, lock pending: files busy"},
		{Status{State: StateOrphaned, Orphaned: true}, "orphaned (locked; delete with --purge to erase)"},
		{Status{State: StateError, Reason: "PCR 7 differs"}, "error: PCR 7 differs"},
	}
	for _, tc := range cases {
		if got := tc.s.Describe(); got != tc.want {
			t.Errorf("%+v reads %q; want %q", tc.s, got, tc.want)
		}
	}
}

// A holder is a process with a path in the vault, not one beside it.
func TestAHolderIsAPathInTheVault(t *testing.T) {
	dir := "/var/lib/edgeseal/vaults/images"
	for path, want := range map[string]bool{
		dir:                             true,
		dir + "/state.db":               true,
		dir + "/old.db (deleted)":       true,
		dir + "2/state.db":              false,
		"/var/lib/edgeseal/vaults":      false,
		"/var/lib/edgeseal/vaults/imag": false,
	} {
		if got := within(path, dir); got != want {
			t.Errorf("within(%q) = %v", path, got)
		}
	}
	maps := t.TempDir() + "/maps"
	os.WriteFile(maps, []byte("7f00-7f01 r--p 00000000 08:01 12 /usr/lib/libc.so\n"+
		"7f02-7f03 r--s 00000000 07:00 99                         "+dir+"/cache.mmap\n"), 0o644)
	if !mapsFileUnder(maps, dir) || mapsFileUnder(maps, "/srv") {
		t.Error("a mapped file of the vault is not found in maps, or one outside is")
	}
}

// A sandboxed unit holds a vault by a mount of the vault's filesystem whose
// root is the vault or below it; a mount of the whole filesystem does not.
func TestAMountOfTheVaultInAnotherNamespaceHoldsIt(t *testing.T) {
	mountinfo := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(mountinfo, []byte(
		"36 35 98:0 / /var/lib/edgeseal/vaults rw,noatime master:1 - ext4 /dev/loop0 rw\n"+
			"37 35 98:0 /images /var/lib/edgeseal/vaults/images rw - ext4 /dev/loop0 rw\n"+
			"38 35 98:0 /other\\040dir /srv rw - ext4 /dev/loop0 rw\n"), 0o644)
	cases := []struct {
		ref  mountRef
		want bool
	}{
		{mountRef{"98:0", "/images"}, true},
		{mountRef{"98:0", "/other dir"}, true},
		{mountRef{"98:0", "/config"}, false},
		{mountRef{"98:1", "/images"}, false},
	}
	for _, tc := range cases {
		if got := mountsUnder(mountinfo, tc.ref); got != tc.want {
			t.Errorf("mountsUnder(%+v) = %v", tc.ref, got)
		}
	}
	for in, want := range map[string]string{`a\040b`: "a b", `tab\011`: "tab\t", `back\134slash`: `back\slash`, `odd\09`: `odd\09`, `end\04`: `end\04`} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q; want %q", in, got, want)
		}
	}
	// This test's own directory: on its filesystem, at a path ending in its name.
	dir := t.TempDir()
	if ref, ok := refOf(dir); !ok || !strings.HasSuffix(ref.path, filepath.Base(dir)) || !strings.Contains(ref.dev, ":") {
		t.Errorf("refOf(%s) = %+v, %v", dir, ref, ok)
	}
}
