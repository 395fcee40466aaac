package secretstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/access"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/naming"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/internal/policysync"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
)

// The supervisor is what edgeseal-unseal does once Vault is up, besides keeping
// it unsealed: it replaces the token-issuing token on a period, revokes the
// tokens of units that failed, and applies a service's policy when the token
// provider meets a service the config gained after boot. It holds its own
// token, in memory only, that can do exactly those things.
const (
	supervisorPeriod = time.Hour
	supervisorMaxTTL = 24 * time.Hour
)

// writePolicies writes each of policies (text by name) whose digest differs
// from the applied one, then records the digests.
func (b *Bootstrap) writePolicies(ctx context.Context, c *api.Client, policies map[string]string) error {
	b.policyMu.Lock()
	defer b.policyMu.Unlock()
	applied, _ := vaultlayout.ReadAppliedPolicies(b.Paths.Policies)
	if applied == nil {
		applied = map[string]string{}
	}
	for name, hcl := range policies {
		d := vaultlayout.Digest(hcl)
		if applied[name] == d {
			continue
		}
		if err := c.Sys().PutPolicyWithContext(ctx, name, hcl); err != nil {
			return fmt.Errorf("cannot write Vault policy %s: %w", name, err)
		}
		applied[name] = d
	}
	return vaultlayout.WriteAppliedPolicies(b.Paths.Policies, applied)
}

// issueSupervisorToken replaces the supervisor's token (revoking any earlier
// one: a previous run of this service) using c, the admin token's client.
func (b *Bootstrap) issueSupervisorToken(ctx context.Context, c *api.Client) error {
	if err := c.Sys().RevokePrefixWithContext(ctx, "auth/token/create/"+vaultlayout.SupervisorRole); err != nil {
		return fmt.Errorf("cannot revoke the earlier supervisor tokens: %w", err)
	}
	s, err := c.Auth().Token().CreateWithRoleWithContext(ctx, &api.TokenCreateRequest{
		Policies:    []string{vaultlayout.SupervisorPolicy},
		DisplayName: "edgeseal-supervisor",
		Metadata:    map[string]string{"edgeseal": "supervisor", "boot_id": b.BootID},
	}, vaultlayout.SupervisorRole)
	if err != nil {
		return fmt.Errorf("cannot create the supervisor token: %w", err)
	}
	sc, err := b.clientWith(s.Auth.ClientToken)
	if err != nil {
		return err
	}
	b.supervisorMu.Lock()
	b.supervisor = sc
	b.supervisorMu.Unlock()
	return nil
}

// refreshSupervisor makes a new supervisor token with the admin token: after
// a restart of this service within a boot, or if the token was lost.
func (b *Bootstrap) refreshSupervisor(ctx context.Context) error {
	c, err := b.adminClient(ctx)
	if err != nil {
		return err
	}
	defer c.ClearToken()
	return b.issueSupervisorToken(ctx, c)
}

// clientWith returns a copy of b.Client carrying token.
func (b *Bootstrap) clientWith(token string) (*api.Client, error) {
	c, err := b.Client.Clone()
	if err != nil {
		return nil, fmt.Errorf("cannot clone Vault client: %w", err)
	}
	c.SetToken(token)
	return c, nil
}

func (b *Bootstrap) supervisorClient() *api.Client {
	b.supervisorMu.Lock()
	defer b.supervisorMu.Unlock()
	return b.supervisor
}

// withSupervisor runs f with the supervisor's client; if Vault says the token
// is no good (it was revoked, or expired while Vault was down), it makes a new
// one and tries once more.
func (b *Bootstrap) withSupervisor(ctx context.Context, f func(*api.Client) error) error {
	c := b.supervisorClient()
	if c != nil {
		err := f(c)
		if !isForbidden(err) {
			return err
		}
		b.Log.Warn("the supervisor token was refused; making a new one", "error", err)
	}
	if err := b.refreshSupervisor(ctx); err != nil {
		return err
	}
	return f(b.supervisorClient())
}

// Supervise does the supervisor's periodic work until ctx ends: it renews its
// own token and rotates the token-issuing token. It runs beside Watch.
func (b *Bootstrap) Supervise(ctx context.Context) {
	renew := time.NewTicker(supervisorPeriod / 3)
	defer renew.Stop()
	for {
		wait := b.untilRotation()
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			err := b.withSupervisor(ctx, func(c *api.Client) error {
				_, err := c.Auth().Token().RenewSelfWithContext(ctx, 0)
				return err
			})
			if err != nil && ctx.Err() == nil {
				b.Log.Warn("cannot renew the supervisor token", "error", err)
			}
		case <-time.After(wait):
			if err := b.RotateIssuingToken(ctx); err != nil && ctx.Err() == nil {
				b.Log.Error("cannot rotate the token-issuing token; retrying in a minute", "error", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Minute):
				}
			}
		}
	}
}

// untilRotation is how long until the token-issuing token is due for rotation.
func (b *Bootstrap) untilRotation() time.Duration {
	fi, err := os.Stat(b.Paths.IssuingToken)
	if err != nil {
		return 0
	}
	return max(0, time.Until(fi.ModTime().Add(b.Config.Tokens.Rotation())))
}

// RotateIssuingToken replaces the token-issuing token with a new one, written
// atomically, then revokes the old. The provider loads the new one when it
// sees the file change, or when Vault refuses the old one.
func (b *Bootstrap) RotateIssuingToken(ctx context.Context) error {
	var oldAccessor string
	switch auth, err := vaultlayout.ReadIssuingToken(b.Paths.IssuingToken); {
	case err == nil:
		oldAccessor = auth.Accessor
	case !errors.Is(err, os.ErrNotExist):
		// The old token stays valid until its TTL ends: say so.
		b.Log.Warn("cannot read the token-issuing token to revoke it once replaced; it stays valid until it expires", "error", err)
	}
	err := b.withSupervisor(ctx, func(c *api.Client) error { return b.issueTokendToken(ctx, c) })
	if err != nil {
		return err
	}
	if oldAccessor != "" {
		err := b.withSupervisor(ctx, func(c *api.Client) error {
			return c.Auth().Token().RevokeAccessorWithContext(ctx, oldAccessor)
		})
		if err != nil && !isInvalidAccessor(err) {
			return fmt.Errorf("cannot revoke the previous token-issuing token: %w", err)
		}
	}
	b.say("rotated the token-issuing token", "revoked_accessor", oldAccessor, "next_in", b.Config.Tokens.Rotation().String())
	return nil
}

// RevokeUnit revokes every token the provider issued to processes of unit
// before the time given: it is called when the unit enters the failed state
// (or stops, tokens.revoke_on_stop), with the time systemd was asked to
// confirm it. A token issued after it went to the unit's next run.
func (b *Bootstrap) RevokeUnit(ctx context.Context, unit string, before time.Time) {
	issued, err := ledger.OfUnit(b.Paths.Ledger, unit)
	if errors.Is(err, os.ErrNotExist) || len(issued) == 0 {
		return
	}
	if err != nil {
		b.Log.Warn("cannot read the token ledger to revoke the tokens of a unit that failed or stopped", "unit", unit, "error", err)
		return
	}
	for _, e := range issued {
		if !e.Issued.Before(before) {
			continue
		}
		err := b.withSupervisor(ctx, func(c *api.Client) error {
			return c.Auth().Token().RevokeAccessorWithContext(ctx, e.Accessor)
		})
		switch {
		case err == nil:
			b.Log.Warn("revoked the token of a unit that failed or stopped", "unit", unit, "service", e.Service, "accessor", e.Accessor)
		case isInvalidAccessor(err):
		default:
			b.Log.Error("cannot revoke the token of a unit that failed or stopped", "unit", unit, "service", e.Service, "accessor", e.Accessor, "error", err)
		}
	}
}

// ServePolicySync answers the token provider on paths.SyncSocket: a line
// "sync" makes this service read the config again and write the policies that
// changed. Only root and the provider's user may connect. It returns when ctx
// ends.
func (b *Bootstrap) ServePolicySync(ctx context.Context) error {
	path := b.Paths.SyncSocket
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", path, err)
	}
	defer ln.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", path, err)
	}
	if b.TokendOwner != fsutil.Self {
		if err := os.Chown(path, b.TokendOwner.UID, b.TokendOwner.GID); err != nil {
			return fmt.Errorf("cannot give %s to the token provider's user: %w", path, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cannot accept on %s: %w", path, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			b.answerSync(ctx, c)
		}()
	}
}

func (b *Bootstrap) answerSync(ctx context.Context, c *net.UnixConn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := peer.FromConn(c)
	if err != nil {
		return
	}
	p.Close()
	if p.UID != 0 && (b.TokendOwner == fsutil.Self || int(p.UID) != b.TokendOwner.UID) {
		b.Log.Warn("refused a policy-sync request from a process that is not the token provider", "pid", p.PID, "uid", p.UID)
		return
	}
	if err := policysync.ReadRequest(c); err != nil {
		b.Log.Warn("refused a malformed policy-sync request", "pid", p.PID, "uid", p.UID)
		return
	}
	reply := policysync.Reply{OK: true}
	if err := b.syncPolicies(ctx); err != nil {
		reply = policysync.Reply{Error: err.Error()}
		b.Log.Error("cannot apply the service policies of the changed config", "error", err)
	}
	policysync.WriteReply(c, reply)
}

func (b *Bootstrap) syncPolicies(ctx context.Context) error {
	return b.ApplyConfig(ctx)
}

// ApplyConfig makes Vault match the config file as it is now, so that a
// narrower config takes access away at once, not at the next boot: it writes
// every service policy that changed (a shared group removed takes effect on
// the tokens already out), deletes the policies of services the config no
// longer has, and revokes each token the ledger shows issued to an identity
// that no longer gets that service's token (a service, unit, snap app, uid or
// gid taken out of the config), and each replaced token still pending
// revocation. It runs when the provider asks (a service new to it), when the
// config file changes (WatchConfig) and on SIGHUP (systemctl reload).
func (b *Bootstrap) ApplyConfig(ctx context.Context) error {
	path := b.ConfigFile
	if path == "" {
		path = b.Paths.ConfigFile
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	// Only service policies: edgeseal's own are written at boot, with the
	// admin token.
	policies := vaultlayout.Policies(cfg)
	for name := range policies {
		if !strings.HasPrefix(name, vaultlayout.ServicePolicyPrefix) {
			delete(policies, name)
		}
	}
	var removed, revoked, certRoles int
	err = b.withSupervisor(ctx, func(c *api.Client) error {
		if err := b.writePolicies(ctx, c, policies); err != nil {
			return err
		}
		var err error
		if removed, err = b.deleteStalePolicies(ctx, c, policies); err != nil {
			return err
		}
		if revoked, err = b.revokeUnmatched(ctx, c, cfg); err != nil {
			return err
		}
		// The certificate roles last: one that cannot be written (a
		// service_tls.mount changed since the boot, which the supervisor's
		// policy does not reach) must not keep a narrower config from
		// taking tokens away. Until its role is there, a service's
		// certificate is refused by the server.
		certRoles, _, err = syncServiceRoles(ctx, c, cfg)
		return err
	})
	if err != nil {
		return err
	}
	b.say("applied the service policies of the config", "services", len(cfg.Services),
		"policies_deleted", removed, "tokens_revoked", revoked, "certificate_roles", certRoles)
	return nil
}

// deleteStalePolicies deletes the service policies Vault has that want does
// not (services removed from the config).
func (b *Bootstrap) deleteStalePolicies(ctx context.Context, c *api.Client, want map[string]string) (int, error) {
	list, err := c.Logical().ListWithContext(ctx, "sys/policies/acl")
	if err != nil {
		return 0, fmt.Errorf("cannot list Vault policies: %w", err)
	}
	if list == nil {
		return 0, nil
	}
	keys, _ := list.Data["keys"].([]any)
	b.policyMu.Lock()
	defer b.policyMu.Unlock()
	applied, _ := vaultlayout.ReadAppliedPolicies(b.Paths.Policies)
	n := 0
	for _, k := range keys {
		name, _ := k.(string)
		if !strings.HasPrefix(name, vaultlayout.ServicePolicyPrefix) || want[name] != "" {
			continue
		}
		if _, err := c.Logical().DeleteWithContext(ctx, "sys/policies/acl/"+name); err != nil {
			return n, fmt.Errorf("cannot delete Vault policy %s of a service the config no longer has: %w", name, err)
		}
		delete(applied, name)
		b.Log.Warn("deleted the policy of a service the config no longer has", "policy", name)
		n++
	}
	if n > 0 && applied != nil {
		if err := vaultlayout.WriteAppliedPolicies(b.Paths.Policies, applied); err != nil {
			return n, err
		}
	}
	return n, nil
}

// revokeUnmatched revokes the tokens of the ledger whose holder the config no
// longer gives its service's token, and the replaced ones still pending.
func (b *Bootstrap) revokeUnmatched(ctx context.Context, c *api.Client, cfg *config.Config) (int, error) {
	f, err := ledger.Read(b.Paths.Ledger)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	type doomed struct{ service, accessor, why string }
	var out []doomed
	for service, e := range f.Services {
		id := peer.Identity{PID: int32(e.PID), UID: e.UID, GID: e.GID, Unit: e.Unit, SnapApp: e.SnapApp, Exe: e.ExeSHA256}
		if e.Credential {
			id.Credential = &peer.CredentialRequest{Unit: e.Unit}
		}
		if e.UnitFragment != "" {
			id.UnitFiles = &peer.UnitFiles{Fragment: e.UnitFragment, DropIns: e.UnitDropIns}
		}
		if e.SnapRevision != "" {
			app := e.SnapApp
			if e.Credential {
				app = peer.SnapAppOfUnit(e.Unit)
			}
			id.Snap = &peer.SnapInfo{Name: naming.SnapOfApp(app), Revision: e.SnapRevision, Publisher: e.SnapPublisher}
		}
		if svc, _, err := access.Match(cfg.Services, id, service); err != nil || svc.Name != service {
			out = append(out, doomed{service, e.Accessor, "the config no longer gives " + id.String() + " this service's token"})
		}
	}
	for _, p := range f.Pending {
		out = append(out, doomed{p.Service, p.Accessor, "replaced by a newer token of the service"})
	}
	n := 0
	for _, d := range out {
		err := c.Auth().Token().RevokeAccessorWithContext(ctx, d.accessor)
		switch {
		case isInvalidAccessor(err):
		case err != nil:
			return n, fmt.Errorf("cannot revoke a token of service %s (accessor %s): %w", d.service, d.accessor, err)
		default:
			b.Log.Warn("revoked a service token", "service", d.service, "accessor", d.accessor, "why", d.why)
			n++
		}
	}
	return n, nil
}

// configCheckEvery is how often edgeseal-unseal looks whether the config file
// changed (its size or modification time): then it applies it.
const configCheckEvery = 2 * time.Second

// WatchConfig applies the config (ApplyConfig) whenever its file changes, or
// reload says so (SIGHUP), until ctx ends.
func (b *Bootstrap) WatchConfig(ctx context.Context, reload <-chan struct{}) {
	path := b.ConfigFile
	if path == "" {
		path = b.Paths.ConfigFile
	}
	stamp := func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return ""
		}
		return fmt.Sprintf("%d %d", fi.Size(), fi.ModTime().UnixNano())
	}
	last := stamp()
	tick := time.NewTicker(configCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
		case <-tick.C:
			now := stamp()
			if now == last {
				continue
			}
			last = now
		}
		if err := b.ApplyConfig(ctx); err != nil && ctx.Err() == nil {
			b.Log.Error("cannot apply the changed config; it is tried again at its next change or reload", "error", err)
		}
	}
}

func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

func isInvalidAccessor(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 400 {
		return false
	}
	for _, e := range re.Errors {
		if e == "invalid accessor" {
			return true
		}
	}
	return false
}
