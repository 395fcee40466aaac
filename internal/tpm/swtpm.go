package tpm

import "github.com/edgeseal/edgeseal/internal/naming"

// SwtpmAddress is naming.SwtpmAddress: the config checks a software TPM's
// address by the same rule before anything opens it.
func SwtpmAddress(dev string) (addr string, ok bool, err error) { return naming.SwtpmAddress(dev) }

// ErrNotLoopback: a swtpm: device names a host that is not loopback.
var ErrNotLoopback = naming.ErrNotLoopback
