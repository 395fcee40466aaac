//go:build integration

// Package testbed runs the real parts edgeseal's integration tests need on the
// test bed (../shared/testbed.md): systemd as PID 1 in a container over the
// host's root, a Vault-compatible server (OpenBao, the default, or HashiCorp
// Vault: Server, picked by EDGESEAL_SERVER), a software TPM, SoftHSM2 tokens
// and the cgo helper edgeseal-pkcs11 that makes their keys. Rules it keeps for
// every test:
//
//   - A missing prerequisite fails the test with what to install; nothing skips.
//   - Everything a helper starts is ended at cleanup, by pid, and waited for;
//     cleanup checks that no process, mount or loop device is left behind.
//   - Network traffic stays on loopback.
package testbed
