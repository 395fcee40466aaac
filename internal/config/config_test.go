package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestSampleIsTheDefault(t *testing.T) {
	cfg, err := Parse("edgeseal.yaml", Sample)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("the sample differs from Default():\n%+v\n%+v", cfg, Default())
	}
}

// Every field of Config is written in the sample with a comment above it, so
// that a field added to the types cannot go undocumented.
func TestSampleDocumentsEveryField(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal(Sample, &doc); err != nil {
		t.Fatal(err)
	}
	keys := map[string]*yaml.Node{}
	for _, k := range documentEntries(&doc) {
		if k.key != nil {
			keys[k.path] = k.key
		}
	}
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, prefix string) {
		for f := range typ.Fields() {
			path := prefix + strings.Split(f.Tag.Get("yaml"), ",")[0]
			key, ok := keys[path]
			switch {
			case !ok:
				t.Errorf("%s is not in the sample", path)
			case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]():
				walk(f.Type, path+".")
			case key.HeadComment == "":
				t.Errorf("%s has no comment in the sample", path)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	for _, example := range []string{"# services:", "#   - name: app-one", "#     shared_read: [telemetry]"} {
		if !strings.Contains(string(Sample), example) {
			t.Errorf("the sample lacks the commented example %q", example)
		}
	}
}

func TestEmptyFileMeansDefaults(t *testing.T) {
	for _, doc := range []string{"", "\n", "# only a comment\n", "---\n", "~\n", "--- # a comment\n...\n"} {
		cfg, err := Parse("e.yaml", []byte(doc))
		if err != nil || !reflect.DeepEqual(cfg, Default()) {
			t.Errorf("%q: %v", doc, err)
		}
	}
}

func TestAGivenFieldOverridesOnlyItself(t *testing.T) {
	cfg, err := Parse("e.yaml", []byte("vault:\n  kv_version: 1\nservices:\n  - name: app-one\n    shared_read: [telemetry]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Vault.KVVersion = 1
	want.Services = []Service{{Name: "app-one", SharedRead: []string{"telemetry"}}}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("a good file is parsed", func(t *testing.T) {
		cfg, err := Load(write("good.yaml", []byte("vault:\n  mount: kv\n")))
		if err != nil || cfg.Vault.Mount != "kv" {
			t.Errorf("cfg = %+v, err = %v", cfg, err)
		}
	})
	t.Run("a missing file is os.ErrNotExist and names the path", func(t *testing.T) {
		p := filepath.Join(dir, "absent.yaml")
		_, err := Load(p)
		if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "cannot read config "+p+": ") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("a bad file is an *Error naming the path", func(t *testing.T) {
		p := write("bad.yaml", []byte("vault:\n  kv_version: 3\n"))
		_, err := Load(p)
		if e, ok := errors.AsType[*Error](err); !ok || e.File != p || e.Line != 2 {
			t.Errorf("err = %#v", err)
		}
	})
	t.Run("an oversize file is refused", func(t *testing.T) {
		_, err := Load(write("big.yaml", make([]byte, 2*MaxSize)))
		if e, ok := errors.AsType[*Error](err); !ok || !strings.Contains(e.Msg, "larger than") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestVaultAddr(t *testing.T) {
	cases := []struct{ name, listen, want string }{
		{"an IPv4 address is used as is", "127.0.0.1:8200", "https://127.0.0.1:8200"},
		{"another IPv4 address is used as is", "10.1.2.3:443", "https://10.1.2.3:443"},
		{"0.0.0.0 becomes loopback", "0.0.0.0:8300", "https://127.0.0.1:8300"},
		{"an IPv6 address is bracketed", "[::1]:8200", "https://[::1]:8200"},
		{"the IPv6 unspecified address becomes loopback", "[::]:8200", "https://127.0.0.1:8200"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Vault.Listen = tc.listen
			if got := c.VaultAddr(); got != tc.want {
				t.Errorf("VaultAddr() = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDurationIsWrittenAsItIsRead(t *testing.T) {
	for d, want := range map[time.Duration]string{
		250 * time.Millisecond:  "250ms",
		10 * time.Second:        "10s",
		15 * time.Minute:        "15m",
		8760 * time.Hour:        "8760h",
		90 * time.Minute:        "1h30m",
		time.Hour + time.Second: "1h0m1s",
	} {
		out, err := yaml.Marshal(Duration(d))
		if got := strings.TrimSpace(string(out)); err != nil || got != want {
			t.Errorf("%v: marshalled as %q (%v), want %q", d, got, err, want)
		}
		var back Duration
		if err := yaml.Unmarshal(out, &back); err != nil || back.D() != d {
			t.Errorf("%v: read back as %v (%v)", d, back.D(), err)
		}
	}
}

func TestAMarshalledConfigParsesToItself(t *testing.T) {
	c := Default()
	c.Seal.Method = "ikm-hook"
	c.Services = []Service{{Name: "app-one", SharedRead: []string{"telemetry"}, SharedWrite: []string{}, Units: []string{"app-one.service"}, SnapApps: []string{}, UIDs: []uint32{1001}, GIDs: []uint32{}, ExeSHA256: []string{}, UnitFiles: []string{}, SnapRevisions: []string{}, SnapPublishers: []string{}}}
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("m.yaml", out)
	if err != nil || !reflect.DeepEqual(back, c) {
		t.Errorf("%s\nparsed as %+v (%v)", out, back, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Sample)
	for _, seed := range []string{
		"vault:\n  kv_version: 3\n",
		"services:\n  - name: a\n    shared_read: [g]\n  - name: b\n    policy: x\n",
		"vault: {watch_interval: [1]}\n",
		"vault: &a {mount: x}\npki: *a\n",
		"seal: {method: none, allow_insecure_none: true}\n---\n",
		"pki:\n  extra_names: [a.b, '::1', a.b]\n",
		"file_vaults:\n  dir: /srv/v\n  vaults:\n    - {schema: 1, uuid: 3f2504e0-4f89-41d3-9a0c-0305e82c3301, name: a, path: /srv/a, policy: change-key, key_source: tpm, key_version: 2}\n" +
			"    - {schema: 1, uuid: 9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d, name: images, policy: lock}\n",
		"file_vaults:\n  defaults: false\n  vaults:\n    - schema: 1\n      uuid: 3f2504e0-4f89-41d3-9a0c-0305e82c3301\n      name: a\n      path: /srv/a/b\n" +
			"    - {schema: 1, uuid: 3F2504E0-4f89-41d3-9a0c-0305e82c3301, name: b, path: /srv/a}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		if err == nil {
			// What was accepted is valid, and stays so written out and read again.
			out, err := yaml.Marshal(cfg)
			if err != nil {
				t.Fatalf("cannot marshal an accepted config: %v", err)
			}
			if _, err := Parse("again.yaml", out); err != nil {
				t.Fatalf("an accepted config, written out, is refused: %v\n%s", err, out)
			}
			return
		}
		e, ok := errors.AsType[*Error](err)
		if !ok {
			t.Fatalf("error is %T, not *Error: %v", err, err)
		}
		if e.File != "f.yaml" || e.Msg == "" || e.Line < 0 || e.Line > maxLine(data) {
			t.Fatalf("bad error %#v for %q", e, data)
		}
	})
}

// maxLine bounds the line numbers of data, counting every line break YAML knows.
func maxLine(data []byte) int {
	n := 1
	for _, brk := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		n += strings.Count(string(data), brk)
	}
	return n
}

func TestSnapRevisionPinsParseAsSnapdWritesThem(t *testing.T) {
	// An unquoted revision is a YAML integer: it is read as the string snapd
	// writes.
	cfg, err := Parse("e.yaml", []byte("services:\n  - name: a\n    snap_apps: [ab.d]\n    snap_revisions: [42, x1]\n    snap_publishers: [canonical]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Services[0]; !slices.Equal(s.SnapRevisions, []string{"42", "x1"}) || !slices.Equal(s.SnapPublishers, []string{"canonical"}) {
		t.Errorf("snap_revisions %q, snap_publishers %q", s.SnapRevisions, s.SnapPublishers)
	}
}
