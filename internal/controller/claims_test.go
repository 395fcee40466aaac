package controller

import (
	"errors"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/ctlproto"
)

func TestClaims(t *testing.T) {
	dir := t.TempDir()
	loc := func(name, data string) string { return writeFile(t, filepath.Join(dir, name), data) }
	noAddrs := func() ([]net.Addr, error) { t.Error("addresses listed unasked"); return nil, nil }
	someAddrs := func() ([]net.Addr, error) {
		return []net.Addr{ipNet("192.0.2.7"), ipNet("127.0.0.1"), ipNet("2001:db8::1"), ipNet("fe80::1")}, nil
	}
	tooMany := map[string]string{}
	for _, c := range "abcdefghijklmnop" {
		tooMany[string(c)] = "x"
	}
	cases := []struct {
		name  string
		cfg   config.Controller
		addrs func() ([]net.Addr, error)
		want  map[string]string
		err   string
	}{
		{"static claims and the device id", config.Controller{Claims: map[string]string{"site": "plant-7"}}, noAddrs,
			map[string]string{"site": "plant-7", "device_id": "gw-1"}, ""},
		{"the location file's first line, trimmed",
			config.Controller{LocationFile: loc("loc", "  48.85,2.35 \nsecond line\n")}, noAddrs,
			map[string]string{"device_id": "gw-1", "location": "48.85,2.35"}, ""},
		{"an empty location file sends no location", config.Controller{LocationFile: loc("empty", "\n")}, noAddrs,
			map[string]string{"device_id": "gw-1"}, ""},
		{"a location of 256 bytes fits", config.Controller{LocationFile: loc("256", strings.Repeat("x", 256))}, noAddrs,
			map[string]string{"device_id": "gw-1", "location": strings.Repeat("x", 256)}, ""},
		{"a location of 257 bytes is refused, not cut",
			config.Controller{LocationFile: loc("257", strings.Repeat("x", 257)+"\n")}, noAddrs, nil, "at most 256"},
		{"a location far past the read bound is refused",
			config.Controller{LocationFile: loc("huge", strings.Repeat("x", 1<<20))}, noAddrs, nil, "at most 256"},
		{"a location with a control character is refused",
			config.Controller{LocationFile: loc("ctl", "48.85\x0172.35\n")}, noAddrs, nil, "control character"},
		{"an unreadable location file is named",
			config.Controller{LocationFile: filepath.Join(dir, "absent")}, noAddrs, nil, filepath.Join(dir, "absent")},
		{"addresses: global unicast only, sorted", config.Controller{Addresses: true}, someAddrs,
			map[string]string{"device_id": "gw-1", "addresses": "192.0.2.7,2001:db8::1"}, ""},
		{"addresses that cannot be listed are an error", config.Controller{Addresses: true},
			func() ([]net.Addr, error) { return nil, errors.New("netlink refused") }, nil, "netlink refused"},
		{"a reserved name in the static claims", config.Controller{Claims: map[string]string{"location": "x"}}, noAddrs,
			nil, "edgeseal fills it in"},
		{"a bad claim name", config.Controller{Claims: map[string]string{"Site": "x"}}, noAddrs, nil, "not a claim name"},
		{"too many claims", config.Controller{Claims: tooMany}, noAddrs, nil, "at most 16"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := buildClaims(tc.cfg, "gw-1", tc.addrs)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("buildClaims: %v, %v; want an error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || !maps.Equal(got, tc.want) {
				t.Errorf("buildClaims = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func ipNet(s string) net.Addr {
	ip := net.ParseIP(s)
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(64, len(ip)*8)}
}

// The addresses claim is sorted, without repeats, and never longer than a
// claim: whole addresses are left out, never one cut in two.
func TestAddressesClaimFitsAClaim(t *testing.T) {
	var addrs []net.Addr
	for i := range 40 {
		addrs = append(addrs, ipNet("2001:db8:ffff:ffff:ffff:ffff:ffff:"+strings.Repeat("f", 1+i%4)))
		addrs = append(addrs, &net.IPAddr{IP: net.IPv4(10, 0, 0, byte(i))}, &net.IPAddr{IP: net.IPv4(10, 0, 0, byte(i))})
	}
	got := joinAddresses(addrs, ctlproto.MaxClaimLen)
	if len(got) > ctlproto.MaxClaimLen {
		t.Fatalf("%d bytes", len(got))
	}
	parts := strings.Split(got, ",")
	for i, p := range parts {
		if net.ParseIP(p) == nil {
			t.Errorf("part %d, %q, is not an address", i, p)
		}
		if i > 0 && p == parts[i-1] {
			t.Errorf("%s repeated", p)
		}
	}
	if parts[0] != "10.0.0.0" || parts[1] != "10.0.0.1" {
		t.Errorf("not sorted, IPv4 first: %s", got)
	}
	if joinAddresses(nil, ctlproto.MaxClaimLen) != "" {
		t.Error("no address is not an empty claim")
	}
}
