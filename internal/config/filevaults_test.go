package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// UUIDs of the vaults in these tests.
const (
	uuid1 = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
	uuid2 = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
	uuid3 = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
)

// vaults is a file_vaults section whose vaults are the given flow mappings, one
// a line: entry i is on line 3+i.
func vaults(entries ...string) string {
	var b strings.Builder
	b.WriteString("file_vaults:\n  vaults:\n")
	for _, e := range entries {
		b.WriteString("    - {" + e + "}\n")
	}
	return b.String()
}

// vault is a valid entry named name, with uuid and more keys (", key: value").
func vault(name, uuid, more string) string {
	return fmt.Sprintf("schema: 1, uuid: %s, name: %s%s", uuid, name, more)
}

// manyVaults is n valid entries with their own names and UUIDs.
func manyVaults(n int) []string {
	out := make([]string, n)
	for i := range n {
		out[i] = vault(fmt.Sprintf("v%d", i), fmt.Sprintf("00000000-0000-4000-8000-%012x", i+1), "")
	}
	return out
}

func TestFileVaultErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name  string
		doc   string
		line  int
		field string
		msg   string
	}{
		// file_vaults.dir
		{"dir must be absolute", "file_vaults:\n  dir: var/lib/vaults\n", 2, "file_vaults.dir", `"var/lib/vaults" must be an absolute, clean path such as /var/lib/edgeseal/vaults`},
		{"dir must be clean", "file_vaults:\n  dir: /var/lib/../vaults\n", 2, "file_vaults.dir", "absolute, clean"},
		{"dir must not be edgeseal's state", "file_vaults:\n  dir: /var/lib/edgeseal\n", 2, "file_vaults.dir", "would put edgeseal's own state in a vault"},
		{"dir must not hold edgeseal's state", "file_vaults:\n  dir: /var/lib\n", 2, "file_vaults.dir", "would put edgeseal's own state in a vault"},
		{"dir must not be in the vaults' metadata", "file_vaults:\n  dir: /var/lib/edgeseal/fsvault/v\n", 2, "file_vaults.dir", "would put edgeseal's own state in a vault"},
		{"dir must not end in a slash", "file_vaults:\n  dir: /var/lib/vaults/\n", 2, "file_vaults.dir", "absolute, clean"},
		{"dir must be set", "file_vaults:\n  dir: ''\n", 2, "file_vaults.dir", "absolute, clean"},
		{"dir is not the root", "file_vaults:\n  dir: /\n", 2, "file_vaults.dir", `"/" is the root directory`},
		{"dir is not under /run", "file_vaults:\n  dir: /run/vaults\n", 2, "file_vaults.dir", "is under /run, which is not a disk filesystem"},
		{"dir is not /dev itself", "file_vaults:\n  dir: /dev\n", 2, "file_vaults.dir", "is under /dev"},
		{"dir is not under /var/run, which is /run", "file_vaults:\n  dir: /var/run/v\n", 2, "file_vaults.dir", "is under /var/run"},

		// An entry on its own.
		{"schema is required", vaults("uuid: " + uuid1 + ", name: a"), 3, "file_vaults.vaults[0].schema", "is missing: set schema: 1 (the vault entry format this build reads)"},
		{"a newer schema is refused", vaults("schema: 2, uuid: " + uuid1 + ", name: a"), 3, "file_vaults.vaults[0].schema", "2 is newer than this build of edgeseal, which reads schema 1 only"},
		{"a negative schema is refused", vaults("schema: -1, uuid: " + uuid1 + ", name: a"), 3, "file_vaults.vaults[0].schema", "-1 is not a schema version: set schema: 1"},
		{"uuid is required", vaults("schema: 1, name: a"), 3, "file_vaults.vaults[0].uuid", "is missing: set the vault's UUID"},
		{"uuid must be a UUID", vaults(vault("a", "not-a-uuid", "")), 3, "file_vaults.vaults[0].uuid", `"not-a-uuid" is not a UUID: write it in RFC 4122 text form`},
		{"uuid needs its hyphens", vaults(vault("a", strings.ReplaceAll(uuid1, "-", ""), "")), 3, "file_vaults.vaults[0].uuid", "is not a UUID"},
		{"uuid without braces", vaults(vault("a", "'{"+uuid1+"}'", "")), 3, "file_vaults.vaults[0].uuid", "is not a UUID"},
		{"uuid groups are 8-4-4-4-12", vaults(vault("a", "3f2504e04-f89-41d3-9a0c-0305e82c3301", "")), 3, "file_vaults.vaults[0].uuid", "is not a UUID"},
		{"uuid digits are hexadecimal", vaults(vault("a", "3f2504e0-4f89-41d3-9a0c-0305e82c330g", "")), 3, "file_vaults.vaults[0].uuid", "is not a UUID"},
		{"uuid must be lower case", vaults(vault("a", strings.ToUpper(uuid1), "")), 3, "file_vaults.vaults[0].uuid", "must be written in lower case: " + uuid1},
		{"the nil uuid is refused", vaults(vault("a", "00000000-0000-0000-0000-000000000000", "")), 3, "file_vaults.vaults[0].uuid", "is the nil UUID"},
		{"name is required", vaults("schema: 1, uuid: " + uuid1), 3, "file_vaults.vaults[0].name", `"" must match [a-z0-9][a-z0-9_-]*`},
		{"name must be a name", vaults(vault("'App Data'", uuid1, "")), 3, "file_vaults.vaults[0].name", "must match"},
		{"name is at most 64 characters", vaults(vault(strings.Repeat("a", 65), uuid1, "")), 3, "file_vaults.vaults[0].name", "at most 64"},
		{"path must be absolute", vaults(vault("a", uuid1, ", path: srv/a")), 3, "file_vaults.vaults[0].path", `"srv/a" must be an absolute, clean path such as /var/lib/edgeseal/vaults/a`},
		{"path must be clean", vaults(vault("a", uuid1, ", path: /srv//a")), 3, "file_vaults.vaults[0].path", "absolute, clean"},
		{"path is not the root", vaults(vault("a", uuid1, ", path: /")), 3, "file_vaults.vaults[0].path", "root directory"},
		{"path is not under /proc", vaults(vault("a", uuid1, ", path: /proc/a")), 3, "file_vaults.vaults[0].path", "is under /proc, which is not a disk filesystem: a vault there could not be encrypted"},
		{"path is not under /sys", vaults(vault("a", uuid1, ", path: /sys/a")), 3, "file_vaults.vaults[0].path", "is under /sys"},
		{"path is not under /dev", vaults(vault("a", uuid1, ", path: /dev/shm/a")), 3, "file_vaults.vaults[0].path", "is under /dev"},
		{"path is not under /run", vaults(vault("a", uuid1, ", path: /run/a")), 3, "file_vaults.vaults[0].path", "is under /run"},
		{"policy must be known", vaults(vault("a", uuid1, ", policy: open")), 3, "file_vaults.vaults[0].policy", `"open" is not a vault policy: use unlock, lock or change-key`},
		{"attestation needs a controller key source", vaults(vault("a", uuid1, ", attestation: true")), 3, "file_vaults.vaults[0].attestation",
			"needs a controller: set key_source: controller or tpm+controller"},
		{"offline needs a controller key source", vaults(vault("a", uuid1, ", key_source: tpm, offline: true")), 3, "file_vaults.vaults[0].offline",
			"needs a controller"},
		{"key_source must be known", vaults(vault("a", uuid1, ", key_source: tpm2")), 3, "file_vaults.vaults[0].key_source", `"tpm2" is not a key source: use tpm (the default), controller or tpm+controller`},
		{"change-key is for key source tpm", vaults(vault("a", uuid1, ", policy: change-key, key_version: 2, key_source: controller")), 3, "file_vaults.vaults[0].policy",
			"change-key is for key source tpm: a controller rotates its own keys"},
		{"key_version is not negative", vaults(vault("a", uuid1, ", key_version: -1")), 3, "file_vaults.vaults[0].key_version", "-1 is negative"},
		{"change-key needs a key_version", vaults(vault("a", uuid1, ", policy: change-key")), 3, "file_vaults.vaults[0].key_version",
			"is 0 with policy change-key: set key_version to the version to rewrap to"},
		{"change-key needs a key_version above 0", vaults(vault("a", uuid1, ", policy: change-key, key_version: 0")), 3, "file_vaults.vaults[0].key_version", "set key_version"},
		{"a later entry's error names its index", vaults(vault("a", uuid1, ""), vault("b", uuid2, ", policy: x")), 4, "file_vaults.vaults[1].policy", "not a vault policy"},
		{"the line is the key's in a block mapping", "file_vaults:\n  vaults:\n    - schema: 1\n      uuid: " + uuid1 + "\n      name: a\n      policy: x\n", 6, "file_vaults.vaults[0].policy", "not a vault policy"},

		// The vaults together.
		{"a name is one vault", vaults(vault("images", uuid1, ", path: /srv/a"), vault("images", uuid2, ", path: /srv/b")), 4, "file_vaults.vaults[1].name",
			`"images" is already the name of file_vaults.vaults[0]`},
		{"a name is one vault, defaults off", "file_vaults:\n  defaults: false\n  vaults:\n    - {" + vault("a", uuid1, "") + "}\n    - {" + vault("b", uuid2, "") + "}\n    - {" + vault("a", uuid3, ", path: /srv/a") + "}\n",
			6, "file_vaults.vaults[2].name", `"a" is already the name of file_vaults.vaults[0]`},
		{"a UUID is one vault", vaults(vault("a", uuid1, ""), vault("b", uuid1, "")), 4, "file_vaults.vaults[1].uuid", `"` + uuid1 + `" is already the UUID of file_vaults.vaults[0]`},
		{"a path is one vault", vaults(vault("a", uuid1, ", path: /srv/x"), vault("b", uuid2, ", path: /srv/x")), 4, "file_vaults.vaults[1].path",
			`"/srv/x" is already the path of file_vaults.vaults[0]: a directory is one vault`},
		{"a default path is one vault", vaults(vault("a", uuid1, ", path: /var/lib/edgeseal/vaults/b"), vault("b", uuid2, "")), 4, "file_vaults.vaults[1].path",
			`"/var/lib/edgeseal/vaults/b" (file_vaults.dir/name: path is not set) is already the path of file_vaults.vaults[0]`},
		{"a default vault's path is its own", vaults(vault("data", uuid1, ", path: /var/lib/edgeseal/vaults/images")), 3, "file_vaults.vaults[0].path",
			`"/var/lib/edgeseal/vaults/images" is already the path of the default vault images at /var/lib/edgeseal/vaults/images: give this vault another path, name it images`},
		{"a default vault's path in another dir is its own", "file_vaults:\n  dir: /srv/v\n  vaults:\n    - {" + vault("data", uuid1, ", path: /srv/v/config") + "}\n", 4, "file_vaults.vaults[0].path",
			"the default vault config at /srv/v/config"},
		{"a vault is not inside another", vaults(vault("a", uuid1, ", path: /srv/a"), vault("b", uuid2, ", path: /srv/a/b")), 4, "file_vaults.vaults[1].path",
			`"/srv/a/b" is inside file_vaults.vaults[0] at /srv/a: vaults cannot nest`},
		{"a vault holds no other", vaults(vault("a", uuid1, ", path: /srv/a/b"), vault("b", uuid2, ", path: /srv/a")), 4, "file_vaults.vaults[1].path",
			`"/srv/a" holds file_vaults.vaults[0] at /srv/a/b: vaults cannot nest`},
		{"a vault is not inside a default one", vaults(vault("a", uuid1, ", path: /var/lib/edgeseal/vaults/images/a")), 3, "file_vaults.vaults[0].path",
			"is inside the default vault images at /var/lib/edgeseal/vaults/images: vaults cannot nest"},
		{"a vault holds no default one", "file_vaults:\n  dir: /srv/vaults\n  vaults:\n    - {" + vault("a", uuid1, ", path: /srv") + "}\n", 4, "file_vaults.vaults[0].path",
			`"/srv" holds the default vault config at /srv/vaults/config`},
		{"a vault holds not edgeseal's state", vaults(vault("a", uuid1, ", path: /var/lib/edgeseal")), 3, "file_vaults.vaults[0].path",
			`"/var/lib/edgeseal" would put edgeseal's own state in a vault`},
		{"a vault without path is not inside another", "file_vaults:\n  dir: /srv/v/w\n  defaults: false\n  vaults:\n    - {" + vault("a", uuid1, ", path: /srv/v") + "}\n    - {" + vault("b", uuid2, "") + "}\n",
			6, "file_vaults.vaults[1].path", `"/srv/v/w/b" (file_vaults.dir/name: path is not set) is inside file_vaults.vaults[0] at /srv/v`},

		// The bound.
		{"more than 256 vaults are refused", "file_vaults:\n  defaults: false\n  vaults:\n" + strings.TrimPrefix(vaults(manyVaults(MaxFileVaults+1)...), "file_vaults:\n  vaults:\n"),
			3, "file_vaults.vaults", "257 vaults: at most 256"},
		{"the default vaults count toward the bound", vaults(manyVaults(MaxFileVaults - 1)...), 2, "file_vaults.vaults",
			"255 vaults and 2 default ones: at most 256 in all (file_vaults.defaults: false leaves out the default ones)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/etc/edgeseal/edgeseal.yaml", []byte(tc.doc))
			checkError(t, err, tc.line, tc.field, tc.msg)
		})
	}
}

func TestValidFileVaultsAreAccepted(t *testing.T) {
	cases := []struct{ name, doc string }{
		{"no vaults but the defaults", "file_vaults:\n  vaults: []\n"},
		{"no vaults at all", "file_vaults:\n  defaults: false\n"},
		{"every field set", vaults(vault("app-data", uuid1, ", path: /srv/app-data, policy: unlock, key_source: tpm, key_version: 0"))},
		{"a controller key", vaults(vault("app-data", uuid1, ", key_source: controller"))},
		{"tpm and controller, with attestation, offline", vaults(vault("app-data", uuid1, ", key_source: tpm+controller, attestation: true, offline: true"))},
		{"a locked vault", vaults(vault("a", uuid1, ", policy: lock"))},
		{"a key change", vaults(vault("a", uuid1, ", policy: change-key, key_version: 3"))},
		{"a key version kept with another policy", vaults(vault("a", uuid1, ", key_version: 2"))},
		{"a default vault given a policy", vaults(vault("images", uuid1, ", policy: lock"))},
		{"a default vault moved", vaults(vault("config", uuid1, ", path: /srv/config"))},
		{"a default vault's path taken once the default is off", "file_vaults:\n  defaults: false\n  vaults:\n    - {" + vault("data", uuid1, ", path: /var/lib/edgeseal/vaults/images") + "}\n"},
		{"another dir for the defaults", "file_vaults:\n  dir: /srv/vaults\n  vaults:\n    - {" + vault("a", uuid1, "") + "}\n"},
		{"a vault at dir when nothing else is there", "file_vaults:\n  dir: /srv/v\n  defaults: false\n  vaults:\n    - {" + vault("a", uuid1, ", path: /srv/v") + "}\n"},
		{"sibling paths sharing a prefix do not nest", vaults(vault("a", uuid1, ", path: /srv/a"), vault("b", uuid2, ", path: /srv/ab"))},
		{"a directory whose name starts like /run is on disk", vaults(vault("a", uuid1, ", path: /runner/a"), vault("b", uuid2, ", path: /devices/b"))},
		{"names of every allowed character", vaults(vault("0a_b-c", uuid1, ""), vault(strings.Repeat("z", 64), uuid2, ""))},
		{"256 vaults", "file_vaults:\n  defaults: false\n  vaults:\n" + strings.TrimPrefix(vaults(manyVaults(MaxFileVaults)...), "file_vaults:\n  vaults:\n")},
		{"254 vaults and the defaults", vaults(manyVaults(MaxFileVaults - 2)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse("e.yaml", []byte(tc.doc)); err != nil {
				t.Error(err)
			}
		})
	}
}

// The commented example of the sample, uncommented, is a valid config.
func TestSampleFileVaultExampleIsValid(t *testing.T) {
	sample := string(Sample)
	start := strings.Index(sample, "  # vaults:\n")
	end := strings.Index(sample, "  vaults: []\n")
	if start < 0 || end < start {
		t.Fatal("the sample lacks the commented file vault example")
	}
	doc := "file_vaults:\n" + strings.ReplaceAll(sample[start:end], "  # ", "  ")
	cfg, err := Parse("example.yaml", []byte(doc))
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	want := []FileVault{{Schema: 1, UUID: "3f2504e0-4f89-41d3-9a0c-0305e82c3301", Name: "app-data", Path: "/srv/app-data", Policy: VaultUnlock, KeySource: KeySourceTPM}}
	if !reflect.DeepEqual(cfg.FileVaults.Vaults, want) {
		t.Errorf("example vaults = %+v\nwant %+v", cfg.FileVaults.Vaults, want)
	}
	for _, words := range []string{"edgeseal vault apply", "edgeseal vault list", "edgeseal-fsvault@NAME.service", "edgeseal vault delete NAME --purge",
		"schema", "uuid", "name", "path", "policy", "key_source", "attestation", "offline", "key_version"} {
		if !strings.Contains(sample[strings.Index(sample, "# File vaults"):], words) {
			t.Errorf("the sample's file_vaults section does not mention %q", words)
		}
	}
}

func TestEffectiveFileVaults(t *testing.T) {
	const dir = "/var/lib/edgeseal/vaults"
	deflt := func(name string) FileVault {
		return FileVault{Schema: 1, Name: name, Path: dir + "/" + name, Policy: VaultUnlock, KeySource: KeySourceTPM}
	}
	cases := []struct {
		name string
		in   FileVaults
		want []FileVault
	}{
		{"the defaults are added, in order", FileVaults{Dir: dir, Defaults: true}, []FileVault{deflt("config"), deflt("images")}},
		{"no defaults, no vaults", FileVaults{Dir: dir}, nil},
		{"an entry's unset fields are filled", FileVaults{Dir: dir, Vaults: []FileVault{{Schema: 1, UUID: uuid1, Name: "a"}}},
			[]FileVault{{Schema: 1, UUID: uuid1, Name: "a", Path: dir + "/a", Policy: VaultUnlock, KeySource: KeySourceTPM}}},
		{"an entry's set fields are kept", FileVaults{Dir: dir, Vaults: []FileVault{{Schema: 1, UUID: uuid1, Name: "a", Path: "/srv/a", Policy: VaultChangeKey, KeySource: KeySourceTPM, KeyVersion: 2}}},
			[]FileVault{{Schema: 1, UUID: uuid1, Name: "a", Path: "/srv/a", Policy: VaultChangeKey, KeySource: KeySourceTPM, KeyVersion: 2}}},
		{"the defaults come before the entries", FileVaults{Dir: dir, Defaults: true, Vaults: []FileVault{{Schema: 1, UUID: uuid1, Name: "a"}}},
			[]FileVault{deflt("config"), deflt("images"), {Schema: 1, UUID: uuid1, Name: "a", Path: dir + "/a", Policy: VaultUnlock, KeySource: KeySourceTPM}}},
		{"an entry of a default's name replaces it", FileVaults{Dir: dir, Defaults: true, Vaults: []FileVault{{Schema: 1, UUID: uuid1, Name: "images", Policy: VaultLock}}},
			[]FileVault{deflt("config"), {Schema: 1, UUID: uuid1, Name: "images", Path: dir + "/images", Policy: VaultLock, KeySource: KeySourceTPM}}},
		{"entries of both defaults' names replace them", FileVaults{Dir: dir, Defaults: true, Vaults: []FileVault{{Schema: 1, UUID: uuid2, Name: "config", Path: "/srv/c"}, {Schema: 1, UUID: uuid1, Name: "images"}}},
			[]FileVault{{Schema: 1, UUID: uuid2, Name: "config", Path: "/srv/c", Policy: VaultUnlock, KeySource: KeySourceTPM},
				{Schema: 1, UUID: uuid1, Name: "images", Path: dir + "/images", Policy: VaultUnlock, KeySource: KeySourceTPM}}},
		{"defaults false keeps only the entries", FileVaults{Dir: dir, Vaults: []FileVault{{Schema: 1, UUID: uuid1, Name: "a"}}},
			[]FileVault{{Schema: 1, UUID: uuid1, Name: "a", Path: dir + "/a", Policy: VaultUnlock, KeySource: KeySourceTPM}}},
		{"the defaults go in dir", FileVaults{Dir: "/srv/v", Defaults: true},
			[]FileVault{{Schema: 1, Name: "config", Path: "/srv/v/config", Policy: VaultUnlock, KeySource: KeySourceTPM}, {Schema: 1, Name: "images", Path: "/srv/v/images", Policy: VaultUnlock, KeySource: KeySourceTPM}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.in.Vaults)
			got := tc.in.Effective()
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Effective() =\n%+v\nwant\n%+v", got, tc.want)
			}
			if !reflect.DeepEqual(tc.in.Vaults, before) {
				t.Errorf("Effective changed its receiver's vaults: %+v", tc.in.Vaults)
			}
		})
	}
	if got := Default().FileVaults.Effective(); !reflect.DeepEqual(got, []FileVault{deflt("config"), deflt("images")}) {
		t.Errorf("the default config keeps %+v", got)
	}
}

func TestAFileVaultsSectionIsReadAndWrittenBack(t *testing.T) {
	doc := "file_vaults:\n  dir: /srv/vaults\n  defaults: false\n  vaults:\n" +
		"    - schema: 1\n      uuid: " + uuid1 + "\n      name: app-data\n      path: /srv/app-data\n      policy: change-key\n      key_source: tpm\n      key_version: 2\n" +
		"    - {schema: 1, uuid: " + uuid2 + ", name: logs}\n"
	cfg, err := Parse("e.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.FileVaults = FileVaults{Dir: "/srv/vaults", Vaults: []FileVault{
		{Schema: 1, UUID: uuid1, Name: "app-data", Path: "/srv/app-data", Policy: VaultChangeKey, KeySource: KeySourceTPM, KeyVersion: 2},
		{Schema: 1, UUID: uuid2, Name: "logs"},
	}}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v\nwant %+v", cfg.FileVaults, want.FileVaults)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("m.yaml", out)
	if err != nil || !reflect.DeepEqual(back, cfg) {
		t.Errorf("%s\nparsed as %+v (%v)", out, back.FileVaults, err)
	}
}

func TestAFileVaultsKeyOverridesOnlyItself(t *testing.T) {
	cfg, err := Parse("e.yaml", []byte("file_vaults:\n  defaults: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.FileVaults.Defaults = false
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v\nwant %+v", cfg.FileVaults, want.FileVaults)
	}
}
