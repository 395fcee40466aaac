package secretstore

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
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
	p := Policies(&config.Config{})[TokendPolicy]
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

func TestRolesMakeOrphanPeriodicTokensLimitedToTheirPolicies(t *testing.T) {
	r := roles(config.Tokens{ServicePeriod: config.Duration(3600e9), IssuingPeriod: config.Duration(86400e9)})
	svc, tok := r[ServiceRole], r[TokendRole]
	if svc["orphan"] != true || tok["orphan"] != true {
		t.Error("tokens are not orphans: a restart of their creator would revoke them")
	}
	if svc["token_period"] != 3600 || tok["token_period"] != 86400 {
		t.Errorf("periods: %v %v", svc["token_period"], tok["token_period"])
	}
	if g := svc["allowed_policies_glob"].([]string); len(g) != 1 || g[0] != ServicePolicyPrefix+"*" {
		t.Errorf("service role allows %v", g)
	}
	if d := svc["disallowed_policies"].([]string); !strings.Contains(strings.Join(d, ","), "root") || !strings.Contains(strings.Join(d, ","), TokendPolicy) {
		t.Errorf("service role does not forbid root and the token provider policy: %v", d)
	}
}

func TestDecodeRootToken(t *testing.T) {
	// Vault XORs the token with the one-time pad and encodes it unpadded base64.
	otp := "0123456789abcdefghijklmnopqr"
	token := "hvs.AAAAAAAAAAAAAAAAAAAAAAAA"
	enc := make([]byte, len(token))
	for i := range enc {
		enc[i] = token[i] ^ otp[i]
	}
	cases := []struct {
		name, encoded, otp, want string
		err                      bool
	}{
		{"a token xored with its pad decodes", b64(enc), otp, token, false},
		{"a pad of another length is refused", b64(enc), otp[:10], "", true},
		{"garbage is refused", "!!!", otp, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeRootToken(tc.encoded, tc.otp)
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("got %q, %v", got, err)
			}
			if err != nil && strings.Contains(err.Error(), tc.otp) {
				t.Error("error shows the one-time pad")
			}
		})
	}
}
func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }
