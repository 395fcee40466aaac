package secretstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
)

// The service CA (service_tls): a PKI secrets engine whose root key the
// server makes and keeps behind its barrier, so the TPM-sealed unseal key
// guards it like every secret. It is not the per-boot CA: that CA's key is
// gone once edgeseal-pki has signed the server's certificate (in the TPM and
// flushed, with pki.ca_key: tpm), so it cannot sign anything later; and a
// service that trusts the service CA must not thereby trust the server's
// listener certificate as a service, nor the other way round.
const (
	// serviceCAValidity is the service CA's lifetime; the mount's max lease
	// TTL is raised to it, the services' certificates live service_tls.ttl.
	serviceCAValidity = "87600h"
	serviceCAName     = "edgeseal service CA"
	serviceCAIssuer   = "edgeseal-services"
)

// ensureServiceCA mounts the PKI engine at service_tls.mount and makes its
// root CA, where either is missing (mounts is the server's list). Both steps
// are idempotent: a boot that crashed between them finishes the job.
func ensureServiceCA(ctx context.Context, c *api.Client, cfg *config.Config, mounts map[string]*api.MountOutput) error {
	mount := cfg.ServiceTLS.Mount
	if m, ok := mounts[mount+"/"]; ok {
		if m.Type != "pki" {
			return fmt.Errorf("cannot use Vault mount %s/ for the service CA: it is a %s engine: set service_tls.mount to a free path", mount, m.Type)
		}
	} else {
		in := &api.MountInput{
			Type:        "pki",
			Description: "edgeseal: the services' TLS certificates (service_tls)",
			Config:      api.MountConfigInput{MaxLeaseTTL: serviceCAValidity},
		}
		if err := c.Sys().MountWithContext(ctx, mount, in); err != nil {
			return fmt.Errorf("cannot mount the service CA's PKI engine at %s/: %w", mount, err)
		}
	}
	issuers, err := c.Logical().ListWithContext(ctx, mount+"/issuers")
	if err != nil {
		return fmt.Errorf("cannot list the service CA's issuers at %s/: %w", mount, err)
	}
	if issuers != nil && len(listKeys(issuers)) > 0 {
		return nil
	}
	_, err = c.Logical().WriteWithContext(ctx, mount+"/root/generate/internal", map[string]any{
		"common_name": serviceCAName,
		"issuer_name": serviceCAIssuer,
		"key_type":    "ec",
		"key_bits":    256,
		"ttl":         serviceCAValidity,
	})
	if err != nil {
		return fmt.Errorf("cannot make the service CA at %s/: %w", mount, err)
	}
	return nil
}

// serviceRole is the role of the service CA that issues service's
// certificates: its SPIFFE ID as the only URI SAN, its name as the common
// name and the only DNS SAN, client and server use, an EC P-256 key, for
// service_tls.ttl at most, not stored (short-lived: not revoked one by one).
// The role alone does not stop a request from stretching a lifetime
// (not_after) or naming another as the common name only
// (exclude_cn_from_sans): the policies of whoever may issue allow only the
// parameters edgeseal sends (vaultlayout), and the common name must be a
// host name.
func serviceRole(cfg *config.Config, trustDomain, service string) map[string]any {
	ttl := cfg.ServiceTLS.TTL.D().String()
	return map[string]any{
		"allowed_domains":             []string{service},
		"allow_bare_domains":          true,
		"allow_subdomains":            false,
		"allow_glob_domains":          false,
		"allow_wildcard_certificates": false,
		"allow_localhost":             false,
		"allow_ip_sans":               false,
		"allow_any_name":              false,
		"enforce_hostnames":           false,
		"cn_validations":              []string{"hostname"},
		"require_cn":                  true,
		"allowed_uri_sans":            []string{vaultlayout.SPIFFEID(trustDomain, service)},
		"server_flag":                 true,
		"client_flag":                 true,
		"code_signing_flag":           false,
		"email_protection_flag":       false,
		"key_type":                    "ec",
		"key_bits":                    256,
		"ttl":                         ttl,
		"max_ttl":                     ttl,
		"no_store":                    true,
		"generate_lease":              false,
	}
}

// syncServiceRoles writes the role of each service with tls and deletes the
// roles of services that no longer have it, so that a service taken out of
// the config, or its tls, can get no certificate from then on.
func syncServiceRoles(ctx context.Context, c *api.Client, cfg *config.Config) (written, deleted int, err error) {
	var want []string
	for _, s := range cfg.Services {
		if s.TLS {
			want = append(want, s.Name)
		}
	}
	if len(want) > 0 {
		td, err := vaultlayout.TrustDomain(cfg)
		if err != nil {
			return 0, 0, err
		}
		for _, name := range want {
			if _, err := c.Logical().WriteWithContext(ctx, vaultlayout.RolesPath(cfg)+"/"+name, serviceRole(cfg, td, name)); err != nil {
				return written, 0, fmt.Errorf("cannot write the service CA's role of service %s: %w", name, err)
			}
			written++
		}
	}
	list, err := c.Logical().ListWithContext(ctx, vaultlayout.RolesPath(cfg))
	if err != nil {
		return written, 0, fmt.Errorf("cannot list the service CA's roles: %w", err)
	}
	for _, name := range listKeys(list) {
		if slices.Contains(want, name) {
			continue
		}
		if _, err := c.Logical().DeleteWithContext(ctx, vaultlayout.RolesPath(cfg)+"/"+name); err != nil {
			return written, deleted, fmt.Errorf("cannot delete the service CA's role of %s, which the config no longer gives tls: %w", name, err)
		}
		deleted++
	}
	return written, deleted, nil
}

// listKeys is the keys of a LIST answer (nil: none).
func listKeys(s *api.Secret) []string {
	if s == nil {
		return nil
	}
	raw, _ := s.Data["keys"].([]any)
	out := make([]string, 0, len(raw))
	for _, k := range raw {
		if name, ok := k.(string); ok && !strings.HasSuffix(name, "/") {
			out = append(out, name)
		}
	}
	return out
}
