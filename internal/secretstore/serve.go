package secretstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/unitwatch"
)

// ServeOptions is what Serve needs of the process it runs in.
type ServeOptions struct {
	// Final tells an error of Run that no retry in this process can cure
	// (the command's exit statuses but 1): Serve returns it at once.
	Final func(error) bool
	// Notify sends a state to the service manager (sd_notify: READY=1,
	// STOPPING=1, STATUS=...); nil sends none.
	Notify func(state string)
	// Reload receives when the config is to be read again now (SIGHUP,
	// systemctl reload); it is read again when its file changes anyway.
	Reload <-chan os.Signal
}

// Retry delays of a setup that failed: a second, doubling, at most
// maxRetryDelay.
const (
	firstRetryDelay = time.Second
	maxRetryDelay   = 10 * time.Second
)

// Serve is edgeseal-unseal's life: it runs the boot's setup until it is done,
// reports ready, then keeps the server unsealed, the token-issuing token
// fresh, the config applied and the policy-sync socket answered, and revokes
// the tokens of units that end, until ctx ends. It returns the error of a
// setup that cannot be done (after ReportFailure), or nil.
func (b *Bootstrap) Serve(ctx context.Context, o ServeOptions) error {
	notify := func(state string) {
		if o.Notify != nil {
			o.Notify(state)
		}
	}
	if err := b.runUntilReady(ctx, o.Final, notify); err != nil {
		b.ReportFailure(err)
		return err
	}
	notify("READY=1\nSTATUS=Vault unsealed and set up; watching it")
	b.Log.Info("Vault is unsealed and set up; watching it to unseal it again if it restarts",
		"interval", b.Config.Vault.WatchInterval.D().String())
	reload := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(5)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-o.Reload:
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() { defer wg.Done(); b.WatchConfig(ctx, reload) }()
	go func() { defer wg.Done(); b.Supervise(ctx) }()
	go func() {
		defer wg.Done()
		if err := b.ServePolicySync(ctx); err != nil {
			b.Log.Error("cannot serve policy syncs: a service added to the config after boot gets its policy at the next boot", "error", err)
		}
	}()
	go func() { defer wg.Done(); b.revokeEndedUnits(ctx, b.Config.Tokens.RevokeOnStop) }()
	b.Watch(ctx, b.Config.Vault.WatchInterval.D())
	wg.Wait()
	notify("STOPPING=1")
	return nil
}

// runUntilReady runs the boot's setup until it is done, trying again in this
// process after an error a retry may cure (Vault restarting, a timeout, a
// refused connection). Exiting instead would hand the retry to Restart=, but
// systemd (before 254's RestartMode=direct) fails the unit's start job
// first, and with it edgeseal.target's and every consumer's: they would stay
// down for the whole boot, though the restart cures the error.
// TimeoutStartSec= bounds the tries. An error final says a retry cannot cure
// returns at once.
func (b *Bootstrap) runUntilReady(ctx context.Context, final func(error) bool, notify func(string)) error {
	delay := firstRetryDelay
	for attempt := 1; ; attempt++ {
		err := b.Run(ctx)
		if err == nil || (final != nil && final(err)) || ctx.Err() != nil {
			return err
		}
		line, _, _ := strings.Cut(err.Error(), "\n")
		b.Log.Warn("cannot set Vault up yet; trying again", "attempt", attempt, "in", delay.String(), "error", err)
		notify(fmt.Sprintf("STATUS=retrying in %s (attempt %d failed: %s)", delay, attempt, line))
		b.Forget()
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// revokeEndedUnits revokes the tokens of each unit that enters the failed
// state (and, with stops, of each service that stops or waits to restart),
// for as long as ctx lasts; a lost bus connection is made again, after a wait
// that doubles from a second to half a minute while watches keep failing at
// once. A watch the bus refuses by policy is tried again every
// refusedRetry, and said once.
func (b *Bootstrap) revokeEndedUnits(ctx context.Context, stops bool) {
	const (
		retryMin     = time.Second
		retryMax     = 30 * time.Second
		refusedRetry = 10 * time.Minute
	)
	log := b.Log
	revoke := func(unit string, before time.Time) { b.RevokeUnit(ctx, unit, before) }
	wait, refusedSaid := time.Duration(0), false
	for {
		start := time.Now()
		err := unitwatch.Watch(ctx, stops, revoke)
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, unitwatch.ErrRefused) && stops:
			// Processes' cgroups say when a unit has none left: a stop or a
			// failure alike, which is what stops asks for.
			log.Warn("cannot watch for units that fail or stop on the system bus, which refuses it (in a snap: the "+
				"D-Bus mediation of AppArmor, which grants system-observe no Subscribe); watching their processes' "+
				"cgroups instead", "every", unitwatch.PollInterval.String(), "error", err)
			unitwatch.PollCgroups(ctx, "/proc", unitwatch.PollInterval, func() []string {
				units, err := ledger.Units(b.Paths.Ledger)
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					log.Warn("cannot read the token ledger to watch the units of its tokens", "error", err)
				}
				return units
			}, revoke)
			return
		case errors.Is(err, unitwatch.ErrRefused):
			wait = refusedRetry
			if !refusedSaid {
				refusedSaid = true
				log.Error("cannot watch for units that fail: the system bus refuses it (in a snap: the D-Bus "+
					"mediation of AppArmor, which grants system-observe no Subscribe), and with tokens.revoke_on_stop "+
					"off a unit's cgroup cannot tell a failure from a stop. The tokens of a service that fails stay "+
					"valid until the service gets a new one or the next boot; trying again every 10 minutes, "+
					"without another line", "error", err)
			}
		default:
			if time.Since(start) > time.Minute {
				wait = 0 // the watch held: the next failure is a new one
			}
			wait = min(max(2*wait, retryMin), retryMax)
			log.Warn("lost the watch on units that fail or stop; watching again", "in", wait.String(), "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
