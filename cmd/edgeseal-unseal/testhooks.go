//go:build edgeseal_testhooks

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/secretstore"
)

// Test hooks, built only with -tags edgeseal_testhooks (the test bed's
// `make install GOTAGS=edgeseal_testhooks`); a release build has none
// (testhooks_off.go). Only root can set a service's environment.
const (
	// crashEnv names a boot step at which the process kills itself with
	// SIGKILL: the crash tests' way to crash at an exact point.
	crashEnv = "EDGESEAL_CRASH_AT"
	// crashOnceEnv is crashEnv once per boot: a crash that Restart= cures.
	crashOnceEnv = "EDGESEAL_CRASH_ONCE_AT"
	// failEnv names a boot step that fails once per boot with an error a
	// retry cures, as a Vault that is briefly unreachable would make it.
	failEnv = "EDGESEAL_FAIL_AT"
	// pauseEnv names a boot step at which the process stops for good, after
	// leaving a mark in tmpfs (pausedMark): the power-cut test
	// (tests/vm/powercut.sh) waits for the mark and cuts the VM's power
	// there, with the step's writes as far as the step itself took them.
	pauseEnv = "EDGESEAL_PAUSE_AT"
)

// pausedMark is the file in RunDir that says the process paused at a step.
const pausedMark = ".test-paused-at-"

var errInjected = errors.New("injected failure (test hook " + failEnv + ")")

func testHook(log *journal.Logger, p paths.Paths) func(secretstore.Step) error {
	crashAt, crashOnceAt := os.Getenv(crashEnv), os.Getenv(crashOnceEnv)
	failAt, pauseAt := os.Getenv(failEnv), os.Getenv(pauseEnv)
	if crashAt == "" && crashOnceAt == "" && failAt == "" && pauseAt == "" {
		return nil
	}
	log.Warn("test hooks: this process will crash, fail or pause at a boot step",
		"crash_at", crashAt, "crash_once_at", crashOnceAt, "fail_at", failAt, "pause_at", pauseAt)
	// The marks that a failure or crash happened live in tmpfs: once per
	// boot, across restarts of the process.
	failed := filepath.Join(p.RunDir, ".test-failed-at-"+failAt)
	crashed := filepath.Join(p.RunDir, ".test-crashed-at-"+crashOnceAt)
	return func(s secretstore.Step) error {
		switch string(s) {
		case crashAt:
			log.Warn("crash test: SIGKILL now", "step", crashAt)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		case crashOnceAt:
			if first, err := firstThisBoot(crashed); !first {
				return err
			}
			log.Warn("crash test: SIGKILL now, once this boot", "step", crashOnceAt)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		case failAt:
			if first, err := firstThisBoot(failed); !first {
				return err
			}
			log.Warn("test hook: failing this step once", "step", failAt)
			return errInjected
		case pauseAt:
			// The mark is written without fsync and lives in tmpfs: it tells the
			// host where the process is, and must not add a flush of the disk
			// that the step itself did not do.
			log.Warn("test hook: pausing for good at this step", "step", pauseAt)
			mark := filepath.Join(p.RunDir, pausedMark+pauseAt)
			if err := os.WriteFile(mark, nil, 0o600); err != nil {
				return fmt.Errorf("cannot write the pause mark %s: %w", mark, err)
			}
			select {}
		}
		return nil
	}
}

// firstThisBoot reports whether mark (a file in tmpfs) did not exist yet, and
// makes it: true once per boot, across restarts of the process.
func firstThisBoot(mark string) (bool, error) {
	if _, err := os.Stat(mark); err == nil {
		return false, nil
	}
	if err := os.WriteFile(mark, nil, 0o600); err != nil {
		return false, err
	}
	return true, nil
}
