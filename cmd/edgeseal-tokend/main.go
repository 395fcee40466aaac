// Command edgeseal-tokend is edgeseal-tokend.service, the token provider: started
// by edgeseal-tokend.socket, it gives each local service the config names its own
// Vault token, and refuses everyone else. It exits when idle.
//
// Exit status: 0 idle or stopped; 1 an error the next start may cure; 2 bad
// usage or config. The unit has no Restart=: the next connection starts it.
// Before it exits on an error it answers the callers already waiting, so that
// systemd does not start it again at once (see tokend.AnswerWaiting).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/secretstore"
	"github.com/edgeseal/edgeseal/internal/tokend"
)

const usage = `Usage: edgeseal-tokend [--config FILE]

Runs as edgeseal-tokend.service, started by edgeseal-tokend.socket
(/run/edgeseal/tokend.sock) on the first connection; it cannot be run by hand.
For each connection it asks the kernel which process is calling (SO_PEERCRED)
and systemd which unit that process runs in, finds the service of that identity
in the config (services[].units, snap_apps, uids, gids), and answers with a new
Vault token of that service (its previous token is revoked). Anyone the config
does not name is refused, and the refusal is logged. It exits after
tokend.idle_exit without a connection.

Clients: edgeseal token fetch, the Go package
github.com/edgeseal/edgeseal/tokenclient, or a unit's
LoadCredential=vault-token:/run/edgeseal/tokend.sock.

Options:
`

type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func main() {
	log := journal.New(os.Stderr)
	// The token-issuing token lives in this process: no core dumps, no ptrace.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		log.Warn("cannot make the process non-dumpable", "error", err)
	}
	fs := flag.NewFlagSet("edgeseal-tokend", flag.ContinueOnError)
	root := fs.String("root", "/", "prefix of every path (tests)")
	cfgPath := fs.String("config", "", "config file (default /etc/edgeseal/edgeseal.yaml)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, log, paths.Detect(*root), *cfgPath)
	stop()
	if err == nil {
		return
	}
	daemon.SdNotify(false, "STATUS=failed: "+firstLine(err.Error()))
	fmt.Fprintf(os.Stderr, "edgeseal-tokend: %v\n", err)
	var ee exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(1)
}

func run(ctx context.Context, log *journal.Logger, p paths.Paths, cfgPath string) error {
	if cfgPath == "" {
		cfgPath = p.ConfigFile
	}
	ln, err := listener()
	if err != nil {
		return exitError{2, err}
	}
	defer ln.Close()
	err = serve(ctx, log, p, cfgPath, ln)
	if err != nil && ctx.Err() == nil {
		if n := tokend.AnswerWaiting(ln, err); n > 0 {
			log.Warn("told the callers waiting that the provider cannot serve", "callers", n)
		}
	}
	return err
}

func serve(ctx context.Context, log *journal.Logger, p paths.Paths, cfgPath string, ln *net.UnixListener) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return exitError{2, err}
	}
	pool, err := pki.LoadCAPool(p.CACert)
	if err != nil {
		return err
	}
	client, err := secretstore.NewClient(cfg.VaultAddr(), pool)
	if err != nil {
		return err
	}
	// Which unit a caller runs in: systemd says, over D-Bus; in a snap, whose
	// confinement grants no call on systemd's API, the caller's cgroup says,
	// by systemd's own rule (peer.CgroupUnits).
	var units peer.UnitLookup = peer.CgroupUnits{}
	if p.SnapInstance == "" {
		bus, err := sddbus.NewSystemConnectionContext(ctx)
		if err != nil {
			return fmt.Errorf("cannot connect to the system bus (needed to tell which unit a caller runs in): %w", err)
		}
		defer bus.Close()
		units = bus
	}
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return fmt.Errorf("cannot read boot id: %w", err)
	}
	led, err := ledger.Open(p.Ledger, strings.TrimSpace(string(bootID)), fsutil.Self)
	if err != nil {
		return err
	}
	s := &tokend.Server{
		Config:     cfg,
		ConfigFile: cfgPath,
		Paths:      p,
		Vault:      client,
		Resolver:   &peer.Resolver{Units: units},
		Ledger:     led,
		Policies:   &tokend.PolicySync{Applied: p.Policies, Socket: p.SyncSocket},
		Log:        log.Logger,
		BootID:     strings.TrimSpace(string(bootID)),
		Status:     func(line string) { daemon.SdNotify(false, "STATUS="+line) },
		Ready: func() {
			daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS=serving tokens")
			log.Info("serving tokens", "socket", ln.Addr().String(), "services", len(cfg.Services),
				"idle_exit", cfg.Tokend.IdleExit.D().String())
		},
	}
	// Exit (status 1, logged) when the socket's path stops being this socket.
	watched, stopWatch := tokend.WatchSocket(ctx, ln, log.Logger)
	defer stopWatch()
	err = s.Serve(watched, ln)
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	if cause := context.Cause(watched); err == nil && errors.Is(cause, tokend.ErrSocketReplaced) {
		return cause
	}
	return err
}

// listener returns the one socket systemd passed (edgeseal-tokend.socket).
func listener() (*net.UnixListener, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("cannot take the socket from systemd: %w", err)
	}
	if len(lns) != 1 || lns[0] == nil {
		return nil, fmt.Errorf("cannot serve: systemd passed %d sockets, want exactly one stream socket; "+
			"start edgeseal-tokend.socket (systemctl start edgeseal-tokend.socket) rather than the service", len(lns))
	}
	ul, ok := lns[0].(*net.UnixListener)
	if !ok {
		return nil, fmt.Errorf("cannot serve: the socket systemd passed is %T, not a Unix stream socket", lns[0])
	}
	return ul, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
