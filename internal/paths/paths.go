// Package paths names every file and directory edgeseal reads or writes, all built
// from one root so tests (and the snap, whose root differs) never touch the host's
// /etc, /var or /run. There are no global path variables: callers pass a Paths.
package paths

import (
	"os"
	"path/filepath"
)

// Paths is the on-disk layout of one edgeseal installation.
type Paths struct {
	// Root is prepended to every path: "/" on a device, t.TempDir() in tests.
	Root string
	// SnapInstance is the snap's instance name in the snap's layout (Snap), else "".
	SnapInstance string

	ConfigFile string // /etc/edgeseal/edgeseal.yaml

	StateDir   string // /var/lib/edgeseal: persistent, root-only (0700)
	SealedKey  string // StateDir/unseal-key.sealed: the sealed Vault unseal key
	InitMarker string // StateDir/init-pending.json: a first boot's init is in progress
	Recovery   string // StateDir/unseal-key.recovery: the unseal key encrypted to the operator's recovery key
	AdminToken string // StateDir/admin-token.sealed: Vault's init root token, sealed under a key derived from the unseal key
	VaultMeta  string // StateDir/fsvault: one NAME.json per file vault, its key wrapped by its protectors (0700)
	Controller string // StateDir/controller: the enrolment with a controller (0700)
	Enrolment  string // Controller/enrolment.json: the controller's URL, CA and signing key, the device id and TLS client certificate
	ClientKey  string // Controller/client.key: the device's TLS client key for the controller (0600)

	RunDir       string // /run/edgeseal: tmpfs, re-made every boot
	PKIDir       string // RunDir/pki: per-boot CA certificate, leaf certificates and keys
	CACert       string // PKIDir/ca.crt: the per-boot CA every client verifies against
	SharedCA     string // the snap only: $SNAP_DATA/ca/ca.crt, a copy of CACert that the tokend-ca content slot shares read-only with consumer snaps; "" elsewhere
	VaultCert    string // PKIDir/vault.crt: Vault listener certificate (leaf + chain)
	VaultKey     string // PKIDir/vault.key: Vault listener key (0600, the PKI step's user; systemd hands a copy to Vault via LoadCredential=)
	VaultConfDir string // RunDir/vault: the Vault server's config files (Vault is started with -config DIR), written by the pki step
	VaultConfig  string // VaultConfDir/vault.json: storage and the admin listener
	VaultTCP     string // VaultConfDir/listener-tcp.json: the TCP listener the services use, once Vault is initialised by edgeseal
	VaultTCPHeld string // VaultConfDir/listener-tcp.json.held: the same, held back (Vault reads only *.json) until then
	VaultAdmin   string // RunDir/vault-admin/admin.sock: Vault's listener for edgeseal alone (its directory is 0700, Vault's user)
	TokendDir    string // RunDir/tokend: private to the token provider's user (0700)
	IssuingToken string // TokendDir/issuing-token.json: the token-issuing token of this boot
	Ledger       string // TokendDir/issued.json: which token (accessor) went to which service and unit
	TokendSocket string // RunDir/tokend.sock: the token provider's socket (edgeseal-tokend.socket)
	SyncSocket   string // RunDir/policy-sync.sock: the provider asks edgeseal-unseal to apply a service's policy
	ExeIDSocket  string // RunDir/exeid.sock: the provider asks edgeseal-exeid which executable a caller runs
	Policies     string // RunDir/policies.json: digests of the service policies in Vault, per name
	BootDone     string // RunDir/boot-setup.json: this boot's setup is done (tmpfs: gone at reboot)
	StatusFile   string // RunDir/status.json: what the unseal daemon is doing, for `edgeseal status`
	VaultStatus  string // RunDir/fsvault/status.json: the file vaults' states after the last apply, lock or unlock
}

// New returns the layout under root ("/" on a device).
func New(root string) Paths {
	if root == "" {
		root = "/"
	}
	j := func(p ...string) string { return filepath.Join(append([]string{root}, p...)...) }
	p := Paths{
		Root:       root,
		ConfigFile: j("etc/edgeseal/edgeseal.yaml"),
		StateDir:   j("var/lib/edgeseal"),
		RunDir:     j("run/edgeseal"),
	}
	return derive(p)
}

// derive fills in every path below ConfigFile, StateDir and RunDir.
func derive(p Paths) Paths {
	p.SealedKey = filepath.Join(p.StateDir, "unseal-key.sealed")
	p.InitMarker = filepath.Join(p.StateDir, "init-pending.json")
	p.Recovery = filepath.Join(p.StateDir, "unseal-key.recovery")
	p.AdminToken = filepath.Join(p.StateDir, "admin-token.sealed")
	p.VaultMeta = filepath.Join(p.StateDir, "fsvault")
	p.Controller = filepath.Join(p.StateDir, "controller")
	p.Enrolment = filepath.Join(p.Controller, "enrolment.json")
	p.ClientKey = filepath.Join(p.Controller, "client.key")
	p.PKIDir = filepath.Join(p.RunDir, "pki")
	p.CACert = filepath.Join(p.PKIDir, "ca.crt")
	p.VaultCert = filepath.Join(p.PKIDir, "vault.crt")
	p.VaultKey = filepath.Join(p.PKIDir, "vault.key")
	p.VaultConfDir = filepath.Join(p.RunDir, "vault")
	p.VaultConfig = filepath.Join(p.VaultConfDir, "vault.json")
	p.VaultTCP = filepath.Join(p.VaultConfDir, "listener-tcp.json")
	p.VaultTCPHeld = p.VaultTCP + ".held"
	p.VaultAdmin = filepath.Join(p.RunDir, "vault-admin", "admin.sock")
	p.TokendDir = filepath.Join(p.RunDir, "tokend")
	p.IssuingToken = filepath.Join(p.TokendDir, "issuing-token.json")
	p.Ledger = filepath.Join(p.TokendDir, "issued.json")
	p.TokendSocket = filepath.Join(p.RunDir, "tokend.sock")
	p.SyncSocket = filepath.Join(p.RunDir, "policy-sync.sock")
	p.ExeIDSocket = filepath.Join(p.RunDir, "exeid.sock")
	p.Policies = filepath.Join(p.RunDir, "policies.json")
	p.BootDone = filepath.Join(p.RunDir, "boot-setup.json")
	p.StatusFile = filepath.Join(p.RunDir, "status.json")
	p.VaultStatus = filepath.Join(p.RunDir, "fsvault", "status.json")
	return p
}

// Snap returns the layout inside the edgeseal snap: the config and persistent
// state under $SNAP_DATA (revisioned: a refresh copies it, a revert goes back to
// it), secrets of the boot in tmpfs under /run/snap.<instance> (the runtime
// directory a strict snap may write), the token provider's socket for the
// host's services in $SNAP_DATA/tokend (consumer snaps each reach theirs in
// $SNAP_DATA/tokend-N, the directory of their own content slot), and a copy
// of the per-boot CA certificate in $SNAP_DATA/ca,
// which another slot shares read-only (a consumer can read /run/snap.edgeseal
// no more than it can write $SNAP_DATA/ca).
func Snap(snapData, instance string) Paths {
	p := New("/")
	p.ConfigFile = filepath.Join(snapData, "edgeseal.yaml")
	p.StateDir = filepath.Join(snapData, "state")
	p.RunDir = filepath.Join("/run", "snap."+instance)
	p.SnapInstance = instance
	q := derive(p)
	q.TokendSocket = filepath.Join(snapData, "tokend", "tokend.sock")
	q.SharedCA = filepath.Join(snapData, "ca", "ca.crt")
	return q
}

// Detect is New(root), except in the snap: with root "/" and $SNAP_DATA and
// $SNAP_INSTANCE_NAME set (snapd sets both for every app and hook), it is Snap.
func Detect(root string) Paths {
	if root == "" || root == "/" {
		data, instance := os.Getenv("SNAP_DATA"), os.Getenv("SNAP_INSTANCE_NAME")
		if data != "" && instance != "" {
			return Snap(data, instance)
		}
	}
	return New(root)
}
