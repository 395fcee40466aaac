package unitwatch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/peer"
)

// PollInterval is how often PollCgroups looks at the processes' cgroups.
const PollInterval = 2 * time.Second

// PollCgroups is Watch without the bus, for where the bus refuses a watch
// (ErrRefused: a snap under AppArmor's D-Bus mediation, whose system-observe
// plug still lets it read every /proc/PID/cgroup). Every interval it reads
// which units have processes, each process's unit taken from its cgroup by
// systemd's own rule (peer.UnitOfCgroup), and calls ended for each unit that
// watched names and that has no process now though it had one at the last look
// (at the first look: that has none), with the time that look began. It cannot
// tell a failure from a clean stop, so it stands in for Watch with stops only;
// a unit that restarts between two looks is not seen. It returns when ctx
// ends.
func PollCgroups(ctx context.Context, proc string, interval time.Duration, watched func() []string, ended func(unit string, before time.Time)) {
	p := &poller{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		now := time.Now()
		for _, unit := range p.step(liveUnits(proc), watched()) {
			ended(unit, now)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poller remembers which watched units had processes at the last look.
type poller struct {
	looked bool
	live   map[string]bool
}

// step takes the units with processes now and the units watched, and returns
// the watched units that have ended since the last look, in watched's order.
func (p *poller) step(live map[string]bool, watched []string) []string {
	var ended []string
	for _, unit := range watched {
		if live[unit] {
			continue
		}
		if !p.looked || p.live[unit] {
			ended = append(ended, unit)
		}
	}
	p.looked, p.live = true, live
	return ended
}

// liveUnits reads the unit of every process under proc (/proc).
func liveUnits(proc string) map[string]bool {
	live := map[string]bool{}
	entries, err := os.ReadDir(proc)
	if err != nil {
		return live
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		// A process that ended since the listing is simply not live.
		data, err := os.ReadFile(filepath.Join(proc, e.Name(), "cgroup"))
		if err != nil || len(data) > 4096 {
			continue
		}
		if unit := peer.UnitOfCgroup(strings.TrimSpace(string(data))); unit != "" {
			live[unit] = true
		}
	}
	return live
}
