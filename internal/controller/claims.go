package controller

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/ctlproto"
)

// Claims edgeseal fills in; the config's static claims cannot use them.
const (
	ClaimDeviceID  = "device_id"
	ClaimLocation  = "location"
	ClaimAddresses = "addresses"
)

// maxLocationRead bounds what is read of the location file: its first line
// must fit in a claim (ctlproto.MaxClaimLen).
const maxLocationRead = 4 << 10

// buildClaims are the claims bound into a quote: the config's static ones,
// device_id, the location file's first line (if set, and not empty), and
// the device's global unicast addresses (if asked). addrs lists the
// interfaces' addresses (net.InterfaceAddrs).
func buildClaims(cfg config.Controller, deviceID string, addrs func() ([]net.Addr, error)) (map[string]string, error) {
	c := map[string]string{}
	for k, v := range cfg.Claims {
		if k == ClaimDeviceID || k == ClaimLocation || k == ClaimAddresses {
			return nil, fmt.Errorf("cannot use the claim %s in controller.claims: edgeseal fills it in", k)
		}
		c[k] = v
	}
	c[ClaimDeviceID] = deviceID
	if cfg.LocationFile != "" {
		loc, err := readLocation(cfg.LocationFile)
		if err != nil {
			return nil, err
		}
		if loc != "" {
			c[ClaimLocation] = loc
		}
	}
	if cfg.Addresses {
		list, err := addrs()
		if err != nil {
			return nil, fmt.Errorf("cannot list the device's addresses (controller.addresses): %w", err)
		}
		c[ClaimAddresses] = joinAddresses(list, ctlproto.MaxClaimLen)
	}
	if err := ctlproto.CheckClaims(c); err != nil {
		return nil, fmt.Errorf("cannot use the claims (controller section of the config): %w", err)
	}
	return c, nil
}

// readLocation is the first line of the location file, trimmed ("" if the
// file is empty); a line longer than a claim is an error, not cut short.
func readLocation(path string) (string, error) {
	data, err := readFirst(path, maxLocationRead)
	if err != nil {
		return "", fmt.Errorf("cannot read the location claim from %s (controller.location_file): %w", path, err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	loc := strings.TrimSpace(string(line))
	if len(loc) > ctlproto.MaxClaimLen {
		return "", fmt.Errorf("cannot use the location in %s (controller.location_file): its first line is %d bytes or more, at most %d",
			path, len(loc), ctlproto.MaxClaimLen)
	}
	return loc, nil
}

// readFirst reads at most limit bytes of path (a longer file is cut).
func readFirst(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// joinAddresses is the addresses claim: the global unicast IPs among addrs,
// sorted, without repeats, comma-joined; addresses that would take it past
// limit bytes are left out (never one cut in two).
func joinAddresses(addrs []net.Addr, limit int) string {
	var ips []netip.Addr
	for _, a := range addrs {
		var ip net.IP
		switch v := a.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		default:
			continue
		}
		if !ip.IsGlobalUnicast() {
			continue
		}
		if na, ok := netip.AddrFromSlice(ip); ok {
			ips = append(ips, na.Unmap())
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	ips = slices.Compact(ips)
	var b strings.Builder
	for _, ip := range ips {
		s := ip.String()
		if b.Len() > 0 {
			s = "," + s
		}
		if b.Len()+len(s) > limit {
			break
		}
		b.WriteString(s)
	}
	return b.String()
}
