package tpm

import (
	"errors"
	"strings"
	"testing"
)

func TestDeviceSpecs(t *testing.T) {
	cases := []struct {
		name, spec string
		want       string // the device's String(), or "" for an error
		absent     bool
	}{
		{"a swtpm address", "swtpm:127.0.0.1:2321", "swtpm:127.0.0.1:2321", false},
		{"a swtpm spec without port is refused", "swtpm:127.0.0.1", "", false},
		{"a swtpm at ::1", "swtpm:[::1]:2321", "swtpm:[::1]:2321", false},
		{"a swtpm at localhost", "swtpm:localhost:2321", "swtpm:localhost:2321", false},
		{"a relative path is refused", "tpmrm0", "", false},
		{"a missing device node is absent", "/dev/tpmrm-not-here", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Device(tc.spec)
			if tc.want != "" {
				if err != nil || d.String() != tc.want {
					t.Fatalf("Device(%q) = %v, %v", tc.spec, d, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Device(%q) accepted", tc.spec)
			}
			if errors.Is(err, ErrAbsent) != tc.absent {
				t.Errorf("ErrAbsent = %v for %v", !tc.absent, err)
			}
			if !strings.Contains(err.Error(), tc.spec) {
				t.Errorf("error does not name %q: %v", tc.spec, err)
			}
		})
	}
}

// swtpm's command port has no authentication: a swtpm: device must be on
// loopback, and the refusal names the config field.
func TestDeviceRefusesASoftwareTPMOffLoopback(t *testing.T) {
	for _, spec := range []string{"swtpm:192.0.2.7:2321", "swtpm:[2001:db8::1]:2321", "swtpm:tpm.example:2321",
		"swtpm:0.0.0.0:2321", "swtpm::2321", "swtpm:128.0.0.1:2321"} {
		_, err := Device(spec)
		if !errors.Is(err, ErrNotLoopback) || !strings.Contains(err.Error(), "seal.tpm2.device") {
			t.Errorf("Device(%q) = %v, want ErrNotLoopback naming seal.tpm2.device", spec, err)
		}
	}
}
