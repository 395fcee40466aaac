//go:build integration

package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/tests/testbed"
)

// edgesealUnits are the units `make install` ships.
var edgesealUnits = []string{
	"edgeseal-pki.service", "edgeseal-vault.service", "edgeseal-unseal.service",
	"edgeseal-ready.service", "edgeseal-tokend.socket", "edgeseal-tokend.service", "edgeseal.target",
	"edgeseal-exeid.socket", "edgeseal-exeid.service",
	"edgeseal-fsvault.service", "edgeseal-fsvault@.service",
}

// Unknown keys and bad values in unit files only warn (exit 0): a clean unit is
// one that verifies with nothing on stderr.
func TestUnitFilesVerifyWithoutWarnings(t *testing.T) {
	d := newDevice(t, false, nil)
	var files []string
	for _, u := range edgesealUnits {
		files = append(files, "/usr/lib/systemd/system/"+u)
	}
	// The example application unit of the docs, installed as an operator would.
	writeFile(t, filepath.Join(d.units, appUnit), exampleAppUnit(t), 0o644)
	files = append(files, "/etc/systemd/system/"+appUnit)
	for _, f := range files {
		stdout, stderr, err := d.m.Run(context.Background(), "systemd-analyze", "verify", f)
		if err != nil || strings.TrimSpace(stderr) != "" {
			t.Errorf("systemd-analyze verify %s: %v\n%s%s", f, err, stdout, stderr)
		}
	}
}

// ExposureBounds are the highest `systemd-analyze security` exposure each service
// may have: 2.0 for edgeseal's own, 2.5 for the file vault units (root with
// CAP_DAC_READ_SEARCH, to open a vault its application's user owns, and
// CAP_SYS_PTRACE, to name the processes that keep a lock pending), 3.5 for the
// Vault server, 1.0 for the example application unit of the docs. The README's
// table shows the figures this test measures.
var exposureBounds = map[string]float64{
	"edgeseal-pki.service":      2.0,
	"edgeseal-unseal.service":   2.0,
	"edgeseal-tokend.service":   2.0,
	"edgeseal-ready.service":    2.0,
	"edgeseal-vault.service":    3.5,
	"edgeseal-fsvault.service":  2.5,
	"edgeseal-fsvault@.service": 2.5,
	"edgeseal-exeid.service":    2.0,
	"app-with-vault.service":    1.0,
}

// exampleUnits are in docs/examples, not installed as units.
var exampleUnits = map[string]bool{"app-with-vault.service": true}

var exposureLine = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9]+\.[0-9])`)

func TestEveryServiceMeetsItsExposureBound(t *testing.T) {
	testbed.Require(t, "systemd-analyze")
	for unit, bound := range exposureBounds {
		t.Run(unit, func(t *testing.T) {
			cmd := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager",
				"--root="+installRoot, filepath.Join(installRoot, "usr/lib/systemd/system", unit))
			if exampleUnits[unit] {
				// Not below --root, which would look for it in the unit directories.
				cmd = exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager",
					filepath.Join(repoRoot(), "docs", "examples", unit))
			}
			out, _ := cmd.CombinedOutput() // exit status is non-zero above --threshold; the figure is what counts
			m := exposureLine.FindStringSubmatch(string(out))
			if m == nil {
				t.Fatalf("systemd-analyze security printed no exposure for %s:\n%s", unit, out)
			}
			got, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: exposure %.1f (bound %.1f)", unit, got, bound)
			if got > bound {
				var open []string
				for _, l := range strings.Split(string(out), "\n") {
					if strings.HasPrefix(l, "✗") {
						open = append(open, l)
					}
				}
				t.Errorf("%s: exposure %.1f, want at most %.1f; what is left open:\n%s", unit, got, bound, strings.Join(open, "\n"))
			}
		})
	}
}
