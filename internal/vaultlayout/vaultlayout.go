// Package vaultlayout is what edgeseal makes in the secret store, by name and
// text: the ACL policies (the token provider's, the supervisor's, one per
// configured service), the token roles' names, the SHA-256 digests by which a
// policy's text is known, the file that records the digests of the policies
// applied this boot (paths.Policies), and the file of the token-issuing token
// (paths.IssuingToken). Both sides need them and neither owns them:
// edgeseal-unseal writes the policies, the record and the token (package
// secretstore), the token provider checks a service's policy against the
// record before its first token and issues with that token (package tokend).
package vaultlayout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// Names edgeseal gives to what it creates in Vault. Service policies are named
// ServicePolicyPrefix + service name; service tokens come only from ServiceRole.
const (
	ServicePolicyPrefix = "edgeseal-svc-"
	ServiceRole         = "edgeseal-service"
	TokendPolicy        = "edgeseal-tokend"
	TokendRole          = "edgeseal-tokend"
	// The supervisor: edgeseal-unseal once the server is set up (its token
	// rotates the token-issuing token, revokes service tokens and applies
	// service policies).
	SupervisorPolicy = "edgeseal-supervisor"
	SupervisorRole   = "edgeseal-supervisor"
)

// tokendPolicy is the least the token provider needs: create tokens from the
// service role, look up and revoke them by accessor, issue a certificate from
// a service's role of the service CA (the role alone decides what it names). Everything a token needs for
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
func tokendPolicy(cfg *config.Config) string {
	return `# edgeseal token provider: issue and revoke service tokens, and issue
# services their certificates (each service's own role), nothing else.
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
path "` + cfg.ServiceTLS.Mount + `/issue/*" {
  capabilities = ["update"]
` + issueParameters("[]") + `}
`
}

// issueParameters are the only request parameters an issue may carry, those
// tokenclient.IssueCertificate sends: the role bounds each name, and
// nothing else may stretch it (not_after past the role's TTL,
// exclude_cn_from_sans, alt_names, ttl). cn is the values the common name may
// take: "[]" any the role allows.
func issueParameters(cn string) string {
	return `  allowed_parameters = {
    "common_name" = ` + cn + `
    "uri_sans" = []
    "format" = ["pem"]
    "private_key_format" = ["pkcs8"]
  }
`
}

// Policies returns the Vault ACL policies that cfg asks for, by name.
func Policies(cfg *config.Config) map[string]string {
	out := map[string]string{TokendPolicy: tokendPolicy(cfg), SupervisorPolicy: supervisorPolicy(cfg)}
	for _, s := range cfg.Services {
		out[ServicePolicyPrefix+s.Name] = servicePolicy(cfg, s)
	}
	return out
}

func servicePolicy(cfg *config.Config, s config.Service) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# edgeseal service %s: its own secrets, and the shared groups it is configured for.\n", s.Name)
	rw := []string{"create", "read", "update", "delete", "list"}
	ro := []string{"read", "list"}
	writeKVPaths(&b, cfg.Vault, s.Name, rw)
	for _, g := range s.SharedWrite {
		writeKVPaths(&b, cfg.Vault, "shared/"+g, rw)
	}
	for _, g := range s.SharedRead {
		writeKVPaths(&b, cfg.Vault, "shared/"+g, ro)
	}
	if s.TLS {
		// Its certificate, renewed with its own token: its role names it.
		fmt.Fprintf(&b, "path \"%s\" {\n  capabilities = [\"update\"]\n%s}\n", IssuePath(cfg, s.Name), issueParameters(`["`+s.Name+`"]`))
	}
	return b.String()
}

// IssuePath is where service's certificates are issued: its role of the
// service CA, named as the service.
func IssuePath(cfg *config.Config, service string) string {
	return cfg.ServiceTLS.Mount + "/issue/" + service
}

// RolesPath is where the service CA's roles are, one per service with tls.
func RolesPath(cfg *config.Config) string { return cfg.ServiceTLS.Mount + "/roles" }

// machineIDFile is where TrustDomain reads the default trust domain.
var machineIDFile = "/etc/machine-id"

// TrustDomain is the host of the services' SPIFFE IDs: service_tls.trust_domain,
// or this device's machine ID.
func TrustDomain(cfg *config.Config) (string, error) {
	if cfg.ServiceTLS.TrustDomain != "" {
		return cfg.ServiceTLS.TrustDomain, nil
	}
	data, err := fsutil.ReadBounded(machineIDFile, 64)
	if err != nil {
		return "", fmt.Errorf("cannot read the machine ID for the services' trust domain (or set service_tls.trust_domain): %w", err)
	}
	id := strings.TrimSpace(string(data))
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", fmt.Errorf("cannot use %s as the services' trust domain: it is not a machine ID (32 hex digits): set service_tls.trust_domain", machineIDFile)
	}
	return id, nil
}

// SPIFFEID is the identity service's certificates name, its URI SAN.
func SPIFFEID(trustDomain, service string) string {
	return "spiffe://" + trustDomain + "/" + service
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

func supervisorPolicy(cfg *config.Config) string {
	return `# edgeseal-unseal, once Vault is set up: rotate the token-issuing token,
# revoke service tokens, apply service policies and the service CA's roles.
# Nothing else.
path "auth/token/create/` + TokendRole + `" {
  capabilities = ["create", "update"]
}
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
path "sys/policies/acl/` + ServicePolicyPrefix + `*" {
  capabilities = ["create", "update", "read", "delete"]
}
path "sys/policies/acl" {
  capabilities = ["list"]
}
path "` + RolesPath(cfg) + `/*" {
  capabilities = ["create", "update", "delete", "list"]
}
`
}

// ServicePolicyDigest returns the SHA-256 of the policy text cfg asks for
// service (what paths.Policies records as applied), or "" if cfg has no such
// service.
func ServicePolicyDigest(cfg *config.Config, service string) string {
	for _, s := range cfg.Services {
		if s.Name == service {
			return Digest(servicePolicy(cfg, s))
		}
	}
	return ""
}

// Digest is the SHA-256 of a policy text, in hex: how the record and the
// provider know a text.
func Digest(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:])
}

// maxApplied bounds the applied-policies record: about 100 bytes a policy,
// for far more services than a config may name.
const maxApplied = 16 << 20

// ReadAppliedPolicies reads paths.Policies: the digests of the policies in Vault.
func ReadAppliedPolicies(path string) (map[string]string, error) {
	data, err := fsutil.ReadBounded(path, maxApplied)
	if err != nil {
		return nil, fmt.Errorf("cannot read applied policies: %w", err)
	}
	var m map[string]string
	if err := strictjson.Decode(data, maxApplied, &m); err != nil {
		return nil, fmt.Errorf("cannot parse applied policies %s: %w", path, err)
	}
	return m, nil
}

// WriteAppliedPolicies writes the record ReadAppliedPolicies reads (digests by
// policy name, 0644: the provider's user reads it), atomically.
func WriteAppliedPolicies(path string, digests map[string]string) error {
	data, err := json.MarshalIndent(digests, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(path, data, 0o644, fsutil.Self); err != nil {
		return fmt.Errorf("cannot record the applied policies: %w", err)
	}
	return nil
}

// maxIssuingToken bounds the token-issuing token's file: the server's answer
// to a token create, well under a kilobyte.
const maxIssuingToken = 64 << 10

// WriteIssuingToken writes the token-issuing token, s being the server's
// answer to its creation, as JSON, 0600 and owned by owner (the provider's
// user), atomically.
func WriteIssuingToken(path string, s *api.Secret, owner fsutil.Owner) error {
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return fmt.Errorf("cannot write the token-issuing token: the server's answer holds no token")
	}
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("cannot encode the token-issuing token: %w", err)
	}
	return fsutil.WriteFileAtomic(path, data, 0o600, owner)
}

// ReadIssuingToken reads what WriteIssuingToken wrote: a regular file, bounded,
// strictly. Its errors name the file, never its contents.
func ReadIssuingToken(path string) (*api.SecretAuth, error) {
	data, err := fsutil.ReadRegular(path, maxIssuingToken)
	if err != nil {
		return nil, fmt.Errorf("cannot read the token-issuing token: %w", err)
	}
	var s api.Secret
	if err := strictjson.Decode(data, maxIssuingToken, &s); err != nil {
		return nil, fmt.Errorf("cannot parse the token-issuing token %s: %w", path, err)
	}
	if s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("cannot read the token-issuing token %s: it holds no token", path)
	}
	return s.Auth, nil
}
