//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
)

// Unknown keys and bad values in unit files only warn (exit 0): a clean unit is
// one that verifies with nothing on stderr.
func TestUnitFilesVerifyWithoutWarnings(t *testing.T) {
	d := newDevice(t, false, nil)
	for _, u := range []string{"edgeseal-pki.service", "edgeseal-vault.service", "edgeseal-unseal.service", "edgeseal.target"} {
		stdout, stderr, err := d.m.Run(context.Background(), "systemd-analyze", "verify", "/usr/lib/systemd/system/"+u)
		if err != nil || strings.TrimSpace(stderr) != "" {
			t.Errorf("systemd-analyze verify %s: %v\n%s%s", u, err, stdout, stderr)
		}
	}
}
