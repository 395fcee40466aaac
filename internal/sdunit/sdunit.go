// Package sdunit asks systemd, over D-Bus, to act on a unit and waits for the job
// to finish. edgeseal uses it where one step must restart another (the unseal
// service restarting Vault to recover an interrupted first initialisation); it is
// the only place that knows how to reach systemd's manager.
package sdunit

import (
	"context"
	"fmt"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// Unit is a systemd unit, e.g. "edgeseal-vault.service".
type Unit struct{ Name string }

// Restart restarts the unit and waits for the job to end; a job that does not end
// in "done" is an error naming the result (failed, timeout, dependency...).
func (u Unit) Restart(ctx context.Context) error {
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("cannot connect to systemd: %w", err)
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
