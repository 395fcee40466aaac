//go:build integration

package secretstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/secretstore"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// device is one simulated device: a real Vault server and edgeseal's state, all
// under temporary directories, without systemd (the container tests add that).
type device struct {
	t      *testing.T
	cfg    *config.Config
	paths  paths.Paths
	vault  *testbed.VaultServer
	sealer seal.Sealer
	boot   int
}

func newDevice(t *testing.T, edit func(*config.Config)) *device {
	t.Helper()
	cfg := config.Default()
	cfg.Seal.Method = "none"
	cfg.Seal.AllowInsecureNone = true
	cfg.Services = []config.Service{
		{Name: "app-one", SharedRead: []string{"telemetry"}},
		{Name: "app-two", SharedWrite: []string{"telemetry"}},
	}
	if edit != nil {
		edit(cfg)
	}
	root := t.TempDir()
	p := paths.New(root)
	cfg.Vault.StoragePath = filepath.Join(root, "var/lib/edgeseal-vault/data")
	if err := os.MkdirAll(filepath.Dir(cfg.Vault.StoragePath), 0o700); err != nil {
		t.Fatal(err)
	}
	vs := testbed.StartVault(t, cfg)
	// edgeseal-unseal finds Vault's config and admin socket where the pki
	// step put them.
	p.VaultConfDir, p.VaultConfig, p.VaultTCP, p.VaultTCPHeld, p.VaultAdmin =
		vs.Paths.VaultConfDir, vs.Paths.VaultConfig, vs.Paths.VaultTCP, vs.Paths.VaultTCPHeld, vs.Paths.VaultAdmin
	sealer, err := seal.New(cfg.Seal, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	return &device{t: t, cfg: cfg, paths: p, vault: vs, sealer: sealer}
}

// bootstrap returns the boot sequence of the device's current boot.
func (d *device) bootstrap(onStep func(secretstore.Step) error) *secretstore.Bootstrap {
	c := d.vault.AdminClient(d.t)
	return &secretstore.Bootstrap{
		Config: d.cfg, Paths: d.paths, Sealer: d.sealer, Client: c, Vault: d.vault,
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnStep:      onStep,
		BootID:      "boot-" + string(rune('a'+d.boot)),
		TokendOwner: fsutil.Self,
	}
}

// reboot simulates a reboot: Vault restarts (sealed), tmpfs is emptied.
func (d *device) reboot() {
	d.t.Helper()
	d.boot++
	if err := d.vault.Restart(context.Background()); err != nil {
		d.t.Fatal(err)
	}
	if err := os.RemoveAll(d.paths.RunDir); err != nil {
		d.t.Fatal(err)
	}
}

func (d *device) run(ctx context.Context) *secretstore.Bootstrap {
	d.t.Helper()
	b := d.bootstrap(nil)
	if err := b.Run(ctx); err != nil {
		d.t.Fatalf("boot %d: %v", d.boot, err)
	}
	return b
}

// rootClient returns a client with a fresh root token, as `edgeseal
// root-token` makes one: a child of the admin token, which the sealed key
// opens.
func (d *device) rootClient(ctx context.Context) *api.Client {
	d.t.Helper()
	blob, err := os.ReadFile(d.paths.SealedKey)
	if err != nil {
		d.t.Fatal(err)
	}
	key, err := d.sealer.Unseal(ctx, blob)
	if err != nil {
		d.t.Fatal(err)
	}
	admin, err := secretstore.OpenAdminToken(ctx, d.paths.AdminToken, key)
	if err != nil {
		d.t.Fatal(err)
	}
	c := d.vault.Client(d.t)
	c.SetToken(admin)
	s, err := c.Auth().Token().CreateOrphan(&api.TokenCreateRequest{Policies: []string{"root"}, TTL: "10m"})
	if err != nil {
		d.t.Fatal(err)
	}
	c.SetToken(s.Auth.ClientToken)
	d.t.Cleanup(func() { c.Auth().Token().RevokeSelf("") })
	return c
}

func (d *device) issuingToken() string {
	d.t.Helper()
	data, err := os.ReadFile(d.paths.IssuingToken)
	if err != nil {
		d.t.Fatal(err)
	}
	var s api.Secret
	if err := json.Unmarshal(data, &s); err != nil || s.Auth == nil || s.Auth.ClientToken == "" {
		d.t.Fatalf("token-issuing token file is not a Vault auth response: %v", err)
	}
	return s.Auth.ClientToken
}

func tokenWorks(c *api.Client, token string) bool {
	cc, _ := c.Clone()
	cc.SetToken(token)
	_, err := cc.Auth().Token().LookupSelf()
	return err == nil
}

func rootAccessors(t *testing.T, c *api.Client) []string {
	return testbed.RootAccessors(t, c)
}

func TestFirstBootInitialisesSealsAndSetsUpVault(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	var steps []secretstore.Step
	b := d.bootstrap(func(s secretstore.Step) error { steps = append(steps, s); return nil })
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(steps, secretstore.FirstBootSteps) {
		t.Errorf("steps = %v, want %v", steps, secretstore.FirstBootSteps)
	}
	st, err := d.vault.Client(t).Sys().SealStatus()
	if err != nil || st.Sealed || !st.Initialized {
		t.Fatalf("Vault after first boot: %+v, %v", st, err)
	}
	fi, err := os.Stat(d.paths.SealedKey)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sealed key: %v, mode %v", err, fi)
	}
	if _, err := os.Stat(d.paths.InitMarker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("init marker left behind: %v", err)
	}
	fi, err = os.Stat(d.paths.TokendDir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("tokend dir: %v %v", err, fi)
	}
	c := d.rootClient(ctx)
	tok := d.issuingToken()
	s, err := c.Auth().Token().Lookup(tok)
	if err != nil {
		t.Fatal(err)
	}
	pols, _ := s.TokenPolicies()
	if !slices.Equal(pols, []string{"default", vaultlayout.TokendPolicy}) {
		t.Errorf("token-issuing token policies = %v", pols)
	}
	if orphan, _ := s.Data["orphan"].(bool); !orphan {
		t.Errorf("token-issuing token is not an orphan")
	}
	// Two root tokens: the admin token (init's, sealed under the unseal key)
	// and the one this test made.
	if roots := rootAccessors(t, c); len(roots) != 2 {
		t.Errorf("root tokens after first boot (besides the test's): %d, want the admin token alone", len(roots)-1)
	}
	if fi, err := os.Stat(d.paths.AdminToken); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin token: %v %v", err, fi)
	}
}

func TestRebootUnsealsRevokesLastBootsTokensAndIssuesANewOne(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	d.run(ctx)
	first := d.issuingToken()
	// The token provider would issue service tokens with the token-issuing token.
	c := d.vault.Client(t)
	tc, _ := c.Clone()
	tc.SetToken(first)
	svc, err := tc.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{vaultlayout.ServicePolicyPrefix + "app-one"}}, vaultlayout.ServiceRole)
	if err != nil {
		t.Fatalf("token-issuing token cannot create a service token: %v", err)
	}
	d.reboot()
	d.run(ctx)
	if tokenWorks(c, first) {
		t.Error("last boot's token-issuing token still works")
	}
	if tokenWorks(c, svc.Auth.ClientToken) {
		t.Error("last boot's service token still works")
	}
	if second := d.issuingToken(); second == first || !tokenWorks(c, second) {
		t.Error("this boot has no new working token-issuing token")
	}
}

func TestRestartWithinABootOnlyUnseals(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	d.run(ctx)
	tok := d.issuingToken()
	if err := d.vault.Restart(ctx); err != nil { // Vault restarts, same boot
		t.Fatal(err)
	}
	var steps []secretstore.Step
	b := d.bootstrap(func(s secretstore.Step) error { steps = append(steps, s); return nil })
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(steps, []secretstore.Step{secretstore.StepUnsealed}) {
		t.Errorf("steps = %v, want only %s", steps, secretstore.StepUnsealed)
	}
	if d.issuingToken() != tok || !tokenWorks(d.vault.Client(t), tok) {
		t.Error("a restart within the boot replaced or revoked the token-issuing token")
	}
}

func TestWatchUnsealsVaultAgainAfterItRestarts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newDevice(t, nil)
	b := d.run(ctx)
	done := make(chan struct{})
	go func() { b.Watch(ctx, 100*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	for i := range 2 {
		d.vault.Kill(t)
		d.vault.Start(t)
		start := time.Now()
		for {
			st, err := d.vault.Client(t).Sys().SealStatus()
			if err == nil && !st.Sealed {
				t.Logf("restart %d: unsealed %v after Vault answered", i+1, time.Since(start).Round(time.Millisecond))
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("restart %d: Vault still sealed 10s after it came back", i+1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestCrashBetweenInitAndSealedWriteIsRecoveredByNextBoot(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	// The init response (the only copy of the key) is lost at this step.
	crash := errors.New("crash")
	func() {
		defer func() {
			if r := recover(); r != crash {
				t.Fatalf("no crash at %s: %v", secretstore.StepInitialized, r)
			}
		}()
		d.bootstrap(func(s secretstore.Step) error {
			if s == secretstore.StepInitialized {
				panic(crash)
			}
			return nil
		}).Run(ctx)
	}()
	if _, err := os.Stat(d.paths.SealedKey); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sealed key exists after a crash before it was written: %v", err)
	}
	d.reboot()
	d.run(ctx)
	st, err := d.vault.Client(t).Sys().SealStatus()
	if err != nil || st.Sealed {
		t.Fatalf("Vault after recovery: %+v %v", st, err)
	}
	aside, _ := filepath.Glob(d.cfg.Vault.StoragePath + ".abandoned-*")
	if len(aside) != 1 {
		t.Errorf("abandoned storage set aside: %v, want one directory", aside)
	}
}

func TestRefusesWhenStorageIsLostAndKeepsTheSealedKey(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	d.run(ctx)
	blob, _ := os.ReadFile(d.paths.SealedKey)
	d.vault.Kill(t)
	if err := os.RemoveAll(d.cfg.Vault.StoragePath); err != nil {
		t.Fatal(err)
	}
	d.vault.Start(t)
	err := d.bootstrap(nil).Run(ctx)
	if !errors.Is(err, secretstore.ErrStorageLost) {
		t.Fatalf("err = %v, want ErrStorageLost", err)
	}
	if after, _ := os.ReadFile(d.paths.SealedKey); string(after) != string(blob) {
		t.Error("the sealed key changed")
	}
}

func TestRefusesAVaultInitialisedByOthers(t *testing.T) {
	d := newDevice(t, nil)
	if _, err := d.vault.Client(t).Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1}); err != nil {
		t.Fatal(err)
	}
	err := d.bootstrap(nil).Run(context.Background())
	if !errors.Is(err, secretstore.ErrForeignVault) {
		t.Fatalf("err = %v, want ErrForeignVault", err)
	}
}

func TestCorruptSealedKeyIsReportedAndLeftAlone(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	d.run(ctx)
	d.reboot()
	garbage := []byte(`{"version":1,"method":"none","secret":"!!"}`)
	if err := os.WriteFile(d.paths.SealedKey, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	err := d.bootstrap(nil).Run(ctx)
	if !errors.Is(err, seal.ErrCorrupt) {
		t.Fatalf("err = %v, want seal.ErrCorrupt", err)
	}
	if after, _ := os.ReadFile(d.paths.SealedKey); string(after) != string(garbage) {
		t.Error("the sealed key was rewritten")
	}
}

func TestStrayRootTokensAreRevokedAtBoot(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	d.run(ctx)
	c := d.rootClient(ctx)
	stray := c.Token()
	d.reboot()
	d.run(ctx)
	if tokenWorks(d.vault.Client(t), stray) {
		t.Error("a root token from before the reboot still works")
	}
}

func TestServicePoliciesConfineEachServiceToItsPaths(t *testing.T) {
	for _, kv := range []int{1, 2} {
		t.Run("kv"+string(rune('0'+kv)), func(t *testing.T) {
			ctx := context.Background()
			d := newDevice(t, func(c *config.Config) { c.Vault.KVVersion = kv })
			d.run(ctx)
			c := d.vault.Client(t)
			issuer, _ := c.Clone()
			issuer.SetToken(d.issuingToken())
			token := func(svc string) *api.Client {
				s, err := issuer.Auth().Token().CreateWithRole(&api.TokenCreateRequest{
					Policies: []string{vaultlayout.ServicePolicyPrefix + svc}}, vaultlayout.ServiceRole)
				if err != nil {
					t.Fatal(err)
				}
				cc, _ := c.Clone()
				cc.SetToken(s.Auth.ClientToken)
				return cc
			}
			one, two := token("app-one"), token("app-two")
			write := func(cl *api.Client, path string) error {
				if kv == 1 {
					return cl.KVv1("secret").Put(ctx, path, map[string]any{"v": "x"})
				}
				_, err := cl.KVv2("secret").Put(ctx, path, map[string]any{"v": "x"})
				return err
			}
			read := func(cl *api.Client, path string) error {
				if kv == 1 {
					_, err := cl.KVv1("secret").Get(ctx, path)
					return err
				}
				_, err := cl.KVv2("secret").Get(ctx, path)
				return err
			}
			cases := []struct {
				name string
				err  error
				ok   bool
			}{
				{"a service writes its own path", write(one, "edgeseal/app-one/db"), true},
				{"a service reads its own path", read(one, "edgeseal/app-one/db"), true},
				{"a service cannot read another's path", read(two, "edgeseal/app-one/db"), false},
				{"a service cannot write another's path", write(one, "edgeseal/app-two/db"), false},
				{"a shared writer writes the group", write(two, "edgeseal/shared/telemetry/k"), true},
				{"a shared reader reads the group", read(one, "edgeseal/shared/telemetry/k"), true},
				{"a shared reader cannot write the group", write(one, "edgeseal/shared/telemetry/k"), false},
				{"a service cannot create tokens", func() error {
					_, err := one.Auth().Token().Create(&api.TokenCreateRequest{})
					return err
				}(), false},
			}
			for _, tc := range cases {
				if (tc.err == nil) != tc.ok {
					t.Errorf("%s: err = %v", tc.name, tc.err)
				}
			}
		})
	}
}

func TestTokenIssuingTokenCannotEscalate(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	d.run(ctx)
	issuer, _ := d.vault.Client(t).Clone()
	issuer.SetToken(d.issuingToken())
	if _, err := issuer.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{"root"}}, vaultlayout.ServiceRole); err == nil {
		t.Error("the token-issuing token created a root token through the service role")
	}
	if _, err := issuer.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{vaultlayout.TokendPolicy}}, vaultlayout.ServiceRole); err == nil {
		t.Error("the token-issuing token created another token-issuing token")
	}
	if err := issuer.Sys().PutPolicy(vaultlayout.ServicePolicyPrefix+"evil", `path "*" { capabilities = ["sudo","read"] }`); err == nil {
		t.Error("the token-issuing token wrote a policy")
	}
	if _, err := issuer.KVv2("secret").Get(ctx, "edgeseal/app-one/db"); err == nil || !isForbidden(err) {
		t.Errorf("the token-issuing token read a service secret: %v", err)
	}
	// Its sudo on the service role's create path: what sudo would add.
	long, err := issuer.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{vaultlayout.ServicePolicyPrefix + "app-one"}, Period: "8760h"}, vaultlayout.ServiceRole)
	if err != nil {
		t.Fatalf("a service token asking for a year's period: %v", err)
	}
	if want := int(d.cfg.Tokens.ServicePeriod.D().Seconds()); long.Auth.LeaseDuration > want {
		t.Errorf("a service token asking for a year's period got %d s; the role's period (%d s) bounds it", long.Auth.LeaseDuration, want)
	}
	if _, err := issuer.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{vaultlayout.ServicePolicyPrefix + "app-one"}}); err == nil {
		t.Error("the token-issuing token created a token outside the service role")
	}
	if _, err := issuer.Logical().Write("auth/token/create-orphan", map[string]any{"policies": "default"}); err == nil {
		t.Error("the token-issuing token created an orphan token")
	}
}

func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

// A damaged admin token is not a damaged unseal key: the next boot makes a new
// one with the unseal key (generate-root) and goes on.
func TestADamagedAdminTokenIsReplacedAtTheNextBoot(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, nil)
	d.run(ctx)
	d.reboot()
	if err := os.WriteFile(d.paths.AdminToken, []byte(`{"version":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	d.run(ctx)
	if roots := rootAccessors(t, d.rootClient(ctx)); len(roots) != 2 {
		t.Errorf("root tokens after the admin token was replaced (besides the test's): %d, want the new admin token alone", len(roots)-1)
	}
}
