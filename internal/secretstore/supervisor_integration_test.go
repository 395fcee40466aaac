//go:build integration

package secretstore_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"gopkg.in/yaml.v3"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/tokend"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
)

func TestRotationReplacesTheIssuingTokenAndRevokesTheOld(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	b := d.run(ctx)
	c := d.vault.Client(t)
	old := d.issuingToken()
	if err := b.RotateIssuingToken(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := d.issuingToken()
	if fresh == old || !tokenWorks(c, fresh) || tokenWorks(c, old) {
		t.Fatalf("after rotation: new differs %v, new works %v, old works %v", fresh != old, tokenWorks(c, fresh), tokenWorks(c, old))
	}
	t.Log("And after edgeseal-unseal restarts within the boot, it can still rotate (a new supervisor token)")
	b2 := d.run(ctx)
	if err := b2.RotateIssuingToken(ctx); err != nil {
		t.Fatalf("rotation after a restart within the boot: %v", err)
	}
	if tokenWorks(c, fresh) {
		t.Error("the token-issuing token before the second rotation still works")
	}
	t.Log("And a supervisor whose token was revoked (the first run's, by the second) makes itself a new one")
	if err := b.RotateIssuingToken(ctx); err != nil {
		t.Fatalf("rotation with a revoked supervisor token: %v", err)
	}
	t.Log("And one supervisor token lives at a time")
	if n := countByRole(t, d, vaultlayout.SupervisorRole); n != 1 {
		t.Errorf("%d supervisor tokens alive, want 1", n)
	}
}

func countByRole(t *testing.T, d *device, role string) int {
	t.Helper()
	root := d.rootClient(context.Background())
	list, err := root.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range list.Data["keys"].([]any) {
		s, err := root.Auth().Token().LookupAccessor(k.(string))
		if err == nil && s.Data["role"] == role {
			n++
		}
	}
	return n
}

func TestRevokeUnitRevokesOnlyThatUnitsTokens(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	b := d.run(ctx)
	issuer, _ := d.vault.Client(t).Clone()
	issuer.SetToken(d.issuingToken())
	mint := func(service string) *api.Secret {
		s, err := issuer.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{vaultlayout.ServicePolicyPrefix + service}}, vaultlayout.ServiceRole)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	one, two := mint("app-one"), mint("app-two")
	led, err := ledger.Open(d.paths.Ledger, "boot-a", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	led.Swap("app-one", ledger.Entry{Accessor: one.Auth.Accessor, Unit: "app-one.service", Issued: time.Now()})
	led.Swap("app-two", ledger.Entry{Accessor: two.Auth.Accessor, Unit: "app-two.service", Issued: time.Now()})

	t.Log("A token issued after systemd confirmed the unit ended went to its next run: it stays")
	b.RevokeUnit(ctx, "app-one.service", time.Now().Add(-time.Hour))
	c := d.vault.Client(t)
	if !tokenWorks(c, one.Auth.ClientToken) {
		t.Error("a token issued after the unit ended was revoked")
	}
	b.RevokeUnit(ctx, "app-one.service", time.Now())
	if tokenWorks(c, one.Auth.ClientToken) {
		t.Error("the failed unit's token still works")
	}
	if !tokenWorks(c, two.Auth.ClientToken) {
		t.Error("another unit's token was revoked")
	}
	b.RevokeUnit(ctx, "app-one.service", time.Now()) // again: already revoked, nothing to do
	b.RevokeUnit(ctx, "unknown.service", time.Now())
}

func TestPolicySyncAppliesAServiceAddedAfterBoot(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newDevice(t, nil)
	b := d.run(ctx)
	served := make(chan error, 1)
	go func() { served <- b.ServePolicySync(ctx) }()
	waitFor(t, d.paths.SyncSocket)

	t.Log("Given the config gains a service after boot")
	cfg := *d.cfg
	cfg.Services = append(append([]config.Service{}, d.cfg.Services...), config.Service{Name: "newcomer", SharedRead: []string{"telemetry"}})
	data, err := yaml.Marshal(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(d.paths.ConfigFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.paths.ConfigFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log("When the provider ensures its policy before its first token")
	ps := &tokend.PolicySync{Applied: d.paths.Policies, Socket: d.paths.SyncSocket}
	if err := ps.Ensure(ctx, &cfg, "newcomer"); err != nil {
		t.Fatal(err)
	}
	t.Log("Then Vault has the policy, as the config says")
	root := d.rootClient(ctx)
	got, err := root.Sys().GetPolicy(vaultlayout.ServicePolicyPrefix + "newcomer")
	if err != nil || got != vaultlayout.Policies(&cfg)[vaultlayout.ServicePolicyPrefix+"newcomer"] {
		t.Fatalf("policy in Vault: %q, %v", got, err)
	}
	t.Log("And a service the provider's config has but the file does not is an error, not a silent pass")
	other := cfg
	other.Services = append(append([]config.Service{}, cfg.Services...), config.Service{Name: "ghost"})
	if err := ps.Ensure(ctx, &other, "ghost"); err == nil {
		t.Fatal("Ensure of a service edgeseal-unseal's config does not have succeeded")
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, path string) {
	t.Helper()
	for range 200 {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", path)
}

// A token the provider replaced but could not revoke (Vault was restarting)
// stays pending in the ledger; edgeseal-unseal revokes it the next time it
// applies the config. Before, it stayed valid and nobody could find it again.
func TestApplyConfigRevokesAReplacedTokenStillPending(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	b := d.run(ctx)
	t.Log("Given a service token the provider replaced, whose revocation did not go through")
	c := d.vault.Client(t)
	tc, _ := c.Clone()
	tc.SetToken(d.issuingToken())
	old, err := tc.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{vaultlayout.ServicePolicyPrefix + "app-one"}}, vaultlayout.ServiceRole)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(d.paths.Ledger, b.BootID, fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	l.Swap("app-one", ledger.Entry{Accessor: old.Auth.Accessor})
	l.Swap("app-one", ledger.Entry{Accessor: "a-newer-token"})
	if p := l.PendingRevocations(); len(p) != 1 || !tokenWorks(c, old.Auth.ClientToken) {
		t.Fatalf("pending %v; the old token works %v", p, tokenWorks(c, old.Auth.ClientToken))
	}
	writeConfig(t, d, d.cfg)
	t.Log("When edgeseal-unseal applies the config")
	if err := b.ApplyConfig(ctx); err != nil {
		t.Fatal(err)
	}
	t.Log("Then the replaced token is revoked")
	if tokenWorks(c, old.Auth.ClientToken) {
		t.Error("the replaced token still works")
	}
}

func writeConfig(t *testing.T, d *device, cfg *config.Config) {
	t.Helper()
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(d.paths.ConfigFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.paths.ConfigFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
