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
	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/sdbus"
	"github.com/edgeseal/edgeseal/internal/snapd"
	"github.com/edgeseal/edgeseal/internal/tokend"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
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
	lns, err := listeners()
	if err != nil {
		return exitError{2, err}
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	err = serve(ctx, log, p, cfgPath, lns)
	if err != nil && ctx.Err() == nil {
		if n := tokend.AnswerWaiting(err, lns...); n > 0 {
			log.Warn("told the callers waiting that the provider cannot serve", "callers", n)
		}
	}
	return err
}

func serve(ctx context.Context, log *journal.Logger, p paths.Paths, cfgPath string, lns []*net.UnixListener) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return exitError{2, err}
	}
	pool, err := pki.LoadCAPool(p.CACert)
	if err != nil {
		return err
	}
	client, err := vaultclient.New(cfg.VaultAddr(), pool)
	if err != nil {
		return err
	}
	// Which unit a caller runs in: its cgroup says, by systemd's own rule
	// (peer.CgroupUnits); systemd, over D-Bus, for a caller whose cgroup names
	// no unit. A snap's confinement grants no call on systemd's API: there the
	// cgroup alone says.
	var units peer.UnitLookup = peer.CgroupUnits{}
	var unitNamespaces func(context.Context, string) (uint64, error)
	var unitFiles func(context.Context, string) (peer.UnitFiles, error)
	// A snap's revision and publisher: snapd's API says, over
	// /run/snapd.socket. The snap's provider does not ask: none of its plugs
	// reaches snapd (snap-refresh-observe would, through snapd-snap.socket, on
	// a recent snapd; not built), so there a service that pins them is
	// refused.
	var snapInfo func(context.Context, string) (peer.SnapInfo, error)
	if p.SnapInstance == "" {
		bus, err := sdbus.Systemd(ctx)
		if err != nil {
			return fmt.Errorf("%w (needed to tell which unit a caller runs in)", err)
		}
		defer bus.Close()
		units = peer.CgroupFirst{Fallback: bus}
		unitNamespaces = func(ctx context.Context, unit string) (uint64, error) {
			return sdbus.RestrictNamespaces(ctx, bus, unit)
		}
		unitFiles = func(ctx context.Context, unit string) (peer.UnitFiles, error) {
			fragment, dropIns, err := sdbus.UnitFiles(ctx, bus, unit)
			return peer.UnitFiles{Fragment: fragment, DropIns: dropIns}, err
		}
		snapInfo = func(ctx context.Context, name string) (peer.SnapInfo, error) {
			sn, err := snapd.Info(ctx, snapd.Socket, name)
			return peer.SnapInfo{Name: sn.Name, Revision: sn.Revision, Publisher: sn.Publisher}, err
		}
	}
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return fmt.Errorf("cannot read boot id: %w", err)
	}
	led, err := ledger.Open(p.Ledger, strings.TrimSpace(string(bootID)), fsutil.Self)
	if err != nil {
		return err
	}
	defer led.Close()
	s := &tokend.Server{
		Config:     cfg,
		ConfigFile: cfgPath,
		Paths:      p,
		Vault:      client,
		Resolver:   &peer.Resolver{Units: units},
		// For services that pin their executables: may the caller's unit make
		// user namespaces?
		UnitNamespaces: unitNamespaces,
		// For services that pin their unit files: which files systemd
		// loaded the caller's unit from.
		UnitFiles: unitFiles,
		// For services that pin their snap's revision or publisher: what
		// snapd says of the caller's snap.
		SnapInfo: snapInfo,
		Ledger:   led,
		Policies: &tokend.PolicySync{Applied: p.Policies, Socket: p.SyncSocket},
		Log:      log.Logger,
		BootID:   strings.TrimSpace(string(bootID)),
		Status:   func(line string) { daemon.SdNotify(false, "STATUS="+line) },
		Ready: func() {
			daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS=serving tokens")
			log.Info("serving tokens", "sockets", socketNames(lns), "services", len(cfg.Services),
				"idle_exit", cfg.Tokend.IdleExit.D().String())
		},
	}
	// A socket whose path stops being that socket is no longer served; with
	// none left, Serve ends with ErrSocketReplaced (exit status 1, logged).
	s.WatchSockets = true
	err = s.Serve(ctx, lns...)
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	return err
}

// listeners returns the sockets systemd passed: edgeseal-tokend.socket's one,
// or in the snap the host's and one per consumer slot (snap/snapcraft.yaml).
func listeners() ([]*net.UnixListener, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("cannot take the sockets from systemd: %w", err)
	}
	if len(lns) == 0 {
		return nil, fmt.Errorf("cannot serve: systemd passed no socket; " +
			"start edgeseal-tokend.socket (systemctl start edgeseal-tokend.socket) rather than the service")
	}
	uls := make([]*net.UnixListener, 0, len(lns))
	for i, ln := range lns {
		ul, ok := ln.(*net.UnixListener)
		if !ok {
			for _, l := range lns {
				if l != nil {
					l.Close()
				}
			}
			return nil, fmt.Errorf("cannot serve: socket %d of %d systemd passed is %T, not a Unix stream socket", i+1, len(lns), ln)
		}
		uls = append(uls, ul)
	}
	return uls, nil
}

// socketNames is the paths of lns, for the journal.
func socketNames(lns []*net.UnixListener) string {
	names := make([]string, len(lns))
	for i, ln := range lns {
		names[i] = ln.Addr().String()
	}
	return strings.Join(names, " ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
