package refctl

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fsutil"
)

// identityFormat heads the identity secret.
const (
	identityFormat  = "edgeseal-controller-identity"
	identityVersion = 1
	identityPath    = "identity"
)

// identityRecord is the identity secret: the CA and server certificate
// replicas share, and the version of the transit key that signs bundles
// (devices pin its public key at enrolment: it is never rotated).
type identityRecord struct {
	Format            string `json:"format"`
	Version           int    `json:"version"`
	SigningKeyVersion int    `json:"signing_key_version"`
	identity
}

func (s *baoStore) identity(ctx context.Context) (*keys, error) {
	var r identityRecord
	_, err := s.readRecord(ctx, identityPath, &r)
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		return nil, fmt.Errorf("%w: %w", ErrNotInitialised, errNoIdentity)
	case err != nil:
		return nil, fmt.Errorf("cannot read the controller's identity: %w", err)
	case r.Format != identityFormat || r.Version != identityVersion || r.SigningKeyVersion < 1:
		return nil, fmt.Errorf("%w: identity: format %q version %d, not %q %d", ErrBadState, r.Format, r.Version, identityFormat, identityVersion)
	}
	signer, err := s.transitSigner(ctx, r.SigningKeyVersion)
	if err != nil {
		return nil, err
	}
	k, err := r.identity.keys(signer)
	if err != nil {
		return nil, fmt.Errorf("%w: identity: %w", ErrBadState, err)
	}
	return k, nil
}

// transitSigner signs with the transit key of version ver, after checking
// it is an ECDSA P-256 key that cannot be exported.
func (s *baoStore) transitSigner(ctx context.Context, ver int) (*transitSigner, error) {
	var sec *api.Secret
	path := s.cfg.TransitMount + "/keys/" + signingKeyName
	err := s.call(ctx, func(ctx context.Context, c *api.Client) error {
		var err error
		sec, err = c.Logical().ReadWithContext(ctx, path)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read the bundle signing key %s: %w", path, err)
	}
	if sec == nil {
		return nil, fmt.Errorf("%w: no transit key %s", ErrStoreMisconfigured, path)
	}
	if t, _ := sec.Data["type"].(string); t != "ecdsa-p256" {
		return nil, fmt.Errorf("%w: transit key %s is %q, not ecdsa-p256", ErrStoreMisconfigured, path, t)
	}
	if exp, _ := sec.Data["exportable"].(bool); exp {
		return nil, fmt.Errorf("%w: transit key %s is exportable: the signing key must never leave OpenBao", ErrStoreMisconfigured, path)
	}
	vers, _ := sec.Data["keys"].(map[string]any)
	kv, _ := vers[strconv.Itoa(ver)].(map[string]any)
	pubPEM, _ := kv["public_key"].(string)
	pub, err := ctlproto.ParsePublicKey(pubPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: transit key %s version %d: %v", ErrStoreMisconfigured, path, ver, err)
	}
	return &transitSigner{s: s, version: ver, pub: pub}, nil
}

// transitSigner is a crypto.Signer whose key is a transit key: the digest
// goes to OpenBao, an ASN.1 ECDSA signature comes back, and is checked
// against the key's public half before it is used.
type transitSigner struct {
	s       *baoStore
	version int
	pub     *ecdsa.PublicKey
}

func (t *transitSigner) Public() crypto.PublicKey { return t.pub }

func (t *transitSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, errors.New("cannot sign: the transit signer signs SHA-256 digests only")
	}
	var sec *api.Secret
	path := t.s.cfg.TransitMount + "/sign/" + signingKeyName
	err := t.s.call(context.Background(), func(ctx context.Context, c *api.Client) error {
		var err error
		sec, err = c.Logical().WriteWithContext(ctx, path, map[string]any{
			"input": base64.StdEncoding.EncodeToString(digest), "prehashed": true, "hash_algorithm": "sha2-256",
			"marshaling_algorithm": "asn1", "key_version": t.version})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cannot sign with %s: %w", path, err)
	}
	var sig string
	if sec != nil {
		sig, _ = sec.Data["signature"].(string)
	}
	b64, ok := strings.CutPrefix(sig, "vault:v"+strconv.Itoa(t.version)+":")
	if !ok {
		return nil, fmt.Errorf("cannot sign with %s: the answer holds no signature of key version %d", path, t.version)
	}
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || !ecdsa.VerifyASN1(t.pub, digest, der) {
		return nil, fmt.Errorf("cannot sign with %s: the signature does not verify", path)
	}
	return der, nil
}

// BaoInit is what InitOpenBao needs.
type BaoInit struct {
	// Addresses and CAFile: the cluster, as in BaoConfig.
	Addresses []string
	CAFile    string
	// AdminToken may enable mounts and write policies (an operator's, used
	// only here; never written).
	AdminToken string
	// Hosts are the names devices reach the replicas by (the server
	// certificate's; nil for DefaultHosts).
	Hosts []string
	// Mounts; "" for the defaults.
	KVMount, TransitMount, AppRoleMount string
	// Out is the store's file to write (BaoConfig, 0600); the CA devices
	// trust is written beside it, as ca.crt.
	Out string
	// FromDir, if set, is a controller directory whose devices will move
	// to this store (Migrate): its CA, server certificate and signing key
	// (imported into transit) are the identity, as its devices trust them.
	FromDir string
}

// InitOpenBao sets up an OpenBao cluster for the controller: a KV v2 mount
// that takes only check-and-set writes, a transit mount with the bundle
// signing key (ECDSA P-256, not exportable), the controller's policy
// (BaoPolicy), an AppRole role bound to it, and the identity (a new CA and
// server certificate), written last; then the store's file. A store that
// holds an identity already is ErrInitialised: nothing is overwritten.
func InitOpenBao(ctx context.Context, in BaoInit) (*BaoConfig, error) {
	cfg := &BaoConfig{Format: baoConfigFormat, Version: baoConfigVersion, Addresses: in.Addresses, CAFile: in.CAFile,
		KVMount: or(in.KVMount, DefaultKVMount), TransitMount: or(in.TransitMount, DefaultTransitMount),
		AppRoleMount: or(in.AppRoleMount, DefaultAppRoleMount), RoleID: "pending", SecretID: "pending"}
	fail := func(err error) (*BaoConfig, error) {
		return nil, fmt.Errorf("cannot initialise the controller in OpenBao: %w", err)
	}
	if err := cfg.check(); err != nil {
		return fail(err)
	}
	if in.AdminToken == "" {
		return fail(errors.New("no admin token"))
	}
	var id *identity
	var fromKey *ecdsa.PrivateKey
	var err error
	if in.FromDir != "" {
		id, fromKey, err = dirIdentity(in.FromDir)
	} else {
		id, err = makeIdentity(in.Hosts)
	}
	if err != nil {
		return fail(err)
	}
	nodes, err := newBaoNodes(cfg.Addresses, cfg.CAFile)
	if err != nil {
		return fail(err)
	}
	admin := func(what string, op func(ctx context.Context, c *api.Client) error) error {
		if err := nodes.do(ctx, in.AdminToken, op); err != nil {
			return fmt.Errorf("cannot %s: %w", what, err)
		}
		return nil
	}
	read := func(path string) (*api.Secret, error) {
		var sec *api.Secret
		err := admin("read "+path, func(ctx context.Context, c *api.Client) error {
			var err error
			sec, err = c.Logical().ReadWithContext(ctx, path)
			return err
		})
		return sec, err
	}
	write := func(path string, data map[string]any) (*api.Secret, error) {
		var sec *api.Secret
		err := admin("write "+path, func(ctx context.Context, c *api.Client) error {
			var err error
			sec, err = c.Logical().WriteWithContext(ctx, path, data)
			return err
		})
		return sec, err
	}

	// The mounts, made if missing; one of another type is refused.
	mounts, err := read("sys/mounts")
	if err != nil {
		return fail(err)
	}
	for _, m := range []struct{ path, typ, version string }{{cfg.KVMount, "kv", "2"}, {cfg.TransitMount, "transit", ""}} {
		if cur, ok := mounts.Data[m.path+"/"].(map[string]any); ok {
			opts, _ := cur["options"].(map[string]any)
			if cur["type"] != m.typ || (m.version != "" && (opts == nil || opts["version"] != m.version)) {
				return fail(fmt.Errorf("mount %s exists and is not %s %s", m.path, m.typ, m.version))
			}
			continue
		}
		data := map[string]any{"type": m.typ, "description": "edgeseal-controller"}
		if m.version != "" {
			data["options"] = map[string]any{"version": m.version}
		}
		if _, err := write("sys/mounts/"+m.path, data); err != nil {
			return fail(err)
		}
	}
	// A new KV v2 mount answers 400 "Upgrading from non-versioned to
	// versioned data" for a moment while it sets itself up.
	ready := time.Now().Add(30 * time.Second)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		_, err := write(cfg.KVMount+"/config", map[string]any{"cas_required": true, "max_versions": kvMaxVersions})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "Upgrading from non-versioned to versioned data") || time.Now().After(ready) {
			return fail(err)
		}
		select {
		case <-ctx.Done():
			return fail(err)
		case <-time.After(wait):
		}
	}
	// Nothing is overwritten: an identity says the store is a controller.
	if sec, err := read(cfg.KVMount + "/data/" + identityPath); err != nil {
		return fail(err)
	} else if sec != nil && sec.Data["data"] != nil {
		return fail(fmt.Errorf("mount %s: %w", cfg.KVMount, ErrInitialised))
	}
	// The signing key: made if missing (an init cut short may have made
	// it; no device can have pinned it, as no identity was written).
	keyPath := cfg.TransitMount + "/keys/" + signingKeyName
	if sec, err := read(keyPath); err != nil {
		return fail(err)
	} else if sec == nil && fromKey != nil {
		if err := importSigningKey(ctx, nodes, in.AdminToken, cfg.TransitMount, fromKey); err != nil {
			return fail(err)
		}
	} else if sec == nil {
		if _, err := write(keyPath, map[string]any{"type": "ecdsa-p256", "exportable": false, "allow_plaintext_backup": false}); err != nil {
			return fail(err)
		}
	}
	if _, err := write("sys/policies/acl/"+cfg.KVMount, map[string]any{"policy": cfg.BaoPolicy()}); err != nil {
		return fail(err)
	}
	auths, err := read("sys/auth")
	if err != nil {
		return fail(err)
	}
	if cur, ok := auths.Data[cfg.AppRoleMount+"/"].(map[string]any); !ok {
		if _, err := write("sys/auth/"+cfg.AppRoleMount, map[string]any{"type": "approle"}); err != nil {
			return fail(err)
		}
	} else if cur["type"] != "approle" {
		return fail(fmt.Errorf("auth mount %s exists and is not approle", cfg.AppRoleMount))
	}
	role := "auth/" + cfg.AppRoleMount + "/role/" + cfg.KVMount
	// Batch tokens: nothing stored per login, valid on every node.
	if _, err := write(role, map[string]any{"token_policies": []string{cfg.KVMount}, "token_type": "batch",
		"token_ttl": "1h", "token_max_ttl": "1h", "bind_secret_id": true}); err != nil {
		return fail(err)
	}
	sec, err := read(role + "/role-id")
	if err != nil {
		return fail(err)
	}
	if sec == nil {
		return fail(errors.New("the AppRole role has no role ID"))
	}
	cfg.RoleID, _ = sec.Data["role_id"].(string)
	if sec, err = write(role+"/secret-id", nil); err != nil {
		return fail(err)
	}
	if sec == nil {
		return fail(errors.New("the AppRole role gave no secret ID"))
	}
	cfg.SecretID, _ = sec.Data["secret_id"].(string)

	// The key as the replicas will check it, before anything names it.
	asAdmin := &baoStore{cfg: cfg, nodes: nodes, token: in.AdminToken, renewAt: time.Now().Add(time.Hour)}
	signer, err := asAdmin.transitSigner(ctx, 1)
	if err != nil {
		return fail(err)
	}
	if fromKey != nil && !signer.pub.Equal(&fromKey.PublicKey) {
		return fail(fmt.Errorf("transit key %s is not %s's signing key (made by an earlier init?)", keyPath, in.FromDir))
	}
	rec := map[string]any{"format": identityFormat, "version": identityVersion, "signing_key_version": 1,
		"ca_cert": id.CACert, "ca_key": id.CAKey, "server_cert": id.ServerCert, "server_key": id.ServerKey}
	err = admin("write the identity", func(ctx context.Context, c *api.Client) error {
		_, err := c.KVv2(cfg.KVMount).Put(ctx, identityPath, rec, api.WithCheckAndSet(0))
		return err
	})
	if isCASMismatch(err) {
		return fail(fmt.Errorf("mount %s: %w", cfg.KVMount, ErrInitialised))
	}
	if err != nil {
		return fail(err)
	}
	if err := cfg.Save(in.Out); err != nil {
		return fail(err)
	}
	if err := fsutil.WriteFileAtomic(BaoCACertPath(in.Out), []byte(id.CACert), 0o644, fsutil.Self); err != nil {
		return fail(err)
	}
	return cfg, nil
}

// BaoCACertPath is where InitOpenBao writes the CA devices trust: ca.crt
// beside the store's file.
func BaoCACertPath(configFile string) string {
	return filepath.Join(filepath.Dir(configFile), "ca.crt")
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
