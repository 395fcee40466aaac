package naming

import (
	"errors"
	"strings"
	"testing"
)

func TestUnitNamesAreCheckedAsSystemdDoes(t *testing.T) {
	for _, s := range []string{"app-one.service", "snap.collector.daemon.service", "getty@tty1.service", "session-1.scope", `sys-devices-x\x2d1.device`} {
		if err := ValidUnitName(s); err != nil {
			t.Errorf("ValidUnitName(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "app", ".service", "app.servic", "a b.service", "a/b.service", "foo@.service", "@x.service", "a@b@c.service", strings.Repeat("a", 250) + ".service"} {
		if err := ValidUnitName(s); err == nil {
			t.Errorf("ValidUnitName(%q) accepted", s)
		}
	}
}

func TestSnapAppNamesAreCheckedAsSnapdDoes(t *testing.T) {
	for _, s := range []string{"collector.daemon", "edgex-ui.edgex-ui", "a1.B-2", "foo_bar1.app"} {
		if err := ValidSnapApp(s); err != nil {
			t.Errorf("ValidSnapApp(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "collector", "c.daemon", "Collector.daemon", "-ab.x", "a--b.x", "123.x", "ab.", "ab.-x", "ab.x.y", "ab_.x", "ab_TOOLONGKEYX.x", "ab.x_y"} {
		if err := ValidSnapApp(s); err == nil {
			t.Errorf("ValidSnapApp(%q) accepted", s)
		}
	}
}

func TestSnapRevisionsAndPublishersAreCheckedAsSnapdWritesThem(t *testing.T) {
	for _, s := range []string{"1", "42", "x1", "x27", "2147483647"} {
		if err := ValidSnapRevision(s); err != nil {
			t.Errorf("ValidSnapRevision(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "0", "x0", "x", "042", "x01", "-1", "+1", "X1", "1x", "2147483648", "unset", " 1"} {
		if err := ValidSnapRevision(s); err == nil {
			t.Errorf("ValidSnapRevision(%q) accepted", s)
		}
	}
	for _, s := range []string{"canonical", "2rsYZu6kqYVFsSejExu4YENdXQEO40Xb", "my-brand", "ab"} {
		if err := ValidAccountID(s); err != nil {
			t.Errorf("ValidAccountID(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "a", "Canonical", "2rsYZu6kqYVFsSejExu4YENdXQEO40X", "2rsYZu6kqYVFsSejExu4YENdXQEO40Xb1", "a_b", "a.b", strings.Repeat("a", 29), "ab cd"} {
		if err := ValidAccountID(s); err == nil {
			t.Errorf("ValidAccountID(%q) accepted", s)
		}
	}
}

func TestClaimsAreBoundedLowerCaseNamesAndPrintableValues(t *testing.T) {
	if err := CheckClaims(map[string]string{"site": "plant 7", "line_2": ""}); err != nil {
		t.Fatal(err)
	}
	many := map[string]string{}
	for i := range MaxClaims + 1 {
		many["c"+strings.Repeat("x", i)] = "v"
	}
	for name, claims := range map[string]map[string]string{
		"a capital":     {"Site": "x"},
		"a digit first": {"7site": "x"},
		"a control":     {"site": "a\x00b"},
		"too long":      {"site": strings.Repeat("v", MaxClaimLen+1)},
		"too many":      many,
	} {
		if err := CheckClaims(claims); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestASoftwareTPMMustListenOnLoopback(t *testing.T) {
	for _, dev := range []string{"swtpm:127.0.0.1:2321", "swtpm:[::1]:2321", "swtpm:localhost:2321"} {
		if addr, ok, err := SwtpmAddress(dev); err != nil || !ok || addr == "" {
			t.Errorf("%s: %q %v %v", dev, addr, ok, err)
		}
	}
	if _, ok, err := SwtpmAddress("/dev/tpmrm0"); ok || err != nil {
		t.Errorf("a device node: ok %v, %v", ok, err)
	}
	if _, _, err := SwtpmAddress("swtpm:10.0.0.5:2321"); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("a remote swtpm: %v", err)
	}
	for _, dev := range []string{"swtpm:127.0.0.1", "swtpm:127.0.0.1:0", "swtpm:127.0.0.1:70000"} {
		if _, ok, err := SwtpmAddress(dev); !ok || err == nil {
			t.Errorf("%s: ok %v, %v", dev, ok, err)
		}
	}
}
