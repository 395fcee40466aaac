//go:build integration

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadInputsFailClearlyAndTouchNothing: what an operator meets when something
// is wrong. Each case: the first step that meets it fails with its documented exit status
// (which RestartPreventExitStatus= keeps from looping, but for a key-material
// hook's failure, which a retry may cure: that one is tried again every second
// while edgeseal.target's start waits, and the device boots by itself once the
// hook is mended), the journal says what is wrong and where, and the sealed key
// is left exactly as it was.
func TestBadInputsFailClearlyAndTouchNothing(t *testing.T) {
	t.Log("Given a device that has booted once")
	d := newDevice(t, false, nil)
	d.start()
	sealedPath := "/var/lib/edgeseal/unseal-key.sealed"
	sealed := d.run("cat", sealedPath)

	cases := []struct {
		name   string
		breakf func()
		mendf  func()
		unit   string // the first step of the chain that fails
		status string
		says   string
		// retried: a failure Restart= may cure (a hook's); edgeseal.target's
		// start waits for it, and the device boots by itself once mended.
		retried bool
	}{
		{
			name:   "a truncated sealed key",
			breakf: func() { d.run("sh", "-c", "head -c 40 "+sealedPath+".orig > "+sealedPath) },
			mendf:  func() { d.run("cp", sealedPath+".orig", sealedPath) },
			unit:   "edgeseal-unseal.service",
			status: "10",
			says:   "sealed blob is corrupt",
		},
		{
			name: "a key-material hook that prints too little",
			breakf: func() {
				writeFile(t, filepath.Join(d.etc, "ikm-hook.orig"), []byte(demoHook), 0o700)
				writeFile(t, filepath.Join(d.etc, "ikm-hook"), []byte("#!/bin/sh\necho short\n"), 0o700)
			},
			mendf:   func() { writeFile(t, filepath.Join(d.etc, "ikm-hook"), []byte(demoHook), 0o700) },
			unit:    "edgeseal-unseal.service",
			status:  "12",
			says:    "at least 16",
			retried: true,
		},
		{
			name: "key material that changed (another device's disk)",
			breakf: func() {
				writeFile(t, filepath.Join(d.etc, "device-secret.orig"), mustRead(t, filepath.Join(d.etc, "device-secret")), 0o600)
				writeFile(t, filepath.Join(d.etc, "device-secret"), []byte("00000000000000000000000000000000"), 0o600)
			},
			mendf: func() {
				writeFile(t, filepath.Join(d.etc, "device-secret"), mustRead(t, filepath.Join(d.etc, "device-secret.orig")), 0o600)
			},
			unit:   "edgeseal-unseal.service",
			status: "11",
			says:   "another device",
		},
		{
			name:   "a config with a misspelt key",
			breakf: func() { os.WriteFile(filepath.Join(d.etc, "edgeseal.yaml"), []byte("seal:\n  methd: none\n"), 0o644) },
			mendf:  func() { d.writeConfig() },
			unit:   "edgeseal-pki.service",
			status: "2",
			says:   "/etc/edgeseal/edgeseal.yaml:2: seal.methd: unknown key",
		},
	}
	d.run("cp", sealedPath, sealedPath+".orig")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func(parent testing.TB) { d.t = parent }(d.t)
			d.t = t
			t.Logf("When the device reboots with %s", tc.name)
			d.m.Reboot(t)
			tc.breakf()
			before := d.run("cat", sealedPath)
			if tc.retried {
				// The target's start waits while the step is tried again.
				d.run("systemctl", "start", "--no-block", "edgeseal.target")
				t.Logf("Then %s exits with status %s, says why, and is tried again while edgeseal.target waits", tc.unit, tc.status)
				var show string
				for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
					show = d.run("systemctl", "show", "-p", "ExecMainStatus", "-p", "NRestarts", tc.unit)
					if (strings.Contains(show, "ExecMainStatus="+tc.status+"\n") && !strings.Contains(show, "NRestarts=0\n")) || time.Now().After(deadline) {
						break
					}
				}
				if !strings.Contains(show, "ExecMainStatus="+tc.status+"\n") || strings.Contains(show, "NRestarts=0\n") {
					t.Errorf("unit state: %s", show)
				}
				if s := d.isActive("edgeseal.target"); s != "inactive" {
					t.Errorf("edgeseal.target is %s while the step fails, want inactive (its start waiting)", s)
				}
			} else {
				if _, _, err := d.m.Run(context.Background(), "systemctl", "start", "edgeseal.target"); err == nil {
					t.Fatal("edgeseal.target started")
				}
				t.Logf("Then %s exits with status %s and says why", tc.unit, tc.status)
				show := d.run("systemctl", "show", "-p", "ExecMainStatus", "-p", "NRestarts", tc.unit)
				if !strings.Contains(show, "ExecMainStatus="+tc.status+"\n") || !strings.Contains(show, "NRestarts=0") {
					t.Errorf("unit state: %s", show)
				}
			}
			if j := d.journal(); !strings.Contains(j, tc.says) {
				t.Errorf("the journal does not say %q:\n%s", tc.says, j)
			}
			t.Log("And the sealed key is untouched; once mended, the device boots")
			if got := d.run("cat", sealedPath); got != before {
				t.Error("the sealed key changed")
			}
			tc.mendf()
			if tc.retried {
				t.Log("And once mended, the next try boots the device, with nobody starting anything")
				if err := waitActive(d, "edgeseal.target", 90*time.Second); err != "" {
					t.Fatalf("after mending: %s\n%s", err, d.journal())
				}
				return
			}
			d.run("systemctl", "reset-failed")
			d.start()
		})
	}
	if got := d.run("cat", sealedPath); got != sealed {
		t.Error("the sealed key changed")
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
