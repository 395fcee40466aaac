// Package unitwatch tells when a systemd unit enters the failed state, so that
// the tokens of a service that crashed are revoked at once rather than left
// valid for whatever took its place (roadmap 2.6).
//
// It listens to systemd's PropertiesChanged signals on the system bus through
// go-systemd; those carry ActiveState as it changes, so a failure is seen
// within milliseconds, without polling each unit.
package unitwatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// checkEvery is how often the bus connection is checked to be alive: the
// signals of a dropped connection stop without a word.
const checkEvery = 5 * time.Second

// Watch calls failed with the name of each unit that enters the failed state,
// until ctx ends (then it returns nil) or the bus connection is lost (then it
// returns the error; the caller watches again). When it starts it first
// reports every unit already failed, so a failure during a gap between two
// watches is not missed. failed runs on Watch's goroutine, one at a time.
func Watch(ctx context.Context, failed func(unit string)) error {
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("cannot connect to the system bus to watch for failed units: %w", err)
	}
	defer conn.Close()
	return watch(ctx, conn, failed)
}

func watch(ctx context.Context, conn *sddbus.Conn, failed func(unit string)) error {
	if err := conn.Subscribe(); err != nil {
		return fmt.Errorf("cannot subscribe to systemd's unit changes: %w", err)
	}
	updates := make(chan *sddbus.PropertiesUpdate, 1024)
	errs := make(chan error, 1)
	conn.SetPropertiesSubscriber(updates, errs)

	already, err := conn.ListUnitsFilteredContext(ctx, []string{"failed"})
	if err != nil {
		return fmt.Errorf("cannot list failed units: %w", err)
	}
	for _, u := range already {
		failed(u.Name)
	}

	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u := <-updates:
			if isFailed(u) {
				failed(u.UnitName)
			}
		case err := <-errs:
			// The update channel overflowed: a failure may have been dropped.
			// Ask systemd for the failed units rather than guess.
			already, lerr := conn.ListUnitsFilteredContext(ctx, []string{"failed"})
			if lerr != nil {
				return fmt.Errorf("cannot list failed units after %v: %w", err, lerr)
			}
			for _, u := range already {
				failed(u.Name)
			}
		case <-tick.C:
			if !conn.Connected() {
				return errors.New("the system bus connection was closed")
			}
		}
	}
}

func isFailed(u *sddbus.PropertiesUpdate) bool {
	if u == nil || u.UnitName == "" {
		return false
	}
	v, ok := u.Changed["ActiveState"]
	if !ok {
		return false
	}
	s, ok := v.Value().(string)
	return ok && s == "failed"
}
