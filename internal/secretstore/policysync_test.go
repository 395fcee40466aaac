package secretstore

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
)

// policyVault holds ACL policies as a server does (name -> text), answers
// list, read and write of sys/policies/acl, and records what was read and
// written.
type policyVault struct {
	mu       sync.Mutex
	policies map[string]string
	reads    []string
	writes   []string
	failRead string // a policy whose read fails with a server error
}

func (v *policyVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	v.mu.Lock()
	defer v.mu.Unlock()
	name, one := strings.CutPrefix(path, "sys/policies/acl/")
	switch {
	case path == "sys/policies/acl" && (r.Method == "LIST" || r.URL.Query().Get("list") == "true"):
		keys := []string{}
		for n := range v.policies {
			keys = append(keys, n)
		}
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"keys": keys}})
	case one && r.Method == http.MethodGet:
		v.reads = append(v.reads, name)
		text, ok := v.policies[name]
		switch {
		case name == v.failRead:
			http.Error(w, `{"errors":["internal error"]}`, http.StatusInternalServerError)
		case !ok:
			http.Error(w, `{"errors":[]}`, http.StatusNotFound)
		default:
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"name": name, "policy": text}})
		}
	case one && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		var body struct{ Policy string }
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &body)
		v.policies[name] = body.Policy
		v.writes = append(v.writes, name)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, `{"errors":["unexpected request"]}`, http.StatusNotFound)
	}
}

// reconcileAgainst runs the boot's policy step for cfg against v and returns
// the digests it recorded for the token provider.
func reconcileAgainst(t *testing.T, v *policyVault, cfg *config.Config) (int, map[string]string, error) {
	t.Helper()
	srv := httptest.NewServer(v)
	t.Cleanup(srv.Close)
	ac := api.DefaultConfig()
	ac.Address = srv.URL
	ac.MaxRetries = 0
	c, err := api.NewClient(ac)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("admin")
	p := paths.Paths{Policies: filepath.Join(t.TempDir(), "policies.json")}
	b := &Bootstrap{Paths: p, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	n, err := b.reconcilePolicies(context.Background(), c, Policies(cfg))
	if err != nil {
		return n, nil, err
	}
	applied, err := ReadAppliedPolicies(p.Policies)
	if err != nil {
		t.Fatal(err)
	}
	return n, applied, nil
}

func servicesConfig(n int) *config.Config {
	cfg := &config.Config{Vault: config.Vault{Mount: "secret", SecretPrefix: "edgeseal", KVVersion: 2}}
	for i := range n {
		cfg.Services = append(cfg.Services, config.Service{Name: "svc" + string(rune('a'+i)), UIDs: []uint32{uint32(1000 + i)}})
	}
	return cfg
}

// serverWith is a server that holds exactly the policies cfg asks for.
func serverWith(cfg *config.Config) *policyVault {
	v := &policyVault{policies: map[string]string{"default": "# the server's own"}}
	for name, text := range Policies(cfg) {
		v.policies[name] = text
	}
	return v
}

func TestABootWritesNoPolicyTheServerAlreadyHolds(t *testing.T) {
	// Given a server that holds every policy the config asks for
	cfg := servicesConfig(5)
	v := serverWith(cfg)
	// When the boot sets up the policies
	n, applied, err := reconcileAgainst(t, v, cfg)
	// Then it writes none, and records each one's digest for the provider
	if err != nil || n != 0 || len(v.writes) != 0 {
		t.Fatalf("reconcile: %d written (%v), %v; want none", n, v.writes, err)
	}
	for name, text := range Policies(cfg) {
		if applied[name] != digest(text) {
			t.Errorf("recorded digest of %s is %q, want the config's", name, applied[name])
		}
	}
	if got := ServicePolicyDigest(cfg, "svca"); applied[ServicePolicyPrefix+"svca"] != got {
		t.Errorf("the provider's check would fail: %q recorded, %q asked", applied[ServicePolicyPrefix+"svca"], got)
	}
}

func TestABootWritesExactlyThePoliciesThatDiffer(t *testing.T) {
	cases := []struct {
		name    string
		change  func(v *policyVault, cfg *config.Config)
		want    []string
		notRead string // a policy the server does not list: written without a read
	}{
		{
			name: "a policy changed in the config since the last boot is written",
			change: func(v *policyVault, cfg *config.Config) {
				cfg.Services[1].SharedRead = []string{"telemetry"}
			},
			want: []string{ServicePolicyPrefix + "svcb"},
		},
		{
			name: "a policy changed on the server behind edgeseal's back is put right",
			change: func(v *policyVault, cfg *config.Config) {
				v.policies[ServicePolicyPrefix+"svcc"] = `path "secret/*" { capabilities = ["read"] }`
			},
			want: []string{ServicePolicyPrefix + "svcc"},
		},
		{
			name: "edgeseal's own policy changed on the server is put right",
			change: func(v *policyVault, cfg *config.Config) {
				v.policies[TokendPolicy] += "path \"sys/*\" { capabilities = [\"sudo\"] }\n"
			},
			want: []string{TokendPolicy},
		},
		{
			name: "a policy deleted on the server is written again, without a read",
			change: func(v *policyVault, cfg *config.Config) {
				delete(v.policies, ServicePolicyPrefix+"svcd")
			},
			want:    []string{ServicePolicyPrefix + "svcd"},
			notRead: ServicePolicyPrefix + "svcd",
		},
		{
			name: "a service new to the config is written",
			change: func(v *policyVault, cfg *config.Config) {
				cfg.Services = append(cfg.Services, config.Service{Name: "newcomer", UIDs: []uint32{4242}})
			},
			want:    []string{ServicePolicyPrefix + "newcomer"},
			notRead: ServicePolicyPrefix + "newcomer",
		},
		{
			name: "a policy emptied on the server is written again",
			change: func(v *policyVault, cfg *config.Config) {
				v.policies[ServicePolicyPrefix+"svce"] = ""
			},
			want: []string{ServicePolicyPrefix + "svce"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Given a server set up for the config at the last boot
			cfg := servicesConfig(5)
			v := serverWith(cfg)
			// When something changed since, and the device boots
			tc.change(v, cfg)
			n, applied, err := reconcileAgainst(t, v, cfg)
			// Then exactly the policies that differ are written, and the
			// server holds what the config asks for
			slices.Sort(v.writes)
			if err != nil || n != len(tc.want) || !slices.Equal(v.writes, tc.want) {
				t.Fatalf("written %v (%d), %v; want %v", v.writes, n, err, tc.want)
			}
			for name, text := range Policies(cfg) {
				if v.policies[name] != text {
					t.Errorf("server's %s is\n%s\nwant\n%s", name, v.policies[name], text)
				}
				if applied[name] != digest(text) {
					t.Errorf("recorded digest of %s differs from the config's", name)
				}
			}
			if tc.notRead != "" && slices.Contains(v.reads, tc.notRead) {
				t.Errorf("read %s, which the server did not list", tc.notRead)
			}
		})
	}
}

func TestAPolicyTheSetupCannotReadFailsTheBootRatherThanBeSkipped(t *testing.T) {
	// Given a server whose read of one policy fails
	cfg := servicesConfig(3)
	v := serverWith(cfg)
	v.failRead = ServicePolicyPrefix + "svcb"
	// When the boot sets up the policies
	_, _, err := reconcileAgainst(t, v, cfg)
	// Then it fails, naming the policy, and writes nothing
	if err == nil || !strings.Contains(err.Error(), "cannot read Vault policy "+ServicePolicyPrefix+"svcb") {
		t.Fatalf("reconcile with a failing read: %v; want an error naming the policy", err)
	}
	if len(v.writes) != 0 {
		t.Errorf("wrote %v after a failed read", v.writes)
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
