package secretstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
)

// Names edgeseal gives to what it creates in Vault. Service policies are named
// ServicePolicyPrefix + service name; service tokens come only from ServiceRole.
const (
	ServicePolicyPrefix = "edgeseal-svc-"
	ServiceRole         = "edgeseal-service"
	TokendPolicy        = "edgeseal-tokend"
	TokendRole          = "edgeseal-tokend"
)

// tokendPolicyHCL is the least the token provider needs: create tokens from the
// service role, look up and revoke them by accessor. Everything a token needs for
// itself (lookup-self, renew-self, revoke-self) comes with Vault's default policy.
// It cannot write policies: a token that could would be root in disguise.
//
// sudo on the create path is for one thing: a period on the token itself
// (Vault and OpenBao ask sudo for it), which lookup-self then reports, and by
// which EdgeX's client (go-mod-secrets) decides to renew the token; a period
// that comes from the role alone is not reported, and EdgeX's services would
// lose their tokens after one period. On this one path, with a role, sudo adds
// no more: the role's allowed policies still bound a token's policies, the
// role's period bounds the period (the lesser is used), the role decides
// orphans, no root token can come from a non-root parent, and edgeseal makes no
// namespaces; a chosen token id, which sudo also allows, gives the holder
// nothing it could not do by creating a token.
const tokendPolicyHCL = `# edgeseal token provider: issue and revoke service tokens, nothing else.
# sudo: a period on each token itself, which lookup-self then reports.
path "auth/token/create/` + ServiceRole + `" {
  capabilities = ["create", "update", "sudo"]
}
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
`

// Policies returns the Vault ACL policies that cfg asks for, by name.
func Policies(cfg *config.Config) map[string]string {
	out := map[string]string{TokendPolicy: tokendPolicyHCL, SupervisorPolicy: supervisorPolicyHCL}
	for _, s := range cfg.Services {
		out[ServicePolicyPrefix+s.Name] = servicePolicy(cfg.Vault, s)
	}
	return out
}

func servicePolicy(v config.Vault, s config.Service) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# edgeseal service %s: its own secrets, and the shared groups it is configured for.\n", s.Name)
	rw := []string{"create", "read", "update", "delete", "list"}
	ro := []string{"read", "list"}
	writeKVPaths(&b, v, s.Name, rw)
	for _, g := range s.SharedWrite {
		writeKVPaths(&b, v, "shared/"+g, rw)
	}
	for _, g := range s.SharedRead {
		writeKVPaths(&b, v, "shared/"+g, ro)
	}
	return b.String()
}

// writeKVPaths grants caps on <mount>/<prefix>/<sub>/ for the configured KV version.
func writeKVPaths(b *strings.Builder, v config.Vault, sub string, caps []string) {
	quoted := `"` + strings.Join(caps, `", "`) + `"`
	rel := v.SecretPrefix + "/" + sub + "/*"
	if v.KVVersion == 1 {
		fmt.Fprintf(b, "path \"%s/%s\" {\n  capabilities = [%s]\n}\n", v.Mount, rel, quoted)
		return
	}
	fmt.Fprintf(b, "path \"%s/data/%s\" {\n  capabilities = [%s]\n}\n", v.Mount, rel, quoted)
	meta := `"read", "list"`
	if len(caps) > 2 {
		meta = `"read", "list", "delete"`
	}
	fmt.Fprintf(b, "path \"%s/metadata/%s\" {\n  capabilities = [%s]\n}\n", v.Mount, rel, meta)
}

// roles returns the token roles: service tokens and the token-issuing token are
// orphans (a restart of their creator does not revoke them) and periodic (their
// holder renews them; an abandoned one expires after one period), and none
// lives past an explicit max TTL however often it is renewed: a service token
// tokens.service_max_ttl, the supervisor's supervisorMaxTTL (it makes itself a
// new one with the admin token). The token-issuing token has none of its own:
// edgeseal-unseal replaces and revokes it every tokens.issuing_rotation (an
// explicit max would have to stay under Vault's max lease TTL, 768h, which
// tokens.issuing_period may pass).
func roles(t config.Tokens) map[string]map[string]any {
	return map[string]map[string]any{
		ServiceRole: {
			"allowed_policies_glob":  []string{ServicePolicyPrefix + "*"},
			"disallowed_policies":    []string{"root", TokendPolicy},
			"orphan":                 true,
			"renewable":              true,
			"token_period":           int(t.ServicePeriod.D() / time.Second),
			"token_explicit_max_ttl": int(t.ServiceMaxTTL.D() / time.Second),
			"token_type":             "service",
		},
		SupervisorRole: {
			"allowed_policies":       []string{SupervisorPolicy},
			"orphan":                 true,
			"renewable":              true,
			"token_period":           int(supervisorPeriod / time.Second),
			"token_explicit_max_ttl": int(supervisorMaxTTL / time.Second),
			"token_type":             "service",
		},
		TokendRole: {
			"allowed_policies": []string{TokendPolicy},
			"orphan":           true,
			"renewable":        true,
			"token_period":     int(t.IssuingPeriod.D() / time.Second),
			"token_type":       "service",
		},
	}
}

// setup makes Vault match cfg. Every step is idempotent: it runs at every boot, so
// a crash halfway, or a changed config, is mended by the next boot. Policies
// are compared with the server's and only those that differ are written
// (reconcilePolicies), so that a boot does not grow by a write and a read per
// service.
func (b *Bootstrap) setup(ctx context.Context, c *api.Client) error {
	if err := ensureKV(ctx, c, b.Config.Vault); err != nil {
		return err
	}
	if err := b.step(ctx, StepKVMounted); err != nil {
		return err
	}
	want := Policies(b.Config)
	read, written, err := b.reconcilePolicies(ctx, c, want)
	if err != nil {
		return err
	}
	b.setupCounts = []any{"policies", len(want), "policies_read", read, "policies_written", written}
	if err := b.step(ctx, StepPoliciesWritten); err != nil {
		return err
	}
	for name, data := range roles(b.Config.Tokens) {
		if _, err := c.Logical().WriteWithContext(ctx, "auth/token/roles/"+name, data); err != nil {
			return fmt.Errorf("cannot write Vault token role %s: %w", name, err)
		}
	}
	if err := b.step(ctx, StepRolesWritten); err != nil {
		return err
	}
	return nil
}

// ensureKV mounts the KV engine at the configured path, or checks the one there.
func ensureKV(ctx context.Context, c *api.Client, v config.Vault) error {
	mounts, err := c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return fmt.Errorf("cannot list Vault secrets engines: %w", err)
	}
	want := fmt.Sprint(v.KVVersion)
	if m, ok := mounts[v.Mount+"/"]; ok {
		have := m.Options["version"]
		if have == "" {
			have = "1"
		}
		if m.Type != "kv" || have != want {
			return fmt.Errorf("cannot use Vault mount %s/: it is %s version %s, config asks for kv version %s (vault.kv_version); "+
				"edgeseal does not convert existing data: set vault.kv_version to %s or vault.mount to a free path", v.Mount, m.Type, have, want, have)
		}
		return nil
	}
	in := &api.MountInput{
		Type:        "kv",
		Description: "edgeseal: per-service and shared secrets",
		Options:     map[string]string{"version": want},
	}
	if err := c.Sys().MountWithContext(ctx, v.Mount, in); err != nil {
		return fmt.Errorf("cannot mount kv version %s at %s/: %w", want, v.Mount, err)
	}
	return nil
}
