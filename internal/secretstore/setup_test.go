package secretstore

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
)

func TestRolesMakeOrphanPeriodicTokensLimitedToTheirPolicies(t *testing.T) {
	r := roles(config.Tokens{ServicePeriod: config.Duration(3600e9), IssuingPeriod: config.Duration(86400e9)})
	svc, tok := r[vaultlayout.ServiceRole], r[vaultlayout.TokendRole]
	if svc["orphan"] != true || tok["orphan"] != true {
		t.Error("tokens are not orphans: a restart of their creator would revoke them")
	}
	if svc["token_period"] != 3600 || tok["token_period"] != 86400 {
		t.Errorf("periods: %v %v", svc["token_period"], tok["token_period"])
	}
	if g := svc["allowed_policies_glob"].([]string); len(g) != 1 || g[0] != vaultlayout.ServicePolicyPrefix+"*" {
		t.Errorf("service role allows %v", g)
	}
	if d := svc["disallowed_policies"].([]string); !strings.Contains(strings.Join(d, ","), "root") || !strings.Contains(strings.Join(d, ","), vaultlayout.TokendPolicy) {
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
