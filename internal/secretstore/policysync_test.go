package secretstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
)

// policyVault is a server whose ACL policies live in its file storage as the
// file backend lays them out (<storage>/sys/policy/_<name>, here in clear):
// it answers list, read and write of sys/policies/acl from those files and
// records what was read and written.
type policyVault struct {
	storage  string
	mu       sync.Mutex
	reads    []string
	writes   []string
	failRead string // a policy whose read fails with a server error
}

func newPolicyVault(t *testing.T) *policyVault {
	v := &policyVault{storage: t.TempDir()}
	if err := os.MkdirAll(v.dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *policyVault) dir() string               { return filepath.Join(v.storage, "sys", "policy") }
func (v *policyVault) file(name string) string   { return filepath.Join(v.dir(), "_"+name) }
func (v *policyVault) put(name, text string)     { os.WriteFile(v.file(name), []byte(text), 0o600) }
func (v *policyVault) remove(name string)        { os.Remove(v.file(name)) }
func (v *policyVault) text(name string) string   { b, _ := os.ReadFile(v.file(name)); return string(b) }
func (v *policyVault) has(name string) (ok bool) { _, err := os.Stat(v.file(name)); return err == nil }

func (v *policyVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	v.mu.Lock()
	defer v.mu.Unlock()
	name, one := strings.CutPrefix(path, "sys/policies/acl/")
	switch {
	case path == "sys/policies/acl" && (r.Method == "LIST" || r.URL.Query().Get("list") == "true"):
		keys := []string{}
		entries, _ := os.ReadDir(v.dir())
		for _, e := range entries {
			keys = append(keys, strings.TrimPrefix(e.Name(), "_"))
		}
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"keys": keys}})
	case one && r.Method == http.MethodGet:
		v.reads = append(v.reads, name)
		switch {
		case name == v.failRead:
			http.Error(w, `{"errors":["internal error"]}`, http.StatusInternalServerError)
		case !v.has(name):
			http.Error(w, `{"errors":[]}`, http.StatusNotFound)
		default:
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"name": name, "policy": v.text(name)}})
		}
	case one && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		var body struct{ Policy string }
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &body)
		v.put(name, body.Policy)
		v.writes = append(v.writes, name)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, `{"errors":["unexpected request"]}`, http.StatusNotFound)
	}
}

// device is the state that outlives a boot: the state directory.
type policyDevice struct {
	v     *policyVault
	state string
	key   []byte // the unseal key, which the boot holds
}

func newPolicyDevice(t *testing.T) *policyDevice {
	return &policyDevice{v: newPolicyVault(t), state: t.TempDir(), key: bytes.Repeat([]byte{0x5a}, 32)}
}

// boot runs one boot's policy step for cfg and returns what it read and
// wrote and the digests it recorded for the token provider.
func (d *policyDevice) boot(t *testing.T, cfg *config.Config) (reads, writes []string, applied map[string]string, err error) {
	t.Helper()
	d.v.reads, d.v.writes = nil, nil
	srv := httptest.NewServer(d.v)
	defer srv.Close()
	ac := api.DefaultConfig()
	ac.Address = srv.URL
	ac.MaxRetries = 0
	c, err := api.NewClient(ac)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("admin")
	cfg.Vault.StoragePath = d.v.storage
	p := paths.Paths{StateDir: d.state, Policies: filepath.Join(t.TempDir(), "policies.json")}
	b := &Bootstrap{Config: cfg, Paths: p, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), unsealKey: d.key}
	nr, nw, err := b.reconcilePolicies(context.Background(), c, vaultlayout.Policies(cfg))
	reads, writes = slices.Sorted(slices.Values(d.v.reads)), slices.Sorted(slices.Values(d.v.writes))
	if nr != len(reads) || nw != len(writes) {
		t.Errorf("reconcile said %d read and %d written; the server saw %v and %v", nr, nw, reads, writes)
	}
	if err != nil {
		return reads, writes, nil, err
	}
	applied, err = vaultlayout.ReadAppliedPolicies(p.Policies)
	if err != nil {
		t.Fatal(err)
	}
	return reads, writes, applied, nil
}

func servicesConfig(n int) *config.Config {
	cfg := &config.Config{Vault: config.Vault{Mount: "secret", SecretPrefix: "edgeseal", KVVersion: 2}}
	for i := range n {
		cfg.Services = append(cfg.Services, config.Service{Name: "svc" + string(rune('a'+i)), UIDs: []uint32{uint32(1000 + i)}})
	}
	return cfg
}

// settledDevice is a device whose last boot set the server up for cfg and
// found it right, its storage files old enough for their stamps to be kept.
func settledDevice(t *testing.T, cfg *config.Config) *policyDevice {
	t.Helper()
	d := newPolicyDevice(t)
	d.v.put("default", "# the server's own")
	if _, _, _, err := d.boot(t, cfg); err != nil { // the first boot writes
		t.Fatal(err)
	}
	if _, _, _, err := d.boot(t, cfg); err != nil { // the next finds them right
		t.Fatal(err)
	}
	return d
}

func names(ns ...string) []string {
	var out []string
	for _, n := range ns {
		if n != vaultlayout.TokendPolicy && n != vaultlayout.SupervisorPolicy {
			n = vaultlayout.ServicePolicyPrefix + n
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func TestAFirstBootWritesEveryPolicyWithoutReadingAny(t *testing.T) {
	cfg := servicesConfig(3)
	d := newPolicyDevice(t)
	reads, writes, applied, err := d.boot(t, cfg)
	if err != nil || len(reads) != 0 || len(writes) != len(vaultlayout.Policies(cfg)) {
		t.Fatalf("first boot: read %v, wrote %v, %v; want every policy written, none read", reads, writes, err)
	}
	for name, text := range vaultlayout.Policies(cfg) {
		if d.v.text(name) != text || applied[name] != vaultlayout.Digest(text) {
			t.Errorf("%s: server holds %q, recorded digest %q", name, d.v.text(name), applied[name])
		}
	}
}

func TestABootAfterAnUnchangedOneReadsAndWritesNothing(t *testing.T) {
	// Given a device whose policies an earlier boot found right
	cfg := servicesConfig(5)
	d := settledDevice(t, cfg)
	// When it boots again with the same config and nothing changed
	reads, writes, applied, err := d.boot(t, cfg)
	// Then no policy is read or written, and the provider's digests are all there
	if err != nil || len(reads) != 0 || len(writes) != 0 {
		t.Fatalf("read %v, wrote %v, %v; want nothing", reads, writes, err)
	}
	if got, want := applied[vaultlayout.ServicePolicyPrefix+"svca"], vaultlayout.ServicePolicyDigest(cfg, "svca"); got != want {
		t.Errorf("the provider's check would fail: %q recorded, %q asked", got, want)
	}
	if len(applied) != len(vaultlayout.Policies(cfg)) {
		t.Errorf("recorded %d digests, want %d", len(applied), len(vaultlayout.Policies(cfg)))
	}
}

func TestABootPutsRightExactlyThePoliciesThatChanged(t *testing.T) {
	cases := []struct {
		name   string
		change func(v *policyVault, cfg *config.Config)
		reads  []string
		writes []string
	}{
		{
			name:   "a policy changed in the config is read and written",
			change: func(v *policyVault, cfg *config.Config) { cfg.Services[1].SharedRead = []string{"telemetry"} },
			reads:  names("svcb"), writes: names("svcb"),
		},
		{
			name: "a service policy changed on the server behind edgeseal's back is put right",
			change: func(v *policyVault, cfg *config.Config) {
				v.put(vaultlayout.ServicePolicyPrefix+"svcc", `path "secret/*" { capabilities = ["read"] }`)
			},
			reads: names("svcc"), writes: names("svcc"),
		},
		{
			name: "a change on the server of the same size is put right",
			change: func(v *policyVault, cfg *config.Config) {
				old := v.text(vaultlayout.ServicePolicyPrefix + "svcc")
				v.put(vaultlayout.ServicePolicyPrefix+"svcc", strings.Replace(old, "svcc", "svcd", 1))
			},
			reads: names("svcc"), writes: names("svcc"),
		},
		{
			name: "edgeseal's own policy changed on the server is put right",
			change: func(v *policyVault, cfg *config.Config) {
				v.put(vaultlayout.TokendPolicy, vaultlayout.Policies(&config.Config{})[vaultlayout.TokendPolicy]+"path \"sys/*\" { capabilities = [\"sudo\"] }\n")
			},
			reads: names(vaultlayout.TokendPolicy), writes: names(vaultlayout.TokendPolicy),
		},
		{
			name:   "a policy deleted on the server is written again without a read",
			change: func(v *policyVault, cfg *config.Config) { v.remove(vaultlayout.ServicePolicyPrefix + "svcd") },
			writes: names("svcd"),
		},
		{
			name: "a policy rewritten on the server with the same text is read, not written",
			change: func(v *policyVault, cfg *config.Config) {
				v.put(vaultlayout.ServicePolicyPrefix+"svce", v.text(vaultlayout.ServicePolicyPrefix+"svce"))
			},
			reads: names("svce"),
		},
		{
			name: "a service new to the config is written without a read",
			change: func(v *policyVault, cfg *config.Config) {
				cfg.Services = append(cfg.Services, config.Service{Name: "newcomer", UIDs: []uint32{4242}})
			},
			writes: names("newcomer"),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Given a device whose policies an earlier boot found right
			cfg := servicesConfig(5)
			d := settledDevice(t, cfg)
			// When something changed since, and the device boots
			tc.change(d.v, cfg)
			reads, writes, applied, err := d.boot(t, cfg)
			// Then exactly the changed policies are read or written, and the
			// server holds what the config asks for
			if err != nil || !slices.Equal(reads, tc.reads) || !slices.Equal(writes, tc.writes) {
				t.Fatalf("read %v, wrote %v, %v; want read %v, written %v", reads, writes, err, tc.reads, tc.writes)
			}
			for name, text := range vaultlayout.Policies(cfg) {
				if d.v.text(name) != text {
					t.Errorf("server's %s is\n%s\nwant\n%s", name, d.v.text(name), text)
				}
				if applied[name] != vaultlayout.Digest(text) {
					t.Errorf("recorded digest of %s differs from the config's", name)
				}
			}
			// And the boot after it, nothing having changed, writes nothing
			// and reads at most what changed (a policy written is read once
			// more, and kept as found right: only a read finds it right)
			reads, writes, _, err = d.boot(t, cfg)
			changed := append(slices.Clone(tc.reads), tc.writes...)
			if err != nil || len(writes) != 0 || slices.ContainsFunc(reads, func(r string) bool { return !slices.Contains(changed, r) }) {
				t.Errorf("the boot after: read %v, wrote %v, %v; want no write and no read but of %v", reads, writes, err, changed)
			}
		})
	}
}

func TestWithoutTheUnsealKeyNoRecordIsTrustedOrKept(t *testing.T) {
	// Given a device whose policies an earlier boot found right
	cfg := servicesConfig(2)
	d := settledDevice(t, cfg)
	// When a boot runs without the unseal key (the record's MAC key)
	d.key = nil
	// Then it reads every policy, and keeps no record of its own
	reads, writes, _, err := d.boot(t, cfg)
	if err != nil || len(reads) != len(vaultlayout.Policies(cfg)) || len(writes) != 0 {
		t.Fatalf("read %v, wrote %v, %v; want every policy read, none written", reads, writes, err)
	}
	// And a record made under another unseal key is not trusted either
	d.key = bytes.Repeat([]byte{0x11}, 32)
	if reads, _, _, err := d.boot(t, cfg); err != nil || len(reads) != len(vaultlayout.Policies(cfg)) {
		t.Fatalf("another key: read %v, %v; want every policy read", reads, err)
	}
}

func TestAKeptRecordOfAnotherStorageIsNotTrusted(t *testing.T) {
	cfg := servicesConfig(2)
	d := settledDevice(t, cfg)
	// Given the server's storage moved (vault.storage_path changed) to a
	// copy whose files have other stamps
	moved := newPolicyVault(t)
	for name := range vaultlayout.Policies(cfg) {
		moved.put(name, d.v.text(name))
	}
	d.v = moved
	reads, writes, _, err := d.boot(t, cfg)
	if err != nil || len(reads) != len(vaultlayout.Policies(cfg)) || len(writes) != 0 {
		t.Fatalf("read %v, wrote %v, %v; want every policy read, none written", reads, writes, err)
	}
}

func TestAPolicyTheSetupCannotReadFailsTheBootRatherThanBeSkipped(t *testing.T) {
	// Given a server whose read of one changed policy fails
	cfg := servicesConfig(3)
	d := settledDevice(t, cfg)
	d.v.put(vaultlayout.ServicePolicyPrefix+"svcb", "# changed")
	d.v.failRead = vaultlayout.ServicePolicyPrefix + "svcb"
	// When the device boots
	_, writes, _, err := d.boot(t, cfg)
	// Then the boot fails, naming the policy, and writes nothing
	if err == nil || !strings.Contains(err.Error(), "cannot read Vault policy "+vaultlayout.ServicePolicyPrefix+"svcb") {
		t.Fatalf("boot with a failing read: %v; want an error naming the policy", err)
	}
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusInternalServerError {
		t.Errorf("error %v does not carry the server's answer", err)
	}
	if len(writes) != 0 {
		t.Errorf("wrote %v after a failed read", writes)
	}
}

func TestPoliciesToWriteAreTheMissingAndTheDifferent(t *testing.T) {
	want := map[string]string{"same": "a", "changed": "b", "missing": "c", "emptied": "d"}
	have := map[string]string{"same": "a", "changed": "B", "emptied": "", "extra": "x"}
	got := policiesToWrite(want, have)
	if !slices.Equal(got, []string{"changed", "emptied", "missing"}) {
		t.Errorf("policiesToWrite = %v, want [changed emptied missing]", got)
	}
}

// forgeRecord rewrites the kept record as a thief with the disk can (threat
// model, finding 14): each named policy's file stamp is set to what the
// storage file now gives, every other byte of the record left as it was.
func (d *policyDevice) forgeRecord(t *testing.T, names ...string) {
	t.Helper()
	path := filepath.Join(d.state, policyRecordName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	var policies map[string]map[string]json.RawMessage
	if err := json.Unmarshal(rec["policies"], &policies); err != nil {
		t.Fatal(err)
	}
	stamps := storageStamps{dir: d.v.dir()}
	for _, name := range names {
		st, ok := stamps.of(name)
		if !ok {
			t.Fatalf("no stamp of %s", name)
		}
		if policies[name] == nil {
			t.Fatalf("the record has no %s to forge", name)
		}
		policies[name]["file"], _ = json.Marshal(st)
	}
	rec["policies"], _ = json.Marshal(policies)
	data, _ = json.Marshal(rec)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAPolicyRolledBackOfflineIsPutRightThoughItsRecordIsForged(t *testing.T) {
	// Given a device whose service svcb was given telemetry's secrets, and
	// the storage file of its policy as the server wrote it then
	broad := servicesConfig(3)
	broad.Services[1].SharedRead = []string{"telemetry"}
	d := settledDevice(t, broad)
	svcb := vaultlayout.ServicePolicyPrefix + "svcb"
	old, err := os.ReadFile(d.v.file(svcb))
	if err != nil {
		t.Fatal(err)
	}
	oldRecord, err := os.ReadFile(filepath.Join(d.state, policyRecordName))
	if err != nil {
		t.Fatal(err)
	}
	// And a config that took them away, which two boots applied and found
	// right
	narrow := servicesConfig(3)
	if _, writes, _, err := d.boot(t, narrow); err != nil || !slices.Equal(writes, names("svcb")) {
		t.Fatalf("narrowing: wrote %v, %v", writes, err)
	}
	if _, _, _, err := d.boot(t, narrow); err != nil {
		t.Fatal(err)
	}
	t.Run("the file rolled back and the record forged to match it", func(t *testing.T) {
		// When a thief with the disk puts the old file back and rewrites
		// the record's stamp of it to match
		if err := os.WriteFile(d.v.file(svcb), old, 0o600); err != nil {
			t.Fatal(err)
		}
		d.forgeRecord(t, svcb)
		// Then the next boot reads svcb and puts the narrow policy back
		reads, writes, _, err := d.boot(t, narrow)
		if err != nil || !slices.Contains(reads, svcb) || !slices.Equal(writes, names("svcb")) {
			t.Fatalf("read %v, wrote %v, %v; want svcb read and written", reads, writes, err)
		}
		if got, want := d.v.text(svcb), vaultlayout.Policies(narrow)[svcb]; got != want {
			t.Fatalf("the server keeps svcb's rolled-back policy:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("the file and the record rolled back together", func(t *testing.T) {
		// When the thief puts back the old file and the record of the boot
		// that found it right
		if err := os.WriteFile(d.v.file(svcb), old, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d.state, policyRecordName), oldRecord, 0o600); err != nil {
			t.Fatal(err)
		}
		// Then the next boot reads svcb (the config's text is not the one
		// recorded) and puts the narrow policy back
		_, writes, _, err := d.boot(t, narrow)
		if err != nil || !slices.Equal(writes, names("svcb")) || d.v.text(svcb) != vaultlayout.Policies(narrow)[svcb] {
			t.Fatalf("wrote %v, %v; server holds\n%s", writes, err, d.v.text(svcb))
		}
	})
}
