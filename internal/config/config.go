// Package config loads /etc/edgeseal/edgeseal.yaml. It decodes strictly (an unknown
// key is an error, since a misspelt key silently ignored is a security setting not
// applied), fills defaults, and validates; every error names the file, the line and
// the field, so an operator can fix it without reading code.
package config

import (
	"path/filepath"
	"slices"
	"time"
)

// Config is the whole edgeseal configuration. The commented sample in
// edgeseal.yaml (embedded, installed as the default) documents every field and
// holds exactly the defaults.
type Config struct {
	Vault    Vault     `yaml:"vault"`
	PKI      PKI       `yaml:"pki"`
	Seal     Seal      `yaml:"seal"`
	Tokens   Tokens    `yaml:"tokens"`
	Tokend   Tokend    `yaml:"tokend"`
	Services []Service `yaml:"services"`
	// ServiceTLS is the local CA that issues services their TLS certificates
	// (services[].tls).
	ServiceTLS ServiceTLS `yaml:"service_tls"`
	// FileVaults are the encrypted directories (fscrypt) edgeseal keeps.
	FileVaults FileVaults `yaml:"file_vaults"`
	// Controller is what the device tells a controller when it attests (the
	// enrolment itself is `edgeseal controller enrol`).
	Controller Controller `yaml:"controller"`
}

// Controller sets how the device answers a controller's attestation
// challenge: the claims bound into its quotes, and how long one exchange may
// take. Where the controller is and the device's credentials come from
// enrolment (`edgeseal controller enrol`), kept in the state directory.
type Controller struct {
	// Claims are fixed claims sent with every quote (a site or asset tag): at
	// most 13, names of [a-z][a-z0-9_]*, values up to 256 bytes. device_id,
	// location and addresses are reserved for the claims edgeseal fills in.
	Claims map[string]string `yaml:"claims"`
	// LocationFile, if set, is a file whose first line is the "location" claim
	// (a GNSS or site service writes it; under /run, say). A controller that
	// expects a location withholds keys when it differs (geo-fencing).
	LocationFile string `yaml:"location_file"`
	// Addresses adds the "addresses" claim: the device's global unicast IP
	// addresses, sorted, comma separated. Default false.
	Addresses bool `yaml:"addresses"`
	// Timeout bounds one exchange with the controller, including, at boot,
	// waiting for the network to come up (the dial is repeated while it is
	// refused or has no route). Default 10s.
	Timeout Duration `yaml:"timeout"`
}

// Vault is the secret store server edgeseal starts, unseals and sets up.
type Vault struct {
	// Listen is the host:port of Vault's TLS listener; host must be an IP address.
	// Default 127.0.0.1:8200.
	Listen string `yaml:"listen"`
	// StoragePath is Vault's file storage directory. Default
	// /var/lib/edgeseal-vault/data (edgeseal-vault.service's StateDirectory=).
	StoragePath string `yaml:"storage_path"`
	// Mount is where the KV secrets engine is mounted. Default "secret".
	Mount string `yaml:"mount"`
	// KVVersion is 1 or 2. Default 2; 1 suits EdgeX services, which read KV v1 paths.
	KVVersion int `yaml:"kv_version"`
	// SecretPrefix names the per-service namespace: <mount>/<prefix>/<service>/ and
	// <mount>/<prefix>/shared/<group>/. Default "edgeseal" (EdgeX uses "edgex").
	SecretPrefix string `yaml:"secret_prefix"`
	// WatchInterval is how often the unseal daemon checks that Vault is unsealed.
	// Default 250ms.
	WatchInterval Duration `yaml:"watch_interval"`
}

// ServiceTLS is the CA of the services' own certificates: a PKI secrets
// engine of the local server, set up by edgeseal-unseal, separate from the
// per-boot CA that verifies the server (whose key is gone once the boot's
// PKI is made). Its key is made inside the server and never leaves it.
type ServiceTLS struct {
	// Mount is where the PKI secrets engine is mounted. Default "service-pki".
	Mount string `yaml:"mount"`
	// TrustDomain is the host of the services' SPIFFE IDs,
	// spiffe://<trust_domain>/<service>. Default "": this device's machine
	// ID (/etc/machine-id).
	TrustDomain string `yaml:"trust_domain"`
	// TTL is how long a certificate is valid (5m to 720h). Default 24h;
	// `edgeseal token fetch --cert --renew` renews it at two thirds.
	TTL Duration `yaml:"ttl"`
}

// PKI is the per-boot certificate authority.
type PKI struct {
	// Validity of the CA and leaf certificates. Default 8760h (one year): the PKI is
	// re-made every boot, so this only bounds an uptime.
	Validity Duration `yaml:"validity"`
	// Intermediate adds an issuing CA between the root and the leaves. Default false.
	Intermediate bool `yaml:"intermediate"`
	// ExtraNames are more DNS names or IP addresses for the Vault certificate, besides
	// 127.0.0.1, ::1 and localhost.
	ExtraNames []string `yaml:"extra_names"`
	// CAKey is where the CA keys live while they sign: "memory" (default), in
	// edgeseal-pki's memory for the second it runs, never written; or "tpm", in
	// the TPM that seal.tpm2.device names (whatever seal.method is): a primary key
	// of the null hierarchy that never leaves it and is flushed once it has
	// signed (internal/tpm.CAKey).
	CAKey string `yaml:"ca_key"`
}

// CA key locations (PKI.CAKey).
const (
	CAKeyMemory = "memory"
	CAKeyTPM    = "tpm"
)

// Seal chooses how the Vault unseal key is protected at rest.
type Seal struct {
	// Method is "tpm2" (default), "ikm-hook", "pkcs11" or "none".
	Method string `yaml:"method"`
	// IKMHook configures the ikm-hook sealer.
	IKMHook IKMHook `yaml:"ikm_hook"`
	// TPM2 configures the tpm2 sealer.
	TPM2 TPM2 `yaml:"tpm2"`
	// PKCS11 configures the pkcs11 sealer.
	PKCS11 PKCS11 `yaml:"pkcs11"`
	// AllowInsecureNone must be true for method "none"; it stores the key in clear.
	AllowInsecureNone bool `yaml:"allow_insecure_none"`
	// RecoveryKey, if set, is the absolute path of a public key file (PEM; P-256
	// or X25519) to which a copy of the unseal key is encrypted, for
	// `edgeseal recover`.
	RecoveryKey string `yaml:"recovery_key"`
}

// IKMHook is a vendor executable printing this device's input keying material.
type IKMHook struct {
	// Command is the argv of the hook; Command[0] must be an absolute path.
	// Default ["/etc/edgeseal/ikm-hook"].
	Command []string `yaml:"command"`
	// Timeout bounds one run of the hook. Default 10s.
	Timeout Duration `yaml:"timeout"`
}

// TPM2 is the device's TPM the unseal key is sealed to.
type TPM2 struct {
	// Device is /dev/tpmrm0 (default), another TPM device node, or swtpm:HOST:PORT
	// for a software TPM (tests, development) on loopback: HOST is in
	// 127.0.0.0/8, ::1 or localhost (naming.SwtpmAddress).
	Device string `yaml:"device"`
	// PCRs of the SHA-256 bank whose values the key is sealed to. Default [7]
	// (Secure Boot state).
	PCRs []int `yaml:"pcrs"`
	// PINFile, if set, holds a PIN the TPM requires besides the PCR state.
	PINFile string `yaml:"pin_file"`
	// Storage is where the sealed unseal key lives: "file" (default), a sealed
	// object in the blob on disk; or "nv", a TPM NV index (the blob holds only
	// its public parts) whose policy also needs a monotonic NV counter at the
	// value of the last `edgeseal tpm reseal`, so an older blob put back is
	// refused (rollback protection). File vaults' keys stay in files.
	Storage string `yaml:"storage"`
	// NVIndex is the first of the two NV handles (NVIndex, NVIndex+1) the sealed
	// key alternates between with storage nv. Default 0x013e5e00.
	NVIndex uint32 `yaml:"nv_index"`
	// CounterIndex is the NV handle of the rollback counter with storage nv.
	// Default 0x013e5e10.
	CounterIndex uint32 `yaml:"counter_index"`
}

// PKCS11 is the PKCS#11 token whose non-extractable AES key wraps the unseal
// key. The device builder makes the token and the key; edgeseal only uses them.
type PKCS11 struct {
	// Module is the absolute path of the vendor's PKCS#11 library, loaded by
	// the helper edgeseal-pkcs11 only.
	Module string `yaml:"module"`
	// TokenLabel or TokenSerial (exactly one) names the token.
	TokenLabel  string `yaml:"token_label"`
	TokenSerial string `yaml:"token_serial"`
	// KeyLabel is the CKA_LABEL of the token's AES key.
	KeyLabel string `yaml:"key_label"`
	// PINFile holds the token's user PIN (one line).
	PINFile string `yaml:"pin_file"`
	// Timeout bounds one run of the helper. Default 30s.
	Timeout Duration `yaml:"timeout"`
	// Environment names variables of edgeseal's environment the helper passes
	// to the module, when set, besides PATH and SOFTHSM2_CONF.
	Environment []string `yaml:"environment"`
}

// TPM2 storages (TPM2.Storage).
const (
	TPM2StorageFile = "file"
	TPM2StorageNV   = "nv"
)

// The TPM owner's NV handle range the sealed key's indices may use: the TCG
// reserves 0x01400000 to 0x01FFFFFF for platform makers, TCG and vendor
// indices (EK certificates; secboot's counters sit at 0x01800000 on).
const (
	NVOwnerFirst = 0x01000000
	NVOwnerLast  = 0x013fffff
)

// Tokens configures the tokens edgeseal issues.
type Tokens struct {
	// ServicePeriod is the renewal period of service tokens. Default 1h.
	ServicePeriod Duration `yaml:"service_period"`
	// ServiceMaxTTL is the longest a service token lives, however often it is
	// renewed (Vault's explicit max TTL): then the service must fetch a new
	// one (`edgeseal token fetch --renew` exits 1; a unit with Restart= does).
	// Default 720h (30 days); at least tokens.service_period, at most 768h
	// (Vault's max lease TTL, past which it creates no token of the role).
	ServiceMaxTTL Duration `yaml:"service_max_ttl"`
	// RevokeOnStop: the tokens of a service unit are revoked when it stops or
	// waits to be restarted (Restart=), not only when it fails. Default true;
	// false keeps a token valid across a unit's clean stop and restart (its
	// holder then must not share it beyond the unit).
	RevokeOnStop bool `yaml:"revoke_on_stop"`
	// IssuingPeriod is the renewal period of the token provider's token-issuing
	// token. Default 24h.
	IssuingPeriod Duration `yaml:"issuing_period"`
	// IssuingRotation is how often edgeseal-unseal replaces the token-issuing
	// token with a new one and revokes the old. At most half of IssuingPeriod;
	// 0 (the default) means half of it. Use Rotation().
	IssuingRotation Duration `yaml:"issuing_rotation"`
	// WrapTTL is how long a response-wrapped service token waits to be unwrapped.
	// Default 5m.
	WrapTTL Duration `yaml:"wrap_ttl"`
	// RevokeDelay bounds how long the token provider may wait to revoke a
	// service's token once it has issued that service a new one: it revokes
	// replaced tokens in batches off the request path, as soon as no request
	// is being served, and at the latest this long after the replacement
	// (while Vault answers; a revocation Vault refuses stays pending in the
	// ledger and is tried again). Default 2s; 0 revokes each at once. At most 1m.
	RevokeDelay Duration `yaml:"revoke_delay"`
	// TokendUser owns the token-issuing token (a system user). Default
	// "edgeseal-tokend".
	TokendUser string `yaml:"tokend_user"`
}

// Rotation is how often the token-issuing token is replaced.
func (t Tokens) Rotation() time.Duration {
	if t.IssuingRotation == 0 {
		return t.IssuingPeriod.D() / 2
	}
	return t.IssuingRotation.D()
}

// Tokend is the token provider behind /run/edgeseal/tokend.sock.
type Tokend struct {
	// IdleExit: the provider exits after this long without a connection; the
	// socket stays and systemd starts it again on the next one. 0 never exits.
	// Default 60s.
	IdleExit Duration `yaml:"idle_exit"`
	// RequestTimeout bounds a caller's sending of its request: a client that
	// stalls is cut off. A request is then served within 30 s of its
	// connection (tokenclient's own patience), its wait for one of the
	// max_in_flight slots included, or told "overloaded". Default 5s.
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxInFlight bounds the requests served at once; more wait for a slot
	// until their deadline, then get "overloaded". Default 64.
	MaxInFlight int `yaml:"max_in_flight"`
}

// Service is a local service that gets its own Vault token and secret path.
type Service struct {
	// Name is [a-z0-9][a-z0-9_-]* (at most 64): it appears in Vault paths and policy
	// names.
	Name string `yaml:"name"`
	// SharedRead and SharedWrite name shared groups whose secrets this service may
	// read (and list), or read and write.
	SharedRead  []string `yaml:"shared_read"`
	SharedWrite []string `yaml:"shared_write"`

	// Who is this service: a caller gets this service's token if it matches any
	// of these rules. A unit or snap app rule is more specific than a uid rule,
	// which is more specific than a gid rule; each unit, snap app, uid and gid
	// may appear in one service only.

	// Units are systemd units whose processes are this service, e.g.
	// "app-one.service"; a unit may also fetch through LoadCredential=.
	Units []string `yaml:"units"`
	// SnapApps are snap apps, "<snap>.<app>", whose processes are this service.
	SnapApps []string `yaml:"snap_apps"`
	// UIDs and GIDs match a caller's user or group id (0 is refused: every root
	// process would match).
	UIDs []uint32 `yaml:"uids"`
	GIDs []uint32 `yaml:"gids"`
	// ExeSHA256 pins what must be running, not only where: when set, a caller
	// matched by the rules above gets this service's token only if the
	// executable file its process runs (read through /proc/PID/exe by
	// edgeseal-exeid, not by a path) has one of these SHA-256 digests
	// (lower-case hex, at most 16). The caller's unit must not let it make user
	// namespaces (RestrictNamespaces=yes), in which a process may point its
	// /proc/PID/exe at any file. A token cannot be delivered through
	// LoadCredential= then: systemd asks before the program runs.
	ExeSHA256 []string `yaml:"exe_sha256"`
	// UnitFiles pins how the caller's unit is defined: when set, a caller
	// matched by the rules above gets this service's token only if systemd
	// loaded its unit (for LoadCredential=, the unit asking) from one of
	// these files (FragmentPath, asked of systemd over D-Bus) and every
	// drop-in it has (DropInPaths) is listed too: absolute paths, at most 16.
	// A transient unit, a scope, a unit with an unlisted drop-in is refused.
	UnitFiles []string `yaml:"unit_files"`
	// SnapRevisions and SnapPublishers pin which snap runs: when either is
	// set, a caller matched by the rules above gets this service's token only
	// if it is a snap app (for LoadCredential=, the unit asking is a snap's
	// daemon) whose snap's current revision, as snapd reports it, is one of
	// SnapRevisions ("42", or "x1" for a local install; at most 16) and whose
	// publisher's account id is one of SnapPublishers (at most 16). A local
	// install has no publisher: a publisher pin refuses it.
	SnapRevisions  []string `yaml:"snap_revisions"`
	SnapPublishers []string `yaml:"snap_publishers"`
	// TLS lets the service ask for a TLS certificate of its own, issued by
	// the local server's service CA (service_tls): its identity is the URI
	// SAN spiffe://<trust domain>/<name> and the DNS SAN <name>. Default false.
	TLS bool `yaml:"tls"`
	// Wrap delivers a response-wrapped token: the service unwraps it once, so a
	// token seen in transit is useless to anyone else. Default false.
	Wrap bool `yaml:"wrap"`
}

// Duration is a time.Duration written as "250ms", "15m", "24h" in YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// FileVaults are named directories encrypted with the kernel's filesystem
// encryption (fscrypt), whose keys are wrapped by the TPM; `edgeseal vault apply`
// and edgeseal-fsvault.service reconcile the device with them.
type FileVaults struct {
	// Dir holds the default vaults. Default /var/lib/edgeseal/vaults; it must be
	// on a filesystem with encryption enabled (ext4 -O encrypt, f2fs).
	Dir string `yaml:"dir"`
	// Defaults adds the vaults "config" (device configuration secrets) and
	// "images" (application state) in Dir, unless Vaults names them. Default true.
	Defaults bool `yaml:"defaults"`
	// Vaults are the vaults besides (or overriding) the defaults; at most
	// MaxFileVaults in all, the defaults included.
	Vaults []FileVault `yaml:"vaults"`
}

// Policies of a file vault, and its key sources.
const (
	VaultUnlock    = "unlock"     // the vault exists and is unlocked
	VaultLock      = "lock"       // the vault exists and is locked
	VaultChangeKey = "change-key" // rewrap the vault's key to KeyVersion, then unlock
	KeySourceTPM   = "tpm"        // the vault key is sealed to this device's TPM
	// KeySourceController: the vault key is wrapped by a key the controller
	// releases (sealed to this device's TPM on the way).
	KeySourceController = "controller"
	// KeySourceTPMController: both are needed, a secret sealed by the TPM
	// (in an approved PCR state) and the controller's key.
	KeySourceTPMController = "tpm+controller"
	// FileVaultSchema is the schema version of a vault entry this build knows.
	FileVaultSchema = 1
)

// FileVault is one encrypted directory.
type FileVault struct {
	// Schema is the version of this entry's format: required, and 1
	// (FileVaultSchema), the one this build reads.
	Schema int `yaml:"schema"`
	// UUID identifies the vault (RFC 4122 text form, lower case); a controller
	// names vaults by it. Required; it must match the UUID the vault was created
	// with.
	UUID string `yaml:"uuid"`
	// Name is [a-z0-9][a-z0-9_-]* (at most 64): `edgeseal vault NAME`, and the
	// instance of edgeseal-fsvault@NAME.service.
	Name string `yaml:"name"`
	// Path is the encrypted directory: absolute, clean, on a disk filesystem (not
	// under /proc, /sys, /dev or /run), neither inside another vault nor holding
	// one. Default Dir/Name.
	Path string `yaml:"path"`
	// Policy is unlock (default), lock or change-key.
	Policy string `yaml:"policy"`
	// KeySource is where the vault key comes from: tpm (default), controller,
	// or tpm+controller (both needed). A change rewraps the key at the next
	// apply; no file is re-encrypted.
	KeySource string `yaml:"key_source"`
	// Attestation: the controller releases this vault's keys only after the
	// device passes its attestation challenge (a quote of the PCRs it names,
	// with the claims). Only with a controller key source. Default false.
	Attestation bool `yaml:"attestation"`
	// Offline: keep the last controller key received sealed by the TPM (in an
	// approved PCR state), so the vault unlocks while the controller cannot
	// be reached. Only with a controller key source. Default false: a
	// controller that withholds the key (a theft reported) keeps it locked.
	Offline bool `yaml:"offline"`
	// KeyVersion: with policy change-key, the key version to rewrap to, at least
	// 1 (greater than the vault's current one to change it; apply is a no-op once
	// equal). Never negative.
	KeyVersion int `yaml:"key_version"`
}

// DefaultVaultNames are the vaults FileVaults.Defaults adds.
var DefaultVaultNames = []string{"config", "images"}

// Effective returns the vaults to keep: the default ones (unless Defaults is
// false or Vaults names them), then Vaults, each with its defaults filled in (path
// Dir/Name, policy unlock, key source tpm, schema 1). A default vault has no UUID
// in config: the one it was created with stands.
func (f FileVaults) Effective() []FileVault {
	var out []FileVault
	if f.Defaults {
		for _, name := range DefaultVaultNames {
			if !slices.ContainsFunc(f.Vaults, func(v FileVault) bool { return v.Name == name }) {
				out = append(out, FileVault{Name: name})
			}
		}
	}
	out = append(out, f.Vaults...)
	for i := range out {
		v := &out[i]
		if v.Schema == 0 {
			v.Schema = FileVaultSchema
		}
		if v.Path == "" {
			v.Path = filepath.Join(f.Dir, v.Name)
		}
		if v.Policy == "" {
			v.Policy = VaultUnlock
		}
		if v.KeySource == "" {
			v.KeySource = KeySourceTPM
		}
	}
	return out
}
