package vaultlayout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
)

func TestPolicies(t *testing.T) {
	base := config.Vault{Mount: "secret", SecretPrefix: "edgeseal", KVVersion: 2}
	svc := config.Service{Name: "app", SharedRead: []string{"telemetry"}, SharedWrite: []string{"orders"}}
	cases := []struct {
		name    string
		vault   config.Vault
		want    []string
		notWant []string
	}{
		{
			name:  "kv2 grants the service's own data and metadata paths",
			vault: base,
			want: []string{
				`path "secret/data/edgeseal/app/*" {` + "\n" + `  capabilities = ["create", "read", "update", "delete", "list"]`,
				`path "secret/metadata/edgeseal/app/*" {` + "\n" + `  capabilities = ["read", "list", "delete"]`,
			},
		},
		{
			name:  "kv2 shared read groups are read and list only",
			vault: base,
			want: []string{
				`path "secret/data/edgeseal/shared/telemetry/*" {` + "\n" + `  capabilities = ["read", "list"]`,
				`path "secret/metadata/edgeseal/shared/telemetry/*" {` + "\n" + `  capabilities = ["read", "list"]`,
			},
		},
		{
			name:  "kv2 shared write groups are read-write",
			vault: base,
			want:  []string{`path "secret/data/edgeseal/shared/orders/*" {` + "\n" + `  capabilities = ["create", "read", "update", "delete", "list"]`},
		},
		{
			name:    "kv1 uses plain paths with the EdgeX prefix",
			vault:   config.Vault{Mount: "secret", SecretPrefix: "edgex", KVVersion: 1},
			want:    []string{`path "secret/edgex/app/*" {`, `path "secret/edgex/shared/telemetry/*" {`},
			notWant: []string{"/data/", "/metadata/"},
		},
		{
			name:    "no service may reach another's path or the whole mount",
			vault:   base,
			notWant: []string{`"secret/*"`, `"secret/data/*"`, `edgeseal/*"`, "sudo"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{Vault: tc.vault, Services: []config.Service{svc}}
			got := Policies(cfg)[ServicePolicyPrefix+"app"]
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("policy lacks\n%s\ngot:\n%s", w, got)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("policy has %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestTokendPolicyCannotWritePoliciesOrReadSecrets(t *testing.T) {
	p := tokendPolicy(config.Default())
	for _, bad := range []string{"sys/", "secret", "auth/token/create\"", "auth/token/create-orphan", "auth/token/roles"} {
		if strings.Contains(p, bad) {
			t.Errorf("token provider policy mentions %q:\n%s", bad, p)
		}
	}
	// sudo on the service role's create path alone (a period on each token).
	createBlock := `path "auth/token/create/` + ServiceRole + `" {
  capabilities = ["create", "update", "sudo"]
}`
	if strings.Count(p, `"sudo"`) != 1 || !strings.Contains(p, createBlock) {
		t.Errorf("token provider policy has sudo other than on the service role's create path:\n%s", p)
	}
	if !strings.Contains(p, `path "auth/token/create/`+ServiceRole+`"`) {
		t.Errorf("token provider policy cannot create service tokens:\n%s", p)
	}
}

func TestAServiceWithTLSMayIssueItsOwnCertificateOnly(t *testing.T) {
	cfg := config.Default()
	cfg.Services = []config.Service{{Name: "a", TLS: true}, {Name: "b"}}
	p := Policies(cfg)
	if want := "path \"service-pki/issue/a\" {\n  capabilities = [\"update\"]\n  allowed_parameters = {\n    \"common_name\" = [\"a\"]"; !strings.Contains(p[ServicePolicyPrefix+"a"], want) {
		t.Errorf("service a's policy lacks\n%s\ngot:\n%s", want, p[ServicePolicyPrefix+"a"])
	}
	if strings.Count(p[ServicePolicyPrefix+"a"], "service-pki") != 1 {
		t.Errorf("service a's policy names the service CA more than once:\n%s", p[ServicePolicyPrefix+"a"])
	}
	if strings.Contains(p[ServicePolicyPrefix+"b"], "service-pki") {
		t.Errorf("service b has no tls but its policy names the service CA:\n%s", p[ServicePolicyPrefix+"b"])
	}
	if !strings.Contains(p[SupervisorPolicy], `path "service-pki/roles/*"`) || strings.Contains(p[SupervisorPolicy], "issue") {
		t.Errorf("the supervisor writes the service CA's roles and issues nothing:\n%s", p[SupervisorPolicy])
	}
}

func TestTheTrustDomainIsTheConfigsOrTheMachineID(t *testing.T) {
	cfg := config.Default()
	old := machineIDFile
	t.Cleanup(func() { machineIDFile = old })
	machineIDFile = filepath.Join(t.TempDir(), "machine-id")
	if err := os.WriteFile(machineIDFile, []byte("0123456789abcdef0123456789abcdef\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if td, err := TrustDomain(cfg); err != nil || td != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("TrustDomain = %q, %v; want the machine ID", td, err)
	}
	if got := SPIFFEID("0123456789abcdef0123456789abcdef", "app"); got != "spiffe://0123456789abcdef0123456789abcdef/app" {
		t.Errorf("SPIFFEID = %q", got)
	}
	cfg.ServiceTLS.TrustDomain = "plant7.example"
	if td, _ := TrustDomain(cfg); td != "plant7.example" {
		t.Errorf("TrustDomain = %q, want the config's", td)
	}
	cfg.ServiceTLS.TrustDomain = ""
	if err := os.WriteFile(machineIDFile, []byte("uninitialized\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := TrustDomain(cfg); err == nil || !strings.Contains(err.Error(), "service_tls.trust_domain") {
		t.Errorf("a machine ID that is not one: %v, want an error naming service_tls.trust_domain", err)
	}
}

func TestADigestNamesATextAndServicePolicyDigestTheConfigsText(t *testing.T) {
	cfg := &config.Config{Vault: config.Vault{Mount: "secret", SecretPrefix: "edgeseal", KVVersion: 2},
		Services: []config.Service{{Name: "app"}}}
	if got, want := ServicePolicyDigest(cfg, "app"), Digest(Policies(cfg)[ServicePolicyPrefix+"app"]); got != want || len(got) != 64 {
		t.Fatalf("ServicePolicyDigest %q, want %q", got, want)
	}
	if ServicePolicyDigest(cfg, "nobody") != "" {
		t.Fatal("a service the config lacks has a digest")
	}
}

func TestTheIssuingTokenIsReadBackAsWrittenAndAnythingElseIsRefusedWithoutQuotingIt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "issuing-token.json")
	const token = "hvs.issuing-token-secret"
	s := &api.Secret{RequestID: "r", Auth: &api.SecretAuth{ClientToken: token, Accessor: "acc", Policies: []string{TokendPolicy}}}
	if err := WriteIssuingToken(path, s, fsutil.Self); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("written: %v, mode %v; want 0600", err, fi.Mode())
	}
	auth, err := ReadIssuingToken(path)
	if err != nil || auth.ClientToken != token || auth.Accessor != "acc" {
		t.Fatalf("read back %+v, %v", auth, err)
	}

	if err := WriteIssuingToken(path, &api.Secret{}, fsutil.Self); err == nil {
		t.Error("an answer without a token was written")
	}
	good, _ := os.ReadFile(path)
	link := filepath.Join(dir, "link.json")
	os.Symlink(path, link)
	for name, c := range map[string]struct {
		path string
		data []byte
	}{
		"a value after the answer":    {path, append(append([]byte{}, good...), []byte(` {"auth":{"client_token":"`+token+`"}}`)...)},
		"a field Vault never sends":   {path, []byte(`{"auth":{"client_token":"` + token + `"},"extra":1}`)},
		"the token as a field's name": {path, []byte(`{"auth":{"` + token + `":1}}`)},
		"the token as a time":         {path, []byte(`{"wrap_info":{"creation_time":"` + token + `"}}`)},
		"an answer without a token":   {path, []byte(`{"auth":{"accessor":"acc"}}`)},
		"more than the bound":         {path, []byte(`{"auth":{"client_token":"` + token + strings.Repeat("x", maxIssuingToken) + `"}}`)},
		"a symlink to the real file":  {link, nil},
	} {
		if c.data != nil {
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := ReadIssuingToken(c.path)
		if err == nil {
			t.Errorf("%s: read", name)
		} else if strings.Contains(err.Error(), token) {
			t.Errorf("%s: the error quotes the token: %v", name, err)
		}
	}
}
