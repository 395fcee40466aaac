package secretstore

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
)

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
		vaultlayout.ServiceRole: {
			"allowed_policies_glob":  []string{vaultlayout.ServicePolicyPrefix + "*"},
			"disallowed_policies":    []string{"root", vaultlayout.TokendPolicy},
			"orphan":                 true,
			"renewable":              true,
			"token_period":           int(t.ServicePeriod.D() / time.Second),
			"token_explicit_max_ttl": int(t.ServiceMaxTTL.D() / time.Second),
			"token_type":             "service",
		},
		vaultlayout.SupervisorRole: {
			"allowed_policies":       []string{vaultlayout.SupervisorPolicy},
			"orphan":                 true,
			"renewable":              true,
			"token_period":           int(supervisorPeriod / time.Second),
			"token_explicit_max_ttl": int(supervisorMaxTTL / time.Second),
			"token_type":             "service",
		},
		vaultlayout.TokendRole: {
			"allowed_policies": []string{vaultlayout.TokendPolicy},
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
	mounts, err := c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return fmt.Errorf("cannot list Vault secrets engines: %w", err)
	}
	if err := ensureKV(ctx, c, b.Config.Vault, mounts); err != nil {
		return err
	}
	if err := ensureServiceCA(ctx, c, b.Config, mounts); err != nil {
		return err
	}
	if err := b.step(ctx, StepKVMounted); err != nil {
		return err
	}
	want := vaultlayout.Policies(b.Config)
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
	certRoles, _, err := syncServiceRoles(ctx, c, b.Config)
	if err != nil {
		return err
	}
	b.setupCounts = append(b.setupCounts, "certificate_roles", certRoles)
	if err := b.step(ctx, StepRolesWritten); err != nil {
		return err
	}
	return nil
}

// ensureKV mounts the KV engine at the configured path, or checks the one
// there (mounts is the server's list).
func ensureKV(ctx context.Context, c *api.Client, v config.Vault, mounts map[string]*api.MountOutput) error {
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
