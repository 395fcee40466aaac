package apparmorrules_test

import (
	"testing"

	"github.com/edgeseal/edgeseal/tests/apparmorrules"
)

func TestGlobMatchesAsAppArmorDoes(t *testing.T) {
	vars := apparmorrules.Variables{
		"DIRS":  {"/var/lib/a/", "/srv/b/"},
		"NESTS": {"@{DIRS}x"},
	}
	tests := []struct {
		pattern string
		path    string
		want    bool
	}{
		// Literals, and characters that are special in regular expressions.
		{"/etc/edgeseal/edgeseal.yaml", "/etc/edgeseal/edgeseal.yaml", true},
		{"/etc/edgeseal/edgeseal.yaml", "/etc/edgeseal/edgeseal.yamlx", false},
		{"/etc/edgeseal/edgeseal.yaml", "/etc/edgeseal/edgeseal_yaml", false},
		{"/a+b(c)|d$", "/a+b(c)|d$", true},
		// * stays within a path element.
		{"/run/edgeseal/*", "/run/edgeseal/status.json", true},
		{"/run/edgeseal/*", "/run/edgeseal/pki/ca.crt", false},
		{"/run/edgeseal/*.json", "/run/edgeseal/.json", true},
		{"/run/edgeseal/.status.json.tmp-*", "/run/edgeseal/.status.json.tmp-123", true},
		{"/run/edgeseal/.status.json.tmp-*", "/run/edgeseal/.status.json.tmp-", true},
		// A whole-element * or ** needs one character: /dir/* is not /dir/.
		{"/run/edgeseal/*", "/run/edgeseal/", false},
		{"/run/edgeseal/**", "/run/edgeseal/", false},
		{"/var/lib/edgeseal-vault/*/", "/var/lib/edgeseal-vault//", false},
		{"/var/lib/edgeseal-vault/*/", "/var/lib/edgeseal-vault/data/", true},
		{"/var/lib/edgeseal-vault/*/", "/var/lib/edgeseal-vault/data", false},
		// ** crosses path elements.
		{"/var/lib/edgeseal-vault/**", "/var/lib/edgeseal-vault/data/core/_keyring", true},
		{"/var/lib/edgeseal-vault/**", "/var/lib/edgeseal-vaultx/data", false},
		{"/var/lib/edgeseal/**", "/var/lib/edgeseal-vault/data", false},
		{"/sys/devices/**/tpm[0-9]*/tpm_version_major", "/sys/devices/pnp0/00:05/tpm/tpm0/tpm_version_major", true},
		{"/sys/devices/**/tpm[0-9]*/tpm_version_major", "/sys/devices/tpm0/tpm_version_major", false},
		// ? is one character other than /.
		{"/dev/tpm?", "/dev/tpm0", true},
		{"/dev/tpm?", "/dev/tpm", false},
		{"/a?b", "/a/b", false},
		// Character classes, negated ones, and a - that is a literal.
		{"/dev/tpm[0-9]*", "/dev/tpm0", true},
		{"/dev/tpm[0-9]*", "/dev/tpmrm0", false},
		{"/dev/tpmrm[0-9]*", "/dev/tpmrm0", true},
		{"/x[^a]", "/xb", true},
		{"/x[^a]", "/xa", false},
		{"/x[a-]", "/x-", true},
		{"/x[.]", "/x.", true},
		{"/x[.]", "/xy", false},
		// Alternatives, empty ones, nested ones.
		{"/run/edgeseal/{status,boot-setup}.json", "/run/edgeseal/boot-setup.json", true},
		{"/run/edgeseal/{status,boot-setup}.json", "/run/edgeseal/policies.json", false},
		{"/sys/fs/cgroup/{,**/}cpu.max", "/sys/fs/cgroup/cpu.max", true},
		{"/sys/fs/cgroup/{,**/}cpu.max", "/sys/fs/cgroup/system.slice/x.service/cpu.max", true},
		{"/sys/fs/cgroup/{,**/}cpu.max", "/sys/fs/cgroup/cpu.maxx", false},
		{"/a/{b,c{d,e}}/f", "/a/ce/f", true},
		{"/a/{b,c{d,e}}/f", "/a/c/f", false},
		{"/org/freedesktop/systemd1{,/**}", "/org/freedesktop/systemd1", true},
		{"/org/freedesktop/systemd1{,/**}", "/org/freedesktop/systemd1/unit/x_2eservice", true},
		{"/org/freedesktop/systemd1{,/**}", "/org/freedesktop/systemd10", false},
		// Escapes.
		{`/a\*b`, "/a*b", true},
		{`/a\*b`, "/axb", false},
		{`/a\{b,c\}`, "/a{b,c}", true},
		// Variables: builtin, the profile's own (several values), nested,
		// and the repeated slashes they leave folded.
		{"@{PROC}/sys/kernel/random/boot_id", "/proc/sys/kernel/random/boot_id", true},
		{"@{PROC}/@{pid}/status", "/proc/4242/status", true},
		{"@{PROC}/@{pid}/status", "/proc/self/status", false},
		{"@{PROC}/@{pid}/status", "/proc/0/status", false},
		{"@{PROC}/@{pid}/status", "/proc/42/task/42/status", false},
		{"@{sys}/class/tpm/", "/sys/class/tpm/", true},
		{"@{run}/dbus/system_bus_socket", "/var/run/dbus/system_bus_socket", true},
		{"@{DIRS}key", "/srv/b/key", true},
		{"@{DIRS}key", "/srv/c/key", false},
		{"@{NESTS}", "/var/lib/a/x", true},
	}
	for _, tt := range tests {
		g, err := apparmorrules.CompilePath(tt.pattern, vars)
		if err != nil {
			t.Errorf("CompilePath(%q): %v", tt.pattern, err)
			continue
		}
		if got := g.Match(tt.path); got != tt.want {
			t.Errorf("%q matches %q: %v, want %v (compiled from %q)", tt.pattern, tt.path, got, tt.want, g)
		}
	}
}

func TestGlobRefusesWhatTheParserRefuses(t *testing.T) {
	for _, pattern := range []string{
		"",
		"/a{b",
		"/a}b",
		"/a{b}",    // a group needs a comma
		"/a[b",     // unclosed class
		"/a]b",     // ] without [
		"/a[]",     // empty class
		`/a\`,      // trailing escape
		"/@{nope}", // undefined variable
		"/@{PROC",  // unterminated variable
		"/@{}",     // no name
	} {
		if g, err := apparmorrules.CompilePath(pattern, nil); err == nil {
			t.Errorf("CompilePath(%q) = %q, want an error", pattern, g)
		}
	}
}

func TestVariablesThatExplodeAreRefused(t *testing.T) {
	vars := apparmorrules.Variables{"a": {"@{b}@{b}@{b}@{b}"}, "b": {"@{c}@{c}@{c}@{c}"}, "c": {"@{d}@{d}@{d}@{d}"},
		"d": {"@{e}@{e}@{e}@{e}"}, "e": {"@{f}@{f}@{f}@{f}"}, "f": {"@{g}@{g}@{g}@{g}"}, "g": {"@{h}@{h}@{h}@{h}"},
		"h": {"@{i}@{i}@{i}@{i}"}, "i": {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},
		"loop": {"@{loop}"}}
	for _, pattern := range []string{"/@{a}", "/@{loop}"} {
		if _, err := apparmorrules.CompilePath(pattern, vars); err == nil {
			t.Errorf("CompilePath(%q) succeeded, want an error", pattern)
		}
	}
}
