package unitwatch

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestPollingReportsAWatchedUnitOnceWhenItsLastProcessIsGone(t *testing.T) {
	p := &poller{}
	watched := []string{"snap.cam.daemon.service", "app.service"}
	// Given both units running at the first look: nothing ended
	if got := p.step(map[string]bool{"snap.cam.daemon.service": true, "app.service": true}, watched); len(got) != 0 {
		t.Fatalf("first look, both running: %v", got)
	}
	// When the snap's daemon has no process any more
	got := p.step(map[string]bool{"app.service": true}, watched)
	// Then it is reported, once
	if !slices.Equal(got, []string{"snap.cam.daemon.service"}) {
		t.Fatalf("after the daemon stopped: %v", got)
	}
	if got := p.step(map[string]bool{"app.service": true}, watched); len(got) != 0 {
		t.Fatalf("a unit already reported, still stopped: %v", got)
	}
	// When it runs again and stops again, Then it is reported again
	p.step(map[string]bool{"snap.cam.daemon.service": true, "app.service": true}, watched)
	if got := p.step(map[string]bool{"app.service": true}, watched); !slices.Equal(got, []string{"snap.cam.daemon.service"}) {
		t.Fatalf("after a second stop: %v", got)
	}
}

func TestPollingReportsAtItsFirstLookAWatchedUnitWithNoProcess(t *testing.T) {
	// A unit that stopped while nothing watched (before unseal started) still
	// has its tokens revoked.
	p := &poller{}
	if got := p.step(map[string]bool{}, []string{"app.service"}); !slices.Equal(got, []string{"app.service"}) {
		t.Fatalf("first look, unit gone: %v", got)
	}
}

func TestLiveUnitsTakesEachProcessesUnitBySystemdsRule(t *testing.T) {
	proc := t.TempDir()
	for pid, cg := range map[string]string{
		"1":    "0::/init.scope\n",
		"42":   "0::/system.slice/snap.cam.daemon.service\n",
		"43":   "0::/system.slice/delegated.service/snap.cam.other.service\n",
		"44":   "0::/user.slice/user-1000.slice/user@1000.service/app.slice/snap.cam.x.service\n",
		"self": "0::/system.slice/ignored.service\n",
	} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "cgroup"), []byte(cg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	live := liveUnits(proc)
	for _, want := range []string{"init.scope", "snap.cam.daemon.service", "delegated.service"} {
		if !live[want] {
			t.Errorf("%s not live: %v", want, live)
		}
	}
	for _, not := range []string{"snap.cam.other.service", "snap.cam.x.service", "ignored.service"} {
		if live[not] {
			t.Errorf("%s taken as a unit with processes: %v", not, live)
		}
	}
}
