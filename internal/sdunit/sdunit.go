// Package sdunit restarts a unit and waits for it: by asking systemd over D-Bus
// (Unit, through package sdbus), or, inside a strictly confined snap, by signalling the unit's
// processes for systemd's Restart= to start them again (Signalled). edgeseal
// uses it where one step must restart another (the unseal service restarting
// Vault with its TCP listener at a first boot, or to recover an interrupted
// first initialisation).
package sdunit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/internal/sdbus"
)

// Unit is a systemd unit, e.g. "edgeseal-vault.service".
type Unit struct{ Name string }

// Restart restarts the unit and waits for the job to end; a job that does not end
// in "done" is an error naming the result (failed, timeout, dependency...).
func (u Unit) Restart(ctx context.Context) error {
	conn, err := sdbus.Systemd(ctx)
	if err != nil {
		return fmt.Errorf("cannot restart %s: %w", u.Name, err)
	}
	defer conn.Close()
	done := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, u.Name, "replace", done); err != nil {
		return fmt.Errorf("cannot restart %s: %w", u.Name, err)
	}
	select {
	case res := <-done:
		if res != "done" {
			return fmt.Errorf("cannot restart %s: job %s", u.Name, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cannot restart %s: %w", u.Name, ctx.Err())
	}
}

// Signalled restarts a unit that systemd restarts by itself (Restart=always)
// by signalling its processes, for where D-Bus is not allowed: a strictly
// confined snap, whose AppArmor profile lets it signal its own snap's
// processes but grants no call on systemd's API, and where snapctl restart
// would wait for the change that is starting this very process (the chain's
// start waits for edgeseal-unseal to be ready; its first boot restarts Vault
// before that).
type Signalled struct {
	Name   string      // the unit, e.g. "snap.edgeseal.vault.service"
	Signal unix.Signal // how the unit is asked to stop (its stop-mode)
	// Proc is the procfs root; "" means /proc.
	Proc string
}

// Restart signals every process whose cgroup is the unit's (peer.UnitOfCgroup,
// systemd's rule), waits for them to end and for systemd to start the unit
// again.
func (u Signalled) Restart(ctx context.Context) error {
	pids, err := u.pids()
	if err != nil {
		return fmt.Errorf("cannot restart %s: %w", u.Name, err)
	}
	if len(pids) == 0 {
		return fmt.Errorf("cannot restart %s: none of its processes runs", u.Name)
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, u.Signal); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("cannot restart %s: cannot signal pid %d: %w", u.Name, pid, err)
		}
	}
	old := map[int]bool{}
	for _, pid := range pids {
		old[pid] = true
	}
	// Until every old process is gone, then until a new one runs.
	for {
		now, err := u.pids()
		if err != nil {
			return fmt.Errorf("cannot restart %s: %w", u.Name, err)
		}
		stale, fresh := false, false
		for _, pid := range now {
			if old[pid] {
				stale = true
			} else {
				fresh = true
			}
		}
		if !stale && fresh {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot restart %s: %w", u.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pids lists the processes in the unit's cgroup.
func (u Signalled) pids() ([]int, error) {
	proc := u.Proc
	if proc == "" {
		proc = "/proc"
	}
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		unit, err := peer.CgroupUnits{Proc: proc}.GetUnitNameByPID(context.Background(), uint32(pid))
		if err == nil && unit == u.Name {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
