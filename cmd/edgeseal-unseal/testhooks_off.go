//go:build !edgeseal_testhooks

package main

import (
	"os"

	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/secretstore"
)

// testHook is nil in a release build: the crash, failure and pause injection
// of the tests (testhooks.go, -tags edgeseal_testhooks) is not in the binary,
// and their variables only earn a warning.
func testHook(log *journal.Logger, _ paths.Paths) func(secretstore.Step) error {
	for _, v := range []string{"EDGESEAL_CRASH_AT", "EDGESEAL_CRASH_ONCE_AT", "EDGESEAL_FAIL_AT", "EDGESEAL_PAUSE_AT"} {
		if os.Getenv(v) != "" {
			log.Warn("ignoring a test hook's variable: this build has no test hooks", "variable", v)
		}
	}
	return nil
}
