package secretstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/recovery"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/strictjson"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
)

// Errors a caller (and the unit's RestartPreventExitStatus=) acts on: retrying will
// not help, a person must look.
var (
	// ErrStorageLost: Vault is not initialised, yet a sealed unseal key exists.
	ErrStorageLost = errors.New("Vault storage was lost or replaced")
	// ErrForeignVault: Vault is initialised, but not by edgeseal on this device.
	ErrForeignVault = errors.New("Vault was initialised without edgeseal")
	// ErrSealMismatch: the sealer's blob does not give back the key it sealed.
	ErrSealMismatch = errors.New("sealed key does not unseal to the key it sealed")
)

// VaultService restarts the Vault server process (its systemd unit).
type VaultService interface {
	Restart(ctx context.Context) error
}

// Bootstrap runs the secret store's boot sequence. Fields are inputs; Run fills the
// unseal key it keeps for Watch.
type Bootstrap struct {
	Config      *config.Config
	Paths       paths.Paths
	Sealer      seal.Sealer
	Client      *api.Client
	Vault       VaultService // restarts Vault to recover an interrupted first init
	Log         *slog.Logger
	Status      func(string)     // one line for systemd's STATUS=; may be nil
	OnStep      func(Step) error // called after each durable step (tests inject crashes and failures); may be nil
	BootID      string
	TokendOwner fsutil.Owner        // owner of the token-issuing token
	Recovery    *recovery.Recipient // if set, a recovery copy of the key is kept for it
	// Server is what the server's binary said it is (vaultbin.Identify), if
	// known: the running server must report a supported release of the same
	// kind, else Run returns an error wrapping vaultbin.ErrUnsupported before
	// it initialises or unseals anything.
	Server *vaultbin.Info

	// ConfigFile is where the config was loaded from (paths.ConfigFile if
	// empty): the policy sync reads it again.
	ConfigFile string

	// Prelude is the caller's own work before Run (edgeseal-unseal: the
	// server's version check), put first on Run's timing line.
	Prelude []Lap

	unsealKey []byte
	status    Status
	clock     *bootClock // this Run's phases (timing.go)
	// setupCounts are what setup wrote, for the timing line.
	setupCounts []any

	supervisorMu sync.Mutex
	supervisor   *api.Client // the supervisor token's client; see supervisor.go
	policyMu     sync.Mutex  // one policy write at a time
}

// initMarker is written, durably, before Vault's init is called. If a crash loses
// the init response (the only copy of the unseal key) the marker tells the next
// boot that this Vault was initialised by an interrupted first boot, holds nothing,
// and may be set aside and initialised again.
type initMarker struct {
	Version     int       `json:"version"`
	Started     time.Time `json:"started"`
	StoragePath string    `json:"storage_path"`
}

// bootDone records, in tmpfs, that this boot's setup is done: a restart of the
// unseal service within the same boot only unseals, it does not revoke tokens.
type bootDone struct {
	BootID   string    `json:"boot_id"`
	Finished time.Time `json:"finished"`
}

// maxBootDone bounds the record of bootDone read back.
const maxBootDone = 4 << 10

func (b *Bootstrap) say(msg string, args ...any) {
	b.Log.Info(msg, args...)
}

func (b *Bootstrap) setStatus(line string) {
	if b.Status != nil {
		b.Status(line)
	}
	b.status.Phase = line
	b.writeStatus()
}

// Run takes Vault from started to unsealed and set up. It returns when this boot's
// work is done; the caller then reports readiness and calls Watch. b.Client is
// a client of Vault's admin socket: no unprivileged process reaches it, and
// every request edgeseal makes without a token (init, unseal) goes there.
func (b *Bootstrap) Run(ctx context.Context) error {
	b.status = Status{Version: 1, Sealer: b.Sealer.Method(), VaultAddr: b.Config.VaultAddr(), BootID: b.BootID}
	if b.Server != nil {
		b.status.Server = b.Server.Kind.Name()
	}
	if err := os.MkdirAll(b.Paths.RunDir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", b.Paths.RunDir, err)
	}
	if err := os.MkdirAll(b.Paths.StateDir, 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %w", b.Paths.StateDir, err)
	}
	b.clock = newBootClock()
	b.setStatus("waiting for Vault")
	if err := b.waitVault(ctx); err != nil {
		return err
	}
	b.clock.lap(PhaseWaitServer)
	key, err := b.obtainKey(ctx)
	if err != nil {
		return err
	}
	b.keep(key)
	if err := b.ensureRecoveryCopy(); err != nil {
		return err
	}
	if err := b.listenOnTCP(ctx); err != nil {
		return err
	}
	if err := b.unseal(ctx); err != nil {
		return err
	}
	b.clock.lap(PhaseUnsealServer)
	if err := b.step(ctx, StepUnsealed); err != nil {
		return err
	}

	if b.alreadyDoneThisBoot() {
		b.say("this boot's setup is already done (the unseal service restarted): Vault is unsealed; making a new supervisor token")
		if err := b.refreshSupervisor(ctx); err != nil {
			return err
		}
		b.clock.lap(PhaseTokens)
		b.setStatus("Vault unsealed and set up")
		b.logTiming()
		return nil
	}
	c, err := b.adminClient(ctx)
	if err != nil {
		return err
	}
	defer c.ClearToken()
	b.clock.lap(PhaseAdminToken)
	if err := b.step(ctx, StepAdminToken); err != nil {
		return err
	}

	b.setStatus("setting up Vault: secrets engine, policies, token roles")
	if err := b.setup(ctx, c); err != nil {
		return err
	}
	b.clock.lap(PhaseSetup)
	b.setStatus("revoking the previous boot's tokens")
	if err := b.revokeStale(ctx, c); err != nil {
		return err
	}
	b.clock.lap(PhaseRevoke)
	if err := b.step(ctx, StepOldTokensRevoked); err != nil {
		return err
	}
	b.setStatus("creating this boot's token-issuing token")
	if err := b.issueTokendToken(ctx, c); err != nil {
		return err
	}
	if err := b.step(ctx, StepIssuingTokenWritten); err != nil {
		return err
	}
	if err := b.issueSupervisorToken(ctx, c); err != nil {
		return err
	}
	if err := b.step(ctx, StepSupervisorToken); err != nil {
		return err
	}

	data, _ := json.Marshal(bootDone{BootID: b.BootID, Finished: time.Now().UTC()})
	if err := fsutil.WriteFileAtomic(b.Paths.BootDone, data, 0o644, fsutil.Self); err != nil {
		return err
	}
	b.clock.lap(PhaseTokens)
	b.setStatus("Vault unsealed and set up")
	b.logTiming()
	return nil
}

// logTiming logs this Run's timing line (timing.go): the caller's prelude,
// each phase, what setup wrote, the total and the monotonic clock.
func (b *Bootstrap) logTiming() {
	var attrs []any
	for _, l := range b.Prelude {
		attrs = append(attrs, l.Phase, millis(l.Took))
	}
	attrs = append(attrs, b.clock.line(b.setupCounts...)...)
	b.say("boot timing", attrs...)
}

// listenOnTCP turns Vault's TCP listener on if the pki step held it back (a
// first boot, before the unseal key was sealed; or a pki step that could not
// tell), restarting Vault, which comes back sealed.
func (b *Bootstrap) listenOnTCP(ctx context.Context) error {
	changed, err := vaultconf.EnableTCP(b.Paths)
	if err != nil || !changed {
		return err
	}
	if b.Vault == nil {
		return errors.New("cannot turn on Vault's TCP listener: no way to restart Vault configured")
	}
	b.say("the unseal key is sealed: restarting Vault with its TCP listener for the services", "listen", b.Config.Vault.Listen)
	b.setStatus("restarting Vault with its TCP listener")
	if err := b.Vault.Restart(ctx); err != nil {
		return fmt.Errorf("cannot restart Vault with its TCP listener: %w", err)
	}
	if err := b.waitVault(ctx); err != nil {
		return err
	}
	b.clock.lap(PhaseTCPRestart)
	return nil
}

// vaultWaitLimit bounds the wait for Vault to answer: systemd orders this step
// after Vault is ready, so a longer silence means Vault cannot start.
const vaultWaitLimit = 90 * time.Second

// waitVault waits until Vault answers (it may be restarting).
func (b *Bootstrap) waitVault(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, vaultWaitLimit)
	defer cancel()
	logged := false
	for {
		_, err := b.Client.Sys().InitStatusWithContext(ctx)
		if err == nil {
			return b.checkServer(ctx)
		}
		if !logged {
			b.say("waiting for Vault to answer", "addr", b.Client.Address(), "error", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot reach Vault at %s after %s (see journalctl -u edgeseal-vault.service): %w", b.Client.Address(), vaultWaitLimit, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkServer compares the release the running server reports with what its
// binary said (b.Server), when known.
func (b *Bootstrap) checkServer(ctx context.Context) error {
	if b.Server == nil {
		return nil
	}
	st, err := b.Client.Sys().SealStatusWithContext(ctx)
	if err != nil {
		return fmt.Errorf("cannot read the server's version: %w", err)
	}
	r, same, err := b.Server.Running(st.Version)
	if err != nil {
		return err
	}
	// The kind is now the running server's own (its release is one of that
	// kind's series): the config edgeseal-pki wrote must be of its form.
	if err := vaultconf.CheckRendered(b.Paths, b.Server.Kind); err != nil {
		return err
	}
	if !same {
		b.Log.Warn("the running server is not the release its binary is now: it was started before an upgrade; restart it to run the binary installed",
			"running", r.String(), "binary", b.Server.String())
	}
	return nil
}

// obtainKey returns the unseal key, initialising Vault on first boot.
func (b *Bootstrap) obtainKey(ctx context.Context) ([]byte, error) {
	initialized, err := b.Client.Sys().InitStatusWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot read Vault's init status: %w", err)
	}
	blob, err := os.ReadFile(b.Paths.SealedKey)
	haveBlob := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("cannot read sealed unseal key: %w", err)
	}
	_, err = os.Stat(b.Paths.InitMarker)
	haveMarker := err == nil

	switch {
	case haveBlob:
		if !initialized {
			return nil, fmt.Errorf("Vault at %s is not initialised but %s holds a sealed unseal key: %w; "+
				"edgeseal will not initialise a new Vault over it: restore Vault's storage (%s), or to start afresh move %s away and restart edgeseal-unseal.service",
				b.Client.Address(), b.Paths.SealedKey, ErrStorageLost, b.Config.Vault.StoragePath, b.Paths.SealedKey)
		}
		if haveMarker {
			// A crash came after the key was sealed and before the marker went.
			if err := fsutil.RemoveDurable(b.Paths.InitMarker); err != nil {
				return nil, err
			}
		}
		b.setStatus("unsealing the unseal key (" + b.Sealer.Method() + ")")
		key, err := b.Sealer.Unseal(ctx, blob)
		if err != nil {
			return nil, fmt.Errorf("cannot unseal the Vault unseal key from %s: %w", b.Paths.SealedKey, err)
		}
		b.clock.lap(PhaseUnsealKey)
		return key, nil
	case initialized && !haveMarker:
		return nil, fmt.Errorf("Vault at %s is initialised but there is no sealed unseal key at %s: %w; "+
			"edgeseal cannot unseal it. Restore %s from a backup, or move Vault's storage (%s) away to start afresh",
			b.Client.Address(), b.Paths.SealedKey, ErrForeignVault, b.Paths.SealedKey, b.Config.Vault.StoragePath)
	case initialized && haveMarker:
		if err := b.abandonInterruptedInit(ctx); err != nil {
			return nil, err
		}
	}
	return b.firstInit(ctx)
}

// abandonInterruptedInit sets aside the storage of a Vault whose init response was
// lost in a crash (nobody holds its key and nothing was ever stored in it), then
// restarts Vault on empty storage.
func (b *Bootstrap) abandonInterruptedInit(ctx context.Context) error {
	if b.Vault == nil {
		return errors.New("cannot recover an interrupted first initialisation: no way to restart Vault configured")
	}
	storage := b.Config.Vault.StoragePath
	aside := fmt.Sprintf("%s.abandoned-%d", storage, time.Now().Unix())
	b.Log.Warn("a previous first boot was interrupted after Vault's init and before its key was sealed; "+
		"that Vault holds no data and no one has its key: setting its storage aside and initialising again",
		"storage", storage, "moved_to", aside)
	b.setStatus("recovering an interrupted first initialisation")
	if err := os.Rename(storage, aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot set aside Vault storage %s: %w", storage, err)
	}
	if err := fsutil.SyncDir(filepath.Dir(storage)); err != nil {
		return err
	}
	if err := b.Vault.Restart(ctx); err != nil {
		return fmt.Errorf("cannot restart Vault after setting its storage aside: %w", err)
	}
	if err := b.waitVault(ctx); err != nil {
		return err
	}
	initialized, err := b.Client.Sys().InitStatusWithContext(ctx)
	if err != nil {
		return fmt.Errorf("cannot read Vault's init status: %w", err)
	}
	if initialized {
		return fmt.Errorf("cannot recover an interrupted first initialisation: Vault is still initialised after its storage %s was set aside; is vault.storage_path right?", storage)
	}
	return nil
}

// firstInit initialises Vault and seals its unseal key before anything can depend
// on it, and keeps init's root token as the admin token. The marker makes a
// crash between init and the sealed write recoverable. Vault's TCP listener is
// off until the key is sealed (vaultconf), so no other process can init it first.
func (b *Bootstrap) firstInit(ctx context.Context) ([]byte, error) {
	b.setStatus("first boot: initialising Vault")
	m, _ := json.Marshal(initMarker{Version: 1, Started: time.Now().UTC(), StoragePath: b.Config.Vault.StoragePath})
	if err := fsutil.WriteFileAtomic(b.Paths.InitMarker, m, 0o600, fsutil.Self); err != nil {
		return nil, err
	}
	if err := b.step(ctx, StepInitMarker); err != nil {
		return nil, err
	}
	resp, err := b.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return nil, fmt.Errorf("cannot initialise Vault: %w", err)
	}
	if len(resp.KeysB64) != 1 || resp.RootToken == "" {
		return nil, fmt.Errorf("cannot initialise Vault: expected 1 key share and a root token, got %d shares", len(resp.KeysB64))
	}
	key, err := base64.StdEncoding.DecodeString(resp.KeysB64[0])
	if err != nil {
		return nil, fmt.Errorf("cannot decode Vault's unseal key: %w", err)
	}
	// Vault's file storage writes without fsync: its init must be on disk
	// before the key that opens it is sealed and the marker goes. Else a power
	// cut in the next half minute (the kernel's writeback delay) leaves a
	// sealed key for a Vault that is not initialised, which the next boot
	// refuses as lost storage (exit 13) and a person must clear up; the
	// power-cut test (tests/vm/powercut.sh) found it.
	if err := fsutil.SyncFS(b.Config.Vault.StoragePath); err != nil {
		return nil, fmt.Errorf("cannot make Vault's init durable: %w", err)
	}
	b.clock.lap(PhaseInit)
	if err := b.step(ctx, StepInitialized); err != nil {
		return nil, err
	}
	b.say("initialised Vault with one key share; sealing the unseal key", "sealer", b.Sealer.Method())

	b.setStatus("first boot: sealing the unseal key (" + b.Sealer.Method() + ")")
	blob, err := b.Sealer.Seal(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("cannot seal the Vault unseal key: %w", err)
	}
	// Prove the blob opens before it becomes the only way into Vault: a sealer whose
	// key material is not stable (a hook printing a fresh value each run) is caught
	// now, while the marker still lets the next boot start over.
	back, err := b.Sealer.Unseal(ctx, blob)
	if err != nil || !bytes.Equal(back, key) {
		clear(back)
		return nil, fmt.Errorf("cannot use seal method %s: %w (%v); is the key material stable across runs?", b.Sealer.Method(), ErrSealMismatch, err)
	}
	clear(back)
	// The admin token before the sealed key: once the key is sealed, the
	// token is there too (a crash between the two leaves the marker, and the
	// next boot starts over).
	b.keep(key)
	if err := b.saveAdminToken(ctx, resp.RootToken); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(b.Paths.SealedKey, blob, 0o600, fsutil.Self); err != nil {
		return nil, err
	}
	b.say("wrote the sealed unseal key", "path", b.Paths.SealedKey)
	if err := b.step(ctx, StepKeySealed); err != nil {
		return nil, err
	}
	if err := fsutil.RemoveDurable(b.Paths.InitMarker); err != nil {
		return nil, err
	}
	if err := b.step(ctx, StepInitDone); err != nil {
		return nil, err
	}
	b.clock.lap(PhaseSealKey)
	return key, nil
}

// ensureRecoveryCopy writes the recovery copy if one is configured and the file
// does not hold one for this recovery key (first boot, a crash before it was
// written, or a new recovery key).
func (b *Bootstrap) ensureRecoveryCopy() error {
	if b.Recovery == nil {
		return nil
	}
	if data, err := os.ReadFile(b.Paths.Recovery); err == nil {
		if fp, err := recovery.RecipientOf(data); err == nil && fp == b.Recovery.Fingerprint() {
			return nil
		}
	}
	blob, err := recovery.Seal(b.Recovery, b.unsealKey)
	if err != nil {
		return fmt.Errorf("cannot make the recovery copy of the unseal key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(b.Paths.Recovery, blob, 0o600, fsutil.Self); err != nil {
		return err
	}
	b.say("wrote the recovery copy of the unseal key", "path", b.Paths.Recovery, "recovery_key_sha256", b.Recovery.Fingerprint())
	return nil
}

func (b *Bootstrap) alreadyDoneThisBoot() bool {
	data, err := fsutil.ReadRegular(b.Paths.BootDone, maxBootDone)
	if err != nil {
		return false
	}
	var d bootDone
	if strictjson.Decode(data, maxBootDone, &d) != nil || d.BootID != b.BootID {
		return false
	}
	_, err = os.Stat(b.Paths.IssuingToken)
	return err == nil
}

// revokeStale revokes every token edgeseal handed out in an earlier boot (all of
// them come from its two roles) and every root token but the admin token c
// carries: a maintenance token of an earlier boot, or one left over by a
// crash, which nobody should hold any more. A token it cannot look up for any
// reason but "gone" fails the boot's setup: it might be a root token.
func (b *Bootstrap) revokeStale(ctx context.Context, c *api.Client) error {
	for _, role := range []string{vaultlayout.ServiceRole, vaultlayout.TokendRole} {
		if err := c.Sys().RevokePrefixWithContext(ctx, "auth/token/create/"+role); err != nil {
			return fmt.Errorf("cannot revoke the previous tokens of role %s: %w", role, err)
		}
	}
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return fmt.Errorf("cannot look up the setup token: %w", err)
	}
	mine, _ := self.TokenAccessor()
	list, err := c.Logical().ListWithContext(ctx, "auth/token/accessors")
	if err != nil {
		return fmt.Errorf("cannot list token accessors: %w", err)
	}
	if list == nil {
		return nil
	}
	keys, _ := list.Data["keys"].([]any)
	revoked := 0
	for _, k := range keys {
		acc, _ := k.(string)
		if acc == "" || acc == mine {
			continue
		}
		s, err := c.Auth().Token().LookupAccessorWithContext(ctx, acc)
		if isInvalidAccessor(err) {
			continue // expired between list and lookup
		}
		if err != nil {
			return fmt.Errorf("cannot look up token accessor %s: %w", acc, err)
		}
		if s == nil {
			return fmt.Errorf("cannot look up token accessor %s: Vault answered nothing", acc)
		}
		pols, _ := s.TokenPolicies()
		if !slices.Contains(pols, "root") {
			continue
		}
		if err := c.Auth().Token().RevokeAccessorWithContext(ctx, acc); err != nil {
			return fmt.Errorf("cannot revoke a stray root token: %w", err)
		}
		revoked++
	}
	b.say("revoked the previous boot's tokens", "stray_root_tokens", revoked)
	return nil
}

// issueTokendToken creates this boot's token-issuing token and writes it, as the
// JSON of Vault's auth response, where only the token provider's user can read it.
func (b *Bootstrap) issueTokendToken(ctx context.Context, c *api.Client) error {
	s, err := c.Auth().Token().CreateWithRoleWithContext(ctx, &api.TokenCreateRequest{
		Policies:    []string{vaultlayout.TokendPolicy},
		DisplayName: "edgeseal-tokend",
		Metadata:    map[string]string{"edgeseal": "token-issuing", "boot_id": b.BootID},
	}, vaultlayout.TokendRole)
	if err != nil {
		return fmt.Errorf("cannot create the token-issuing token: %w", err)
	}
	if err := b.tokendDir(); err != nil {
		return err
	}
	if err := vaultlayout.WriteIssuingToken(b.Paths.IssuingToken, s, b.TokendOwner); err != nil {
		return err
	}
	b.say("wrote this boot's token-issuing token", "path", b.Paths.IssuingToken, "accessor", s.Auth.Accessor)
	return nil
}

// tokendDir makes the token provider's directory (0700, the provider's user),
// or checks the one an earlier run made. It changes a directory only while it
// is still this process's: once given away, a mode change would need
// CAP_FOWNER, which edgeseal-unseal.service does not grant (a rotation would
// fail with EPERM for the rest of the boot).
func (b *Bootstrap) tokendDir() error {
	dir := b.Paths.TokendDir
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cannot create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("cannot check %s: %w", dir, err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || st == nil {
		return fmt.Errorf("cannot use %s for the token-issuing token: not a directory", dir)
	}
	want := b.TokendOwner
	if want == fsutil.Self {
		want = fsutil.Owner{UID: os.Geteuid(), GID: os.Getegid()}
	}
	if int(st.Uid) == want.UID && int(st.Gid) == want.GID && fi.Mode().Perm() == 0o700 {
		return nil
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("cannot use %s for the token-issuing token: owned by uid %d with mode %v, want uid %d and 0700; remove it and restart edgeseal-unseal.service",
			dir, st.Uid, fi.Mode().Perm(), want.UID)
	}
	// The mode first, while the directory is still this process's.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", dir, err)
	}
	if err := os.Chown(dir, want.UID, want.GID); err != nil {
		return fmt.Errorf("cannot give %s to the token provider's user: %w", dir, err)
	}
	return nil
}
