package tpm

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// SwtpmAddress returns the HOST:PORT of a software TPM's device,
// "swtpm:HOST:PORT"; ok is false for any other device. HOST must be
// loopback (127.0.0.0/8, ::1 or localhost): swtpm's command port has no
// authentication, and the TPM's answers decide whether Vault unseals, so a
// TPM across a network is one anybody on the way can play. Config validation
// (seal.tpm2.device) and Device both ask it.
func SwtpmAddress(dev string) (addr string, ok bool, err error) {
	addr, ok = strings.CutPrefix(dev, "swtpm:")
	if !ok {
		return "", false, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", true, fmt.Errorf("%q must be swtpm:HOST:PORT", dev)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", true, fmt.Errorf("%q must be swtpm:HOST:PORT with a port from 1 to 65535", dev)
	}
	if ip, err := netip.ParseAddr(host); (err != nil || !ip.IsLoopback()) && host != "localhost" {
		return "", true, fmt.Errorf("%q: %w", dev, ErrNotLoopback)
	}
	return addr, true, nil
}

// ErrNotLoopback: a swtpm: device names a host that is not loopback.
var ErrNotLoopback = errors.New("a software TPM must listen on loopback (127.0.0.1, ::1 or localhost): " +
	"its command port has no authentication")
