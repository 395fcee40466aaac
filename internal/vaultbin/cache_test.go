package vaultbin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeServer writes a server binary that prints line and counts its runs in
// a file beside it.
func fakeServer(t *testing.T, dir, line string) (bin, runs string) {
	t.Helper()
	bin, runs = filepath.Join(dir, "bao"), filepath.Join(dir, "runs")
	script := "#!/bin/sh\necho x >> " + runs + "\necho '" + line + "'\n"
	// Written to a new file and renamed over, as an upgrade does.
	tmp := bin + ".new"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin, runs
}

func countRuns(t *testing.T, runs string) int {
	data, err := os.ReadFile(runs)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "x")
}

func TestTheServerBinaryIsAskedOnceUntilItIsReplaced(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	supported := Supported[0]
	line := func(patch string) string {
		return supported.Kind.Name() + " v" + strconv.Itoa(supported.Major) + "." + strconv.Itoa(supported.Minor) + "." + patch + ", built today"
	}
	bin, runs := fakeServer(t, dir, line("1"))
	ctx := context.Background()

	first, cached, err := IdentifyCached(ctx, filepath.Join(state, CacheName), bin)
	if err != nil || cached || countRuns(t, runs) != 1 {
		t.Fatalf("first boot: %v, cached %v, runs %d; want it run once", err, cached, countRuns(t, runs))
	}
	again, cached, err := IdentifyCached(ctx, filepath.Join(state, CacheName), bin)
	if err != nil || !cached || again != first || countRuns(t, runs) != 1 {
		t.Fatalf("same binary: %+v, cached %v, %v, runs %d; want the kept answer, not a run", again, cached, err, countRuns(t, runs))
	}

	// An upgrade replaces the file: asked again, and the new answer kept.
	bin, runs = fakeServer(t, dir, line("2"))
	upgraded, cached, err := IdentifyCached(ctx, filepath.Join(state, CacheName), bin)
	if err != nil || cached || upgraded.Patch != 2 || countRuns(t, runs) != 2 {
		t.Fatalf("replaced binary: %+v, cached %v, %v, runs %d; want it run again", upgraded, cached, err, countRuns(t, runs))
	}

	// A binary replaced by one that is not a supported server is refused,
	// though the earlier one was known.
	bin, _ = fakeServer(t, dir, "Vault v0.1.0, built long ago")
	if _, _, err := IdentifyCached(ctx, filepath.Join(state, CacheName), bin); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("unsupported replacement: %v; want ErrUnsupported", err)
	}
}

func TestAKeptAnswerIsCheckedAgainstTheSupportedReleases(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	s := Supported[0]
	bin, _ := fakeServer(t, dir, s.Kind.Name()+" v"+strconv.Itoa(s.Major)+"."+strconv.Itoa(s.Minor)+".0")
	if _, _, err := IdentifyCached(context.Background(), filepath.Join(state, CacheName), bin); err != nil {
		t.Fatal(err)
	}
	// An edgeseal that no longer supports the series refuses what was kept.
	saved := Supported
	t.Cleanup(func() { Supported = saved })
	Supported = saved[1:]
	if _, cached, err := IdentifyCached(context.Background(), filepath.Join(state, CacheName), bin); !cached || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("cached %v, %v; want the kept answer refused with ErrUnsupported", cached, err)
	}
}
