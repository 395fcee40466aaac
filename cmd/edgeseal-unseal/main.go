// Command edgeseal-unseal is edgeseal-unseal.service: it initialises Vault on first
// boot, unseals it at every boot, sets it up from the config, hands the token
// provider this boot's token-issuing token, reports READY=1, and then stays to
// unseal Vault again whenever it restarts.
//
// Exit status (see RestartPreventExitStatus= in edgeseal-unseal.service): 1 an
// error a restart may cure; 2 bad usage or config (also a TPM whose NV storage
// cannot take the sealed key: full, or a configured handle another's; a TPM PIN
// file others may read or that is a symlink); 10 the
// sealed key is corrupt;
// 11 the sealed key belongs to another device or key; 12 the key material hook
// failed; 13 Vault's storage was lost; 14 Vault was initialised without edgeseal;
// 15 the PCR values are not approved; 16 the TPM's or the token's PIN is wrong;
// 17 the TPM is in dictionary-attack lockout or the token's PIN is locked; 18
// there is no TPM, or no PKCS#11 token of the configured label or serial; 19
// the server is not a supported release of OpenBao or HashiCorp Vault; 20 the
// token has no key of seal.pkcs11.key_label; 21 the PKCS#11 module or helper
// failed otherwise; 22 the sealed key is older than the TPM's rollback counter
// (seal.tpm2.storage nv: an old copy put back).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/recovery"
	"github.com/edgeseal/edgeseal/internal/sdunit"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/secretstore"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
)

var usage = `Usage: edgeseal-unseal [--config FILE] [--server BIN] [--vault-unit UNIT]

Runs as edgeseal-unseal.service (Type=notify). On the first boot it initialises
the Vault server with one key share and seals the unseal key (seal.method in the
config) to /var/lib/edgeseal/unseal-key.sealed before anything depends on it. At
every boot it unseals Vault, sets up the secrets engine, policies and token roles
from the config, revokes the previous boot's tokens, writes this boot's
token-issuing token to /run/edgeseal/tokend/, revokes its root token and reports
READY=1. It then keeps Vault unsealed: when Vault restarts, it unseals it again.

With --server, before it touches Vault it runs ` + "`BIN version`" + ` and refuses (exit
status 19) a BIN that does not run or is not a supported release
(` + vaultbin.SupportedList() + `), and a running server that reports an
unsupported release.

Exit status: 0 stopped; 1 an error a restart may cure; 2 bad usage or config;
10 the sealed key is corrupt; 11 it belongs to another device or key; 12 the
key material hook failed; 13 Vault's storage was lost; 14 Vault was initialised
without edgeseal; 15 PCR values not approved; 16 wrong TPM or token PIN; 17 TPM
lockout or token PIN locked; 18 no TPM or no PKCS#11 token; 19 the server does
not run or is not supported (a server too slow to answer is 1); 20 no such key
in the PKCS#11 token; 21 the PKCS#11 module or helper failed.

Options:
`

func main() {
	os.Exit(run())
}

type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func run() int {
	started := time.Now() // the timing line's prepare_ms counts from here
	log := journal.New(os.Stderr)
	// The unseal key lives in this process: no core dumps, no ptrace by peers.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		log.Warn("cannot make the process non-dumpable", "error", err)
	}
	fs := flag.NewFlagSet("edgeseal-unseal", flag.ContinueOnError)
	root := fs.String("root", "/", "prefix of every path (tests)")
	cfgPath := fs.String("config", "", "config file (default /etc/edgeseal/edgeseal.yaml)")
	server := fs.String("server", "", "the server binary the Vault unit runs; checked to be a supported OpenBao or Vault (the units pass it)")
	vaultUnit := fs.String("vault-unit", "", "systemd unit of the Vault server, restarted over D-Bus (default edgeseal-vault.service; in the snap, its vault app's processes are signalled instead)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	p := paths.Detect(*root)
	if *vaultUnit == "" {
		*vaultUnit = "edgeseal-vault.service"
		if p.SnapInstance != "" {
			*vaultUnit = "snap." + p.SnapInstance + ".vault.service"
		}
	}
	err := serve(ctx, log, p, *cfgPath, *server, *vaultUnit, started)
	if err == nil {
		return 0
	}
	daemon.SdNotify(false, "STATUS=failed: "+firstLine(err.Error()))
	fmt.Fprintf(os.Stderr, "edgeseal-unseal: %v\n", err)
	return exitCode(err)
}

func serve(ctx context.Context, log *journal.Logger, p paths.Paths, cfgPath, server, vaultUnit string, started time.Time) error {
	// systemctl reload: apply the config now (it is applied when its file
	// changes anyway). Caught from the start: a reload while the setup runs
	// must not end the process (SIGHUP's default).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if cfgPath == "" {
		cfgPath = p.ConfigFile
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return exitError{2, err}
	}
	// Before anything reaches the server: nothing initialised by or for a
	// server edgeseal does not support.
	var serverInfo *vaultbin.Info
	var prelude []secretstore.Lap
	if server != "" {
		t0 := time.Now()
		info, cached, err := vaultbin.IdentifyCached(ctx, filepath.Join(p.StateDir, vaultbin.CacheName), server)
		if err != nil {
			// 19 (final) for ErrUnsupported; 1 (restarted) for no answer in time.
			return err
		}
		prelude = append(prelude, secretstore.Lap{Phase: "identify_ms", Took: time.Since(t0)})
		serverInfo = &info
		log.Info("the secret store server is supported", "server", server, "release", info.String(), "known_binary", cached)
	}
	sealer, err := seal.New(cfg.Seal, func(msg string) { log.Warn(msg) })
	if err != nil {
		return exitError{2, err}
	}
	// Vault's admin socket: init, unseal and setup never go near the TCP
	// listener every local user reaches.
	client, err := vaultclient.New("unix://"+p.VaultAdmin, nil)
	if err != nil {
		return err
	}
	owner, err := lookupOwner(cfg.Tokens.TokendUser)
	if err != nil {
		return exitError{2, err}
	}
	var recipient *recovery.Recipient
	if cfg.Seal.RecoveryKey != "" {
		data, err := os.ReadFile(cfg.Seal.RecoveryKey)
		if err != nil {
			return exitError{2, fmt.Errorf("cannot read the recovery key (seal.recovery_key): %w", err)}
		}
		if recipient, err = recovery.ParseRecipient(data); err != nil {
			return exitError{2, fmt.Errorf("%s (seal.recovery_key): %w", cfg.Seal.RecoveryKey, err)}
		}
	}
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return fmt.Errorf("cannot read boot id: %w", err)
	}
	// Vault's restart (with its TCP listener at a first boot; recovering an
	// interrupted one): systemd's, over D-Bus. In the snap, strict
	// confinement grants no call on systemd's API, and `snapctl restart`
	// would wait for the change that is starting this process: the vault
	// app's own processes are signalled as its stop-mode says (sigint), and
	// its restart-condition (always) brings it back.
	var vaultService secretstore.VaultService = sdunit.Unit{Name: vaultUnit}
	if p.SnapInstance != "" {
		vaultService = sdunit.Signalled{Name: "snap." + p.SnapInstance + ".vault.service", Signal: syscall.SIGINT}
	}
	b := &secretstore.Bootstrap{
		Config:      cfg,
		Paths:       p,
		Sealer:      sealer,
		Client:      client,
		Vault:       vaultService,
		Log:         log.Logger,
		Status:      func(s string) { daemon.SdNotify(false, "STATUS="+s) },
		OnStep:      testHook(log, p),
		BootID:      strings.TrimSpace(string(bootID)),
		TokendOwner: owner,
		Recovery:    recipient,
		ConfigFile:  cfgPath,
		Server:      serverInfo,
		Prelude:     prelude,
	}
	defer b.Forget()
	// What came before Run but the version check: flags, config, sealer,
	// owner, recovery key, boot id.
	prepared := time.Since(started)
	for _, l := range prelude {
		prepared -= l.Took
	}
	b.Prelude = append(b.Prelude, secretstore.Lap{Phase: "prepare_ms", Took: prepared})
	return b.Serve(ctx, secretstore.ServeOptions{
		Final:  func(err error) bool { return exitCode(err) != 1 },
		Notify: func(state string) { daemon.SdNotify(false, state) },
		Reload: hup,
	})
}

func lookupOwner(name string) (fsutil.Owner, error) {
	if name == "root" {
		// Always uid 0, even where there is no /etc/passwd (the snap's bare base).
		return fsutil.Owner{UID: 0, GID: 0}, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fsutil.Owner{}, fmt.Errorf("cannot find the token provider's user %q (tokens.tokend_user): %w; "+
			"create it with systemd-sysusers (edgeseal ships /usr/lib/sysusers.d/edgeseal.conf)", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return fsutil.Owner{UID: uid, GID: gid}, nil
}

func exitCode(err error) int {
	var ee exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, seal.ErrNVFull), errors.Is(err, seal.ErrNVInUse), errors.Is(err, fsutil.ErrUnsafeSecret):
		return 2
	case errors.Is(err, seal.ErrCorrupt):
		return 10
	case errors.Is(err, seal.ErrWrongDevice), errors.Is(err, seal.ErrWrongMethod):
		return 11
	case errors.Is(err, seal.ErrHook):
		return 12
	case errors.Is(err, secretstore.ErrStorageLost):
		return 13
	case errors.Is(err, secretstore.ErrForeignVault):
		return 14
	case errors.Is(err, seal.ErrPCRMismatch):
		return 15
	case errors.Is(err, seal.ErrWrongPIN):
		return 16
	case errors.Is(err, seal.ErrLockout):
		return 17
	case errors.Is(err, seal.ErrTPMAbsent), errors.Is(err, seal.ErrTokenAbsent):
		return 18
	case errors.Is(err, vaultbin.ErrUnsupported):
		return 19
	case errors.Is(err, seal.ErrKeyAbsent):
		return 20
	case errors.Is(err, seal.ErrPKCS11):
		return 21
	case errors.Is(err, seal.ErrRolledBack):
		return 22
	}
	return 1
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
