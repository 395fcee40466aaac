package snapconf

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
)

func TestNoOptionsGiveTheSnapDefaults(t *testing.T) {
	cfg, data, err := Parse("edgeseal", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Vault.StoragePath, "/var/snap/edgeseal/current/vault/data"; got != want {
		t.Errorf("storage path %q, want %q", got, want)
	}
	if cfg.Tokens.TokendUser != "root" {
		t.Errorf("tokend user %q, want root", cfg.Tokens.TokendUser)
	}
	if got, want := cfg.FileVaults.Dir, "/var/snap/edgeseal/common/vaults"; got != want {
		t.Errorf("file vaults dir %q, want %q", got, want)
	}
	// The file it writes is a config the daemons load to the same values.
	again, err := config.Parse("written", data)
	if err != nil {
		t.Fatalf("the written config does not load: %v\n%s", err, data)
	}
	if again.Vault.StoragePath != cfg.Vault.StoragePath || again.Seal.Method != "tpm2" {
		t.Errorf("the written config differs: %+v", again)
	}
}

func TestOptionsWithDashesSetTheYAMLKeys(t *testing.T) {
	doc := `{"vault":{"listen":"127.0.0.1:8300","kv-version":1},
		"seal":{"tpm2":{"device":"swtpm:127.0.0.1:2321","pcrs":[7,11],"pin-file":""}},
		"tokens":{"service-period":"2h"},
		"services":[{"name":"consumer","snap-apps":["consumer.fetch"],"wrap":true}]}`
	cfg, _, err := Parse("edgeseal", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Vault.Listen != "127.0.0.1:8300" || cfg.Vault.KVVersion != 1 {
		t.Errorf("vault: %+v", cfg.Vault)
	}
	if cfg.Seal.TPM2.Device != "swtpm:127.0.0.1:2321" || len(cfg.Seal.TPM2.PCRs) != 2 {
		t.Errorf("tpm2: %+v", cfg.Seal.TPM2)
	}
	if cfg.Tokens.ServicePeriod.String() != "2h" {
		t.Errorf("service period %v", cfg.Tokens.ServicePeriod)
	}
	if len(cfg.Services) != 1 || cfg.Services[0].SnapApps[0] != "consumer.fetch" || !cfg.Services[0].Wrap {
		t.Errorf("services: %+v", cfg.Services)
	}
	// Options not set keep the snap's defaults.
	if cfg.Vault.StoragePath != "/var/snap/edgeseal/current/vault/data" || cfg.Vault.Mount != "secret" {
		t.Errorf("defaults lost: %+v", cfg.Vault)
	}
}

func TestABadOptionIsRefusedByItsSnapName(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"an out-of-range value", `{"vault":{"kv-version":3}}`, "vault.kv-version"},
		{"an unknown option", `{"vault":{"colour":"red"}}`, "vault.colour"},
		{"a bad duration", `{"tokens":{"wrap-ttl":"soon"}}`, "tokens.wrap-ttl"},
		{"a bad service", `{"services":[{"name":"Bad Name"}]}`, "services[0].name"},
		{"a section that is not a map", `{"vault":5}`, "vault"},
		{"a user that is not a name", `{"tokens":{"tokend-user":"Root User"}}`, "tokens.tokend-user"},
		{"a file vault's key source", `{"file-vaults":{"vaults":[{"schema":1,"uuid":"` + uuid + `","name":"a","key-source":"hsm"}]}}`,
			"file-vaults.vaults[0].key-source: \"hsm\" is not a key source: use tpm (the default), controller or tpm+controller"},
		{"a controller claim edgeseal fills in", `{"controller":{"claims":{"location":"x"}}}`, "controller.claims.location: is filled in by edgeseal"},
		{"a file vault's key version", `{"file-vaults":{"vaults":[{"schema":1,"uuid":"` + uuid + `","name":"a","policy":"change-key"}]}}`,
			"file-vaults.vaults[0].key-version: is 0 with policy change-key: set key-version"},
		{"a file vault's schema", `{"file-vaults":{"vaults":[{"uuid":"` + uuid + `","name":"a"}]}}`, "file-vaults.vaults[0].schema: is missing: set schema: 1"},
		{"a file vaults dir", `{"file-vaults":{"dir":"/run/v"}}`, "file-vaults.dir"},
		{"a file vault option misspelt", `{"file-vaults":{"vaults":[{"schema":1,"uuid":"` + uuid + `","name":"a","key-src":"tpm"}]}}`, "unknown key"},
		{"not JSON", `{"vault":`, "cannot decode"},
		{"the pkcs11 sealer, which the snap does not ship", `{"seal":{"method":"pkcs11","pkcs11":{"module":"/usr/lib/p11.so","token-label":"dev"}}}`,
			"seal.method: pkcs11 is not available in the snap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse("edgeseal", []byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
			if name, _, _ := strings.Cut(err.Error(), ":"); strings.Contains(name, "_") {
				t.Errorf("error %q names a YAML key, not a snap option", err)
			}
		})
	}
}

func TestEveryUnderscoreKeyOfTheConfigIsRenamedInMessages(t *testing.T) {
	for _, k := range []string{"tokend_user", "storage_path", "max_in_flight", "snap_apps", "allow_insecure_none", "pin_file", "file_vaults", "key_source", "key_version"} {
		if !slices.Contains(underscoreKeys, k) {
			t.Errorf("%s is not among the keys renamed in messages: %v", k, underscoreKeys)
		}
	}
}

// The configure hook asks snapctl for Sections only: a section missing from it
// could never be set.
func TestSectionsAreTheConfigsTopLevelKeys(t *testing.T) {
	var want []string
	for f := range reflect.TypeFor[config.Config]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		want = append(want, Option(name))
	}
	if !reflect.DeepEqual(Sections, want) {
		t.Errorf("Sections = %q, want %q", Sections, want)
	}
}

// A uuid of a file vault in these tests.
const uuid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

func TestFileVaultOptionsSetTheYAMLKeys(t *testing.T) {
	doc := `{"file-vaults":{"defaults":false,"vaults":[
		{"schema":1,"uuid":"` + uuid + `","name":"app-data","path":"/var/snap/edgeseal/common/app-data","policy":"change-key","key-source":"tpm","key-version":2},
		{"schema":1,"uuid":"9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d","name":"logs"}]}}`
	cfg, data, err := Parse("edgeseal", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := config.FileVaults{Dir: "/var/snap/edgeseal/common/vaults", Vaults: []config.FileVault{
		{Schema: 1, UUID: uuid, Name: "app-data", Path: "/var/snap/edgeseal/common/app-data", Policy: config.VaultChangeKey, KeySource: config.KeySourceTPM, KeyVersion: 2},
		{Schema: 1, UUID: "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", Name: "logs"},
	}}
	if !reflect.DeepEqual(cfg.FileVaults, want) {
		t.Errorf("file vaults %+v\nwant %+v", cfg.FileVaults, want)
	}
	again, err := config.Parse("written", data)
	if err != nil || !reflect.DeepEqual(again.FileVaults, want) {
		t.Errorf("the written config has %+v (%v)\n%s", again, err, data)
	}
	eff, err := Effective(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(eff["file-vaults"], `"key-version":2`) || !strings.Contains(eff["file-vaults"], `"defaults":false`) {
		t.Errorf("file-vaults option %s", eff["file-vaults"])
	}
}

func TestEffectiveOptionsParseBackToTheSameConfig(t *testing.T) {
	cfg, _, err := Parse("edgeseal", []byte(`{"pki":{"extra-names":["device.local"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	eff, err := Effective(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for k := range eff {
		if strings.Contains(k, "_") {
			t.Errorf("option %q has an underscore", k)
		}
	}
	if !strings.Contains(eff["tokens"], `"tokend-user":"root"`) {
		t.Errorf("tokens option %s", eff["tokens"])
	}
	doc := map[string]json.RawMessage{}
	for k, v := range eff {
		doc[k] = json.RawMessage(v)
	}
	b, _ := json.Marshal(doc)
	again, _, err := Parse("edgeseal", b)
	if err != nil {
		t.Fatalf("effective options do not parse: %v\n%s", err, b)
	}
	if again.PKI.ExtraNames[0] != "device.local" || again.Vault.WatchInterval != cfg.Vault.WatchInterval {
		t.Errorf("round trip differs: %+v", again)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"vault":{"listen":"127.0.0.1:8300"},"services":[{"name":"a","uids":[1000]}]}`))
	f.Add([]byte(`{"seal":{"tpm2":{"pcrs":[7,1e300]}}}`))
	f.Add([]byte(`{"file-vaults":{"dir":"/srv/v","vaults":[{"schema":1,"uuid":"` + uuid + `","name":"a","policy":"change-key","key-version":1}]}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg, data, err := Parse("edgeseal", doc)
		if err != nil {
			return
		}
		// Whatever is accepted writes a file the daemons accept.
		if _, err := config.Parse("written", data); err != nil {
			t.Fatalf("accepted options wrote a config that does not load: %v", err)
		}
		if _, err := Effective(cfg); err != nil {
			t.Fatal(err)
		}
	})
}
