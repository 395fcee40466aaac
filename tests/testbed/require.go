//go:build integration

package testbed

import (
	"os/exec"
	"testing"
)

// packages names the Debian package that ships each command the test bed runs.
var packages = map[string]string{
	"systemd-nspawn":  "systemd-container",
	"nsenter":         "util-linux",
	"setpriv":         "util-linux",
	"losetup":         "mount",
	"swtpm":           "swtpm",
	"swtpm_ioctl":     "swtpm-tools",
	"tpm2_getrandom":  "tpm2-tools",
	"tpm2_startup":    "tpm2-tools",
	"tpm2_shutdown":   "tpm2-tools",
	"tpm2_checkquote": "tpm2-tools",
	"tpm2_pcrextend":  "tpm2-tools",
	"make":            "make",
	"strace":          "strace",
	"taskset":         "util-linux",
	"mkfs.ext4":       "e2fsprogs",
	"mount":           "mount",
	"snap":            "snapd",
	"mksquashfs":      "squashfs-tools",
	"gdbus":           "libglib2.0-bin",
	"busctl":          "systemd",
	"softhsm2-util":   "softhsm2",
}

// Require fails the test unless every command is on PATH, saying what to install.
func Require(t testing.TB, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			pkg := packages[c]
			if pkg == "" {
				pkg = c
			}
			t.Fatalf("%s not found: apt-get install %s (or run make deps)", c, pkg)
		}
	}
}
