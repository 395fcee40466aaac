package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/naming"
)

// Limits of the config, named so that tests and messages agree.
const (
	MaxServices = 1000
	maxNameLen  = 64
)

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	userRE     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	dnsLabelRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
)

func fieldErr(field, format string, args ...any) *Error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

func between(field string, d Duration, lo, hi time.Duration) *Error {
	if d.D() < lo || d.D() > hi {
		return fieldErr(field, "%s is out of range: must be between %s and %s", d, Duration(lo), Duration(hi))
	}
	return nil
}

// validate checks every field; the first problem is returned as an *Error whose
// Field names it (Parse adds the file and line).
func (c *Config) validate() *Error {
	checks := []func() *Error{c.validateVault, c.validatePKI, c.validateSeal, c.validateTokens, c.validateTokend, c.validateServices, c.validateServiceTLS, c.validateIdentities, c.validateFileVaults, c.validateController}
	for _, check := range checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateVault() *Error {
	v := c.Vault
	host, port, err := net.SplitHostPort(v.Listen)
	if err != nil {
		return fieldErr("vault.listen", "%q must be an IP address and a port, e.g. 127.0.0.1:8200", v.Listen)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fieldErr("vault.listen", "host %q must be an IP address (not a name), e.g. 127.0.0.1:8200", host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fieldErr("vault.listen", "port %q must be between 1 and 65535", port)
	}
	if !filepath.IsAbs(v.StoragePath) || filepath.Clean(v.StoragePath) != v.StoragePath || v.StoragePath == "/" {
		return fieldErr("vault.storage_path", "%q must be an absolute, clean path such as /var/lib/edgeseal-vault/data", v.StoragePath)
	}
	if !nameRE.MatchString(v.Mount) {
		return fieldErr("vault.mount", "%q must match [a-z0-9][a-z0-9_-]* (at most %d characters)", v.Mount, maxNameLen)
	}
	if v.KVVersion != 1 && v.KVVersion != 2 {
		return fieldErr("vault.kv_version", "%d must be 1 or 2", v.KVVersion)
	}
	if !nameRE.MatchString(v.SecretPrefix) {
		return fieldErr("vault.secret_prefix", "%q must match [a-z0-9][a-z0-9_-]* (at most %d characters)", v.SecretPrefix, maxNameLen)
	}
	return between("vault.watch_interval", v.WatchInterval, 50*time.Millisecond, 10*time.Second)
}

func (c *Config) validatePKI() *Error {
	if err := between("pki.validity", c.PKI.Validity, time.Hour, 87600*time.Hour); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, n := range c.PKI.ExtraNames {
		field := fmt.Sprintf("pki.extra_names[%d]", i)
		if _, err := netip.ParseAddr(n); err != nil && !validDNSName(n) {
			return fieldErr(field, "%q is neither an IP address nor a DNS name", n)
		}
		if seen[n] {
			return fieldErr(field, "%q is listed twice", n)
		}
		seen[n] = true
	}
	switch c.PKI.CAKey {
	case CAKeyMemory:
	case CAKeyTPM:
		// The CA key's TPM is the sealer's: the device must be one whatever
		// seal.method is.
		if err := c.validateTPMDevice(); err != nil {
			return err
		}
	default:
		return fieldErr("pki.ca_key", "%q is not where a CA key may live: use memory or tpm", c.PKI.CAKey)
	}
	return nil
}

func validDNSName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !dnsLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

func (c *Config) validateSeal() *Error {
	s := c.Seal
	if s.RecoveryKey != "" && !filepath.IsAbs(s.RecoveryKey) {
		return fieldErr("seal.recovery_key", "%q must be an absolute path", s.RecoveryKey)
	}
	switch s.Method {
	case "ikm-hook":
		if len(s.IKMHook.Command) == 0 || s.IKMHook.Command[0] == "" {
			return fieldErr("seal.ikm_hook.command", "is empty: name the vendor hook that prints this device's key material")
		}
		if !filepath.IsAbs(s.IKMHook.Command[0]) {
			return fieldErr("seal.ikm_hook.command", "%q must be an absolute path", s.IKMHook.Command[0])
		}
		return between("seal.ikm_hook.timeout", s.IKMHook.Timeout, time.Second, 5*time.Minute)
	case "none":
		if !s.AllowInsecureNone {
			return fieldErr("seal.method", "none stores the Vault unseal key in clear on disk and is for development only: "+
				"set seal.allow_insecure_none: true to accept that, or use ikm-hook")
		}
		return nil
	case "tpm2":
		return c.validateTPM2()
	case "pkcs11":
		return c.validatePKCS11()
	}
	return fieldErr("seal.method", "%q is not a seal method: use ikm-hook, tpm2, pkcs11 or none", s.Method)
}

// Bounds of the pkcs11 sealer's settings: PKCS#11 token labels are 32 bytes
// and serial numbers 16 (CK_TOKEN_INFO); a key's CKA_LABEL has no fixed
// length, 64 bytes is plenty.
const (
	maxTokenLabel  = 32
	maxTokenSerial = 16
	maxKeyLabel    = 64
	maxPathLen     = 4096
)

func (c *Config) validatePKCS11() *Error {
	p := c.Seal.PKCS11
	abs := func(field, path, example string) *Error {
		switch {
		case path == "":
			return fieldErr(field, "is empty: set it, e.g. %s", example)
		case len(path) > maxPathLen || !filepath.IsAbs(path) || filepath.Clean(path) != path:
			return fieldErr(field, "%q must be an absolute, clean path such as %s", path, example)
		}
		return nil
	}
	if err := abs("seal.pkcs11.module", p.Module, "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so (the token vendor's PKCS#11 library)"); err != nil {
		return err
	}
	label := func(field, v string, max int) *Error {
		switch {
		case len(v) > max:
			return fieldErr(field, "%q is %d bytes: at most %d", v, len(v), max)
		case strings.TrimSpace(v) != v:
			return fieldErr(field, "%q has leading or trailing spaces, which PKCS#11 pads with: remove them", v)
		}
		return nil
	}
	switch {
	case p.TokenLabel == "" && p.TokenSerial == "":
		return fieldErr("seal.pkcs11.token_label", "is empty, and so is seal.pkcs11.token_serial: name the token by one of them (softhsm2-util --show-slots, pkcs11-tool -L list them)")
	case p.TokenLabel != "" && p.TokenSerial != "":
		return fieldErr("seal.pkcs11.token_serial", "is set with seal.pkcs11.token_label: name the token by one of them only")
	}
	if err := label("seal.pkcs11.token_label", p.TokenLabel, maxTokenLabel); err != nil {
		return err
	}
	if err := label("seal.pkcs11.token_serial", p.TokenSerial, maxTokenSerial); err != nil {
		return err
	}
	if p.KeyLabel == "" {
		return fieldErr("seal.pkcs11.key_label", "is empty: name the token's AES key by its label (CKA_LABEL)")
	}
	if err := label("seal.pkcs11.key_label", p.KeyLabel, maxKeyLabel); err != nil {
		return err
	}
	if err := abs("seal.pkcs11.pin_file", p.PINFile, "/etc/edgeseal/pkcs11-pin"); err != nil {
		return err
	}
	if err := between("seal.pkcs11.timeout", p.Timeout, time.Second, 5*time.Minute); err != nil {
		return err
	}
	if len(p.Environment) > maxPKCS11Environment {
		return fieldErr("seal.pkcs11.environment", "names %d variables: at most %d", len(p.Environment), maxPKCS11Environment)
	}
	for _, name := range p.Environment {
		switch {
		case !envNameRE.MatchString(name):
			return fieldErr("seal.pkcs11.environment", "%q is not a variable name: list names only (the values come from edgeseal-unseal's environment, Environment= in a drop-in)", name)
		case name == "PATH" || strings.HasPrefix(name, "LD_"):
			return fieldErr("seal.pkcs11.environment", "%s cannot be passed: the helper's PATH is fixed, and the dynamic loader's variables would choose what the helper runs", name)
		}
	}
	return nil
}

// maxPKCS11Environment bounds seal.pkcs11.environment.
const maxPKCS11Environment = 16

// envNameRE is a portable environment variable name.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// maxPCR is the highest PCR index a PC-client TPM has.
const maxPCR = 23

// validateTPMDevice checks seal.tpm2.device: the TPM of the tpm2 sealer and
// of pki.ca_key tpm.
func (c *Config) validateTPMDevice() *Error {
	dev := c.Seal.TPM2.Device
	_, swtpm, err := naming.SwtpmAddress(dev)
	switch {
	case err != nil:
		return fieldErr("seal.tpm2.device", "%v", err)
	case swtpm:
	case !filepath.IsAbs(dev) || !strings.HasPrefix(dev, "/dev/"):
		return fieldErr("seal.tpm2.device", "%q must be a TPM device such as /dev/tpmrm0, or swtpm:HOST:PORT", dev)
	}
	return nil
}

func (c *Config) validateTPM2() *Error {
	t := c.Seal.TPM2
	if err := c.validateTPMDevice(); err != nil {
		return err
	}
	if len(t.PCRs) == 0 {
		return fieldErr("seal.tpm2.pcrs", "is empty: name at least one PCR (7 is the Secure Boot state)")
	}
	for i, p := range t.PCRs {
		if p < 0 || p > maxPCR {
			return fieldErr(fmt.Sprintf("seal.tpm2.pcrs[%d]", i), "%d is not a PCR (0 to %d)", p, maxPCR)
		}
		if slices.Contains(t.PCRs[:i], p) {
			return fieldErr(fmt.Sprintf("seal.tpm2.pcrs[%d]", i), "PCR %d is listed twice", p)
		}
	}
	if t.PINFile != "" && !filepath.IsAbs(t.PINFile) {
		return fieldErr("seal.tpm2.pin_file", "%q must be an absolute path", t.PINFile)
	}
	switch t.Storage {
	case TPM2StorageFile:
		return nil
	case TPM2StorageNV:
	default:
		return fieldErr("seal.tpm2.storage", "%q is not a storage: use file or nv", t.Storage)
	}
	if t.NVIndex < NVOwnerFirst || t.NVIndex >= NVOwnerLast {
		return fieldErr("seal.tpm2.nv_index", "%#08x is not in the TPM owner's NV range %#08x to %#08x (it and the next handle are used)",
			t.NVIndex, NVOwnerFirst, NVOwnerLast-1)
	}
	if t.CounterIndex < NVOwnerFirst || t.CounterIndex > NVOwnerLast {
		return fieldErr("seal.tpm2.counter_index", "%#08x is not in the TPM owner's NV range %#08x to %#08x", t.CounterIndex, NVOwnerFirst, NVOwnerLast)
	}
	if t.CounterIndex == t.NVIndex || t.CounterIndex == t.NVIndex+1 {
		return fieldErr("seal.tpm2.counter_index", "%#08x is one of the sealed key's handles (seal.tpm2.nv_index %#08x and the next): choose another",
			t.CounterIndex, t.NVIndex)
	}
	return nil
}

// vaultMaxLeaseTTL is Vault's (and OpenBao's) default max lease TTL.
const vaultMaxLeaseTTL = 768 * time.Hour

func (c *Config) validateTokens() *Error {
	t := c.Tokens
	if err := between("tokens.service_period", t.ServicePeriod, time.Minute, 8760*time.Hour); err != nil {
		return err
	}
	// Vault refuses to create a token of a role whose explicit max TTL passes
	// the token mount's max lease TTL (768h unless an operator tuned it).
	if err := between("tokens.service_max_ttl", t.ServiceMaxTTL, t.ServicePeriod.D(), vaultMaxLeaseTTL); err != nil {
		return err
	}
	if err := between("tokens.issuing_period", t.IssuingPeriod, time.Minute, 8760*time.Hour); err != nil {
		return err
	}
	if t.IssuingRotation != 0 && t.IssuingRotation.D() < time.Minute {
		return fieldErr("tokens.issuing_rotation", "%s is out of range: must be 0s (half of tokens.issuing_period) or at least 1m", t.IssuingRotation)
	}
	if t.IssuingRotation.D() > t.IssuingPeriod.D()/2 {
		return fieldErr("tokens.issuing_rotation", "%s is more than half of tokens.issuing_period (%s): the token-issuing token could expire while the provider is idle",
			t.IssuingRotation, t.IssuingPeriod)
	}
	if err := between("tokens.wrap_ttl", t.WrapTTL, 10*time.Second, 24*time.Hour); err != nil {
		return err
	}
	if err := between("tokens.revoke_delay", t.RevokeDelay, 0, time.Minute); err != nil {
		return err
	}
	if !userRE.MatchString(t.TokendUser) {
		return fieldErr("tokens.tokend_user", "%q is not a valid user name", t.TokendUser)
	}
	return nil
}

// MaxInFlight bounds tokend.max_in_flight.
const MaxInFlight = 4096

func (c *Config) validateTokend() *Error {
	t := c.Tokend
	if t.IdleExit != 0 {
		if err := between("tokend.idle_exit", t.IdleExit, time.Second, 24*time.Hour); err != nil {
			return fieldErr("tokend.idle_exit", "%s is out of range: must be 0 (never) or between 1s and 24h", t.IdleExit)
		}
	}
	if err := between("tokend.request_timeout", t.RequestTimeout, 100*time.Millisecond, time.Minute); err != nil {
		return err
	}
	if t.MaxInFlight < 1 || t.MaxInFlight > MaxInFlight {
		return fieldErr("tokend.max_in_flight", "%d is out of range: must be between 1 and %d", t.MaxInFlight, MaxInFlight)
	}
	return nil
}

func (c *Config) validateServices() *Error {
	if len(c.Services) > MaxServices {
		return fieldErr("services", "%d services: at most %d", len(c.Services), MaxServices)
	}
	seen := map[string]bool{}
	for i, s := range c.Services {
		f := fmt.Sprintf("services[%d]", i)
		switch {
		case !nameRE.MatchString(s.Name):
			return fieldErr(f+".name", "%q must match [a-z0-9][a-z0-9_-]* (at most %d characters)", s.Name, maxNameLen)
		case s.Name == "shared":
			return fieldErr(f+".name", `"shared" is reserved for the shared groups' namespace`)
		case seen[s.Name]:
			return fieldErr(f+".name", "%q is defined twice", s.Name)
		}
		seen[s.Name] = true
		if s.TLS && strings.Contains(s.Name, "_") {
			return fieldErr(f+".tls", "service %q has an underscore in its name, which cannot be the DNS name its certificate needs: rename it, or drop tls", s.Name)
		}
		for _, list := range []struct {
			key    string
			groups []string
		}{{"shared_read", s.SharedRead}, {"shared_write", s.SharedWrite}} {
			for j, g := range list.groups {
				gf := fmt.Sprintf("%s.%s[%d]", f, list.key, j)
				if !nameRE.MatchString(g) {
					return fieldErr(gf, "group %q must match [a-z0-9][a-z0-9_-]* (at most %d characters)", g, maxNameLen)
				}
				if list.key == "shared_read" && slices.Contains(s.SharedWrite, g) {
					return fieldErr(gf, "group %q is in both shared_read and shared_write: keep it in one", g)
				}
			}
		}
	}
	return nil
}

// trustDomainRE is a SPIFFE trust domain: lower-case letters, digits, dots,
// dashes and underscores (the SPIFFE ID spec), at most 255.
var trustDomainRE = regexp.MustCompile(`^[a-z0-9._-]{1,255}$`)

func (c *Config) validateServiceTLS() *Error {
	t := c.ServiceTLS
	switch {
	case !nameRE.MatchString(t.Mount):
		return fieldErr("service_tls.mount", "%q must match [a-z0-9][a-z0-9_-]* (at most %d characters)", t.Mount, maxNameLen)
	case t.Mount == c.Vault.Mount:
		return fieldErr("service_tls.mount", "%q is vault.mount too: the service CA needs a mount of its own", t.Mount)
	case t.TrustDomain != "" && (!trustDomainRE.MatchString(t.TrustDomain) || strings.Trim(t.TrustDomain, ".") != t.TrustDomain):
		return fieldErr("service_tls.trust_domain", "%q is not a SPIFFE trust domain: lower-case letters, digits, '.', '-' and '_', e.g. plant7.example", t.TrustDomain)
	}
	return between("service_tls.ttl", t.TTL, 5*time.Minute, 720*time.Hour)
}

// validateIdentities checks each service's identity rules, and that no unit,
// snap app, uid or gid names two services: a caller must never be able to get
// a token of a service it was not meant to be.
func (c *Config) validateIdentities() *Error {
	units, snaps := map[string]string{}, map[string]string{}
	uids, gids := map[uint32]string{}, map[uint32]string{}
	for i, s := range c.Services {
		f := fmt.Sprintf("services[%d]", i)
		for j, u := range s.Units {
			uf := fmt.Sprintf("%s.units[%d]", f, j)
			if err := naming.ValidUnitName(u); err != nil {
				return fieldErr(uf, "%q is not a systemd unit name (%v), e.g. app-one.service", u, err)
			}
			if strings.HasPrefix(u, "edgeseal") {
				return fieldErr(uf, "%q is one of edgeseal's own units, which get no service token", u)
			}
			if other, ok := units[u]; ok {
				return fieldErr(uf, "unit %q already belongs to service %q: a unit is one service", u, other)
			}
			units[u] = s.Name
		}
		for j, a := range s.SnapApps {
			af := fmt.Sprintf("%s.snap_apps[%d]", f, j)
			if err := naming.ValidSnapApp(a); err != nil {
				return fieldErr(af, "%q is not a snap app (%v): write <snap>.<app>", a, err)
			}
			if other, ok := snaps[a]; ok {
				return fieldErr(af, "snap app %q already belongs to service %q: an app is one service", a, other)
			}
			snaps[a] = s.Name
		}
		for j, id := range s.UIDs {
			if err := idRule(uids, id, s.Name, "uid"); err != nil {
				return fieldErr(fmt.Sprintf("%s.uids[%d]", f, j), "%s", err)
			}
		}
		for j, id := range s.GIDs {
			if err := idRule(gids, id, s.Name, "gid"); err != nil {
				return fieldErr(fmt.Sprintf("%s.gids[%d]", f, j), "%s", err)
			}
		}
		if len(s.ExeSHA256) > maxExePins {
			return fieldErr(f+".exe_sha256", "has %d digests: at most %d", len(s.ExeSHA256), maxExePins)
		}
		for j, d := range s.ExeSHA256 {
			ef := fmt.Sprintf("%s.exe_sha256[%d]", f, j)
			if !naming.ValidSHA256(d) {
				return fieldErr(ef, "%q is not a SHA-256 in lower-case hex (64 characters: sha256sum's output)", d)
			}
			if slices.Contains(s.ExeSHA256[:j], d) {
				return fieldErr(ef, "%s is listed twice", d)
			}
		}
		if err := unitFiles(f, s.UnitFiles); err != nil {
			return err
		}
		if err := snapPins(f, s.SnapRevisions, s.SnapPublishers); err != nil {
			return err
		}
		if (len(s.SnapRevisions) > 0 || len(s.SnapPublishers) > 0) && !namesASnap(&s) {
			key := "snap_revisions"
			if len(s.SnapRevisions) == 0 {
				key = "snap_publishers"
			}
			return fieldErr(f+"."+key, "pins a snap, but the service names none: list its apps in snap_apps (or its daemons' units, snap.<snap>.<app>.service, in units); a revision or publisher alone would pass any snap's")
		}
	}
	return nil
}

// snapPins validates a service's snap_revisions and snap_publishers (f names
// the service): each as snapd writes it, at most maxSnapPins, each once.
func snapPins(f string, revisions, publishers []string) *Error {
	for _, pins := range []struct {
		key, what string
		list      []string
		check     func(string) error
	}{
		{"snap_revisions", "snap revision", revisions, naming.ValidSnapRevision},
		{"snap_publishers", "publisher id", publishers, naming.ValidAccountID},
	} {
		if len(pins.list) > maxSnapPins {
			return fieldErr(f+"."+pins.key, "has %d: at most %d", len(pins.list), maxSnapPins)
		}
		for j, v := range pins.list {
			pf := fmt.Sprintf("%s.%s[%d]", f, pins.key, j)
			if err := pins.check(v); err != nil {
				return fieldErr(pf, "%q is not a %s: %v", v, pins.what, err)
			}
			if slices.Contains(pins.list[:j], v) {
				return fieldErr(pf, "%s is listed twice", v)
			}
		}
	}
	return nil
}

// namesASnap reports whether s names a snap: a snap app, or the unit of a
// snap's daemon (snap.<snap>.<app>.service).
func namesASnap(s *Service) bool {
	if len(s.SnapApps) > 0 {
		return true
	}
	for _, u := range s.Units {
		rest, ok := strings.CutPrefix(u, "snap.")
		if app, ok2 := strings.CutSuffix(rest, ".service"); ok && ok2 && naming.ValidSnapApp(app) == nil {
			return true
		}
	}
	return false
}

// maxSnapPins bounds a service's snap_revisions and snap_publishers.
const maxSnapPins = 16

// unitFiles validates a service's unit_files (f names the service): absolute,
// clean paths of unit files (a unit name) or drop-ins (*.conf in a *.d
// directory), at least one unit file, each once.
func unitFiles(f string, files []string) *Error {
	if len(files) > maxUnitFilePins {
		return fieldErr(f+".unit_files", "has %d files: at most %d", len(files), maxUnitFilePins)
	}
	fragments := 0
	for j, p := range files {
		uf := fmt.Sprintf("%s.unit_files[%d]", f, j)
		switch {
		case len(p) > maxUnitFilePath:
			return fieldErr(uf, "is %d bytes long: at most %d", len(p), maxUnitFilePath)
		case !filepath.IsAbs(p) || filepath.Clean(p) != p:
			return fieldErr(uf, "%q is not an absolute, clean path (systemctl show -P FragmentPath UNIT says it)", p)
		case strings.HasSuffix(p, ".conf"):
			if !strings.HasSuffix(filepath.Dir(p), ".d") {
				return fieldErr(uf, "%q is not a drop-in: a drop-in is a .conf file in a UNIT.d directory (systemctl show -P DropInPaths UNIT lists them)", p)
			}
		default:
			// An instance's unit file is its template's (vendor@.service).
			if err := naming.ValidUnitName(strings.Replace(filepath.Base(p), "@.", "@i.", 1)); err != nil {
				return fieldErr(uf, "%q is neither a unit file (%v) nor a drop-in (*.conf)", p, err)
			}
			fragments++
		}
		if slices.Contains(files[:j], p) {
			return fieldErr(uf, "%s is listed twice", p)
		}
	}
	if len(files) > 0 && fragments == 0 {
		return fieldErr(f+".unit_files", "lists drop-ins only: list the unit file too (systemctl show -P FragmentPath UNIT)")
	}
	return nil
}

// maxUnitFilePins and maxUnitFilePath bound a service's unit_files (and so
// what the ledger records of a holder's unit files).
const (
	maxUnitFilePins = 16
	maxUnitFilePath = 255
)

// maxExePins bounds a service's exe_sha256.
const maxExePins = 16

func idRule(seen map[uint32]string, id uint32, service, kind string) error {
	if id == 0 {
		return fmt.Errorf("%s 0 would match every root process: match root services by unit instead", kind)
	}
	if other, ok := seen[id]; ok {
		return fmt.Errorf("%s %d already belongs to service %q: an id is one service", kind, id, other)
	}
	seen[id] = service
	return nil
}

// MaxFileVaults bounds the file vaults of a device, the default ones included.
const MaxFileVaults = 256

var (
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// volatileDirs are on filesystems (proc, sysfs, devtmpfs, tmpfs) where a vault
	// can be neither encrypted nor kept across a reboot.
	volatileDirs = []string{"/proc", "/sys", "/dev", "/run", "/var/run"}
)

const (
	exampleUUID  = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
	newUUIDHint  = "for a new vault, any random one: cat /proc/sys/kernel/random/uuid"
	vaultNestMsg = "vaults cannot nest (a directory inside a vault is encrypted with that vault's key)"
)

// validateFileVaults checks the file vaults section: each entry on its own, then
// the vaults the device keeps (Effective, the defaults included) together, so
// that no two vaults share a name, a UUID or a directory, and none is inside
// another.
func (c *Config) validateFileVaults() *Error {
	fv := c.FileVaults
	vaults := fv.Effective()
	if len(vaults) > MaxFileVaults {
		if n := len(vaults) - len(fv.Vaults); n > 0 {
			return fieldErr("file_vaults.vaults", "%d vaults and %d default ones: at most %d in all (file_vaults.defaults: false leaves out the default ones)",
				len(fv.Vaults), n, MaxFileVaults)
		}
		return fieldErr("file_vaults.vaults", "%d vaults: at most %d", len(fv.Vaults), MaxFileVaults)
	}
	if err := vaultPath("file_vaults.dir", fv.Dir, "/var/lib/edgeseal/vaults"); err != nil {
		return err
	}
	for i, v := range fv.Vaults {
		if err := validateFileVault(fmt.Sprintf("file_vaults.vaults[%d]", i), v); err != nil {
			return err
		}
	}
	// Effective lists the default vaults first, then fv.Vaults in order.
	nDefault := len(vaults) - len(fv.Vaults)
	field := func(i int) string { return fmt.Sprintf("file_vaults.vaults[%d]", i-nDefault) }
	// what names vault i for an operator; where adds its directory.
	what := func(i int) string {
		if i < nDefault {
			return fmt.Sprintf("the default vault %s at %s", vaults[i].Name, vaults[i].Path)
		}
		return field(i)
	}
	where := func(i int) string {
		if i < nDefault {
			return what(i)
		}
		return fmt.Sprintf("%s at %s", field(i), vaults[i].Path)
	}
	for i := nDefault; i < len(vaults); i++ {
		v, f := vaults[i], field(i)
		// path names the directory as the operator wrote it, or says it is the default.
		path := fmt.Sprintf("%q", v.Path)
		if fv.Vaults[i-nDefault].Path == "" {
			path = fmt.Sprintf("%q (file_vaults.dir/name: path is not set)", v.Path)
		}
		for j := range i {
			o := vaults[j]
			switch {
			case o.Name == v.Name:
				return fieldErr(f+".name", "%q is already the name of %s: a name is one vault", v.Name, what(j))
			case o.UUID != "" && o.UUID == v.UUID:
				return fieldErr(f+".uuid", "%q is already the UUID of %s: each vault has its own (%s)", v.UUID, what(j), newUUIDHint)
			case o.Path == v.Path && j < nDefault:
				return fieldErr(f+".path", "%s is already the path of %s: give this vault another path, name it %s to set the default vault's policy, "+
					"or set file_vaults.defaults: false", path, what(j), o.Name)
			case o.Path == v.Path:
				return fieldErr(f+".path", "%s is already the path of %s: a directory is one vault", path, what(j))
			case inside(v.Path, o.Path):
				return fieldErr(f+".path", "%s is inside %s: %s", path, where(j), vaultNestMsg)
			case inside(o.Path, v.Path):
				return fieldErr(f+".path", "%s holds %s: %s", path, where(j), vaultNestMsg)
			}
		}
	}
	return nil
}

// inside is true if path is a directory under dir (both clean, absolute).
func inside(path, dir string) bool {
	return strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// vaultPath checks a directory of file vaults: absolute, clean, not the root,
// and on a disk filesystem.
func vaultPath(field, p, example string) *Error {
	switch {
	case p == "/":
		return fieldErr(field, `"/" is the root directory: choose a directory of its own, such as %s`, example)
	case !filepath.IsAbs(p) || filepath.Clean(p) != p:
		return fieldErr(field, "%q must be an absolute, clean path such as %s", p, example)
	}
	// edgeseal's state must stay readable before any vault is unlocked: the
	// sealed unseal key, and the vaults' own wrapped keys.
	const state, meta = "/var/lib/edgeseal", "/var/lib/edgeseal/fsvault"
	if p == state || inside(state, p) || p == meta || inside(p, meta) {
		return fieldErr(field, "%q would put edgeseal's own state in a vault (%s holds the sealed unseal key and %s the vaults' wrapped keys, "+
			"read before any vault is unlocked): choose a directory of its own, such as %s", p, state, meta, example)
	}
	for _, d := range volatileDirs {
		if p == d || inside(p, d) {
			return fieldErr(field, "%q is under %s, which is not a disk filesystem: a vault there could not be encrypted and "+
				"would not survive a reboot; choose a directory on the disk, such as %s", p, d, example)
		}
	}
	return nil
}

// validateFileVault checks one entry of file_vaults.vaults on its own.
func validateFileVault(f string, v FileVault) *Error {
	switch {
	case v.Schema == 0:
		return fieldErr(f+".schema", "is missing: set schema: %d (the vault entry format this build reads)", FileVaultSchema)
	case v.Schema > FileVaultSchema:
		return fieldErr(f+".schema", "%d is newer than this build of edgeseal, which reads schema %d only: "+
			"update edgeseal, or write the entry in schema %d", v.Schema, FileVaultSchema, FileVaultSchema)
	case v.Schema != FileVaultSchema:
		return fieldErr(f+".schema", "%d is not a schema version: set schema: %d (the vault entry format this build reads)", v.Schema, FileVaultSchema)
	}
	switch {
	case v.UUID == "":
		return fieldErr(f+".uuid", "is missing: set the vault's UUID, e.g. %s (%s; an existing vault's is in `edgeseal vault list`)", exampleUUID, newUUIDHint)
	case !uuidRE.MatchString(v.UUID):
		return fieldErr(f+".uuid", "%q is not a UUID: write it in RFC 4122 text form, 8-4-4-4-12 hexadecimal digits, e.g. %s", v.UUID, exampleUUID)
	case strings.ToLower(v.UUID) != v.UUID:
		return fieldErr(f+".uuid", "%q must be written in lower case: %s", v.UUID, strings.ToLower(v.UUID))
	case strings.Trim(v.UUID, "0-") == "":
		return fieldErr(f+".uuid", "%q is the nil UUID, which names no vault (%s)", v.UUID, newUUIDHint)
	}
	if !nameRE.MatchString(v.Name) {
		return fieldErr(f+".name", "%q must match [a-z0-9][a-z0-9_-]* (at most %d characters)", v.Name, maxNameLen)
	}
	if v.Path != "" {
		if err := vaultPath(f+".path", v.Path, "/var/lib/edgeseal/vaults/"+v.Name); err != nil {
			return err
		}
	}
	switch v.Policy {
	case "", VaultUnlock, VaultLock, VaultChangeKey:
	default:
		return fieldErr(f+".policy", "%q is not a vault policy: use %s, %s or %s", v.Policy, VaultUnlock, VaultLock, VaultChangeKey)
	}
	switch v.KeySource {
	case "", KeySourceTPM:
		if v.Attestation {
			return fieldErr(f+".attestation", "needs a controller: set key_source: %s or %s, or leave attestation out", KeySourceController, KeySourceTPMController)
		}
		if v.Offline {
			return fieldErr(f+".offline", "needs a controller: set key_source: %s or %s, or leave offline out", KeySourceController, KeySourceTPMController)
		}
	case KeySourceController, KeySourceTPMController:
	default:
		return fieldErr(f+".key_source", "%q is not a key source: use %s (the default), %s or %s", v.KeySource, KeySourceTPM, KeySourceController, KeySourceTPMController)
	}
	switch {
	case v.KeyVersion < 0:
		return fieldErr(f+".key_version", "%d is negative: a key version is 0 or more", v.KeyVersion)
	case v.Policy == VaultChangeKey && v.KeySource != "" && v.KeySource != KeySourceTPM:
		return fieldErr(f+".policy", "%s is for key source %s: a controller rotates its own keys (the device rewraps to them)", VaultChangeKey, KeySourceTPM)
	case v.Policy == VaultChangeKey && v.KeyVersion < 1:
		return fieldErr(f+".key_version", "is %d with policy %s: set key_version to the version to rewrap to "+
			"(above the vault's current one, which `edgeseal vault list` shows)", v.KeyVersion, VaultChangeKey)
	}
	return nil
}

// VaultAddr is the https URL clients use to reach Vault: the listen address, with
// an unspecified host (0.0.0.0, ::) replaced by loopback.
func (c *Config) VaultAddr() string {
	host, port, err := net.SplitHostPort(c.Vault.Listen)
	if err != nil {
		return "https://" + c.Vault.Listen
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port)
}

// Claims edgeseal fills in itself; the config cannot set them.
var reservedClaims = []string{"device_id", "location", "addresses"}

// maxStaticClaims leaves room in a quote (naming.MaxClaims) for the
// reserved claims.
const maxStaticClaims = 13

func (c *Config) validateController() *Error {
	ct := c.Controller
	if len(ct.Claims) > maxStaticClaims {
		return fieldErr("controller.claims", "has %d claims: at most %d (a quote carries %d, and %s are edgeseal's)",
			len(ct.Claims), maxStaticClaims, maxStaticClaims+len(reservedClaims), strings.Join(reservedClaims, ", "))
	}
	for _, k := range slices.Sorted(maps.Keys(ct.Claims)) {
		if slices.Contains(reservedClaims, k) {
			return fieldErr("controller.claims."+k, "is filled in by edgeseal: remove it (location comes from controller.location_file, addresses from controller.addresses)")
		}
		if err := naming.CheckClaims(map[string]string{k: ct.Claims[k]}); err != nil {
			return fieldErr("controller.claims."+k, "%v", err)
		}
	}
	if ct.LocationFile != "" && (!filepath.IsAbs(ct.LocationFile) || filepath.Clean(ct.LocationFile) != ct.LocationFile) {
		return fieldErr("controller.location_file", "%q must be an absolute, clean path, such as /run/gnss/location", ct.LocationFile)
	}
	if ct.Timeout.D() < 100*time.Millisecond || ct.Timeout.D() > 5*time.Minute {
		return fieldErr("controller.timeout", "%v is out of range: use 100ms to 5m (default 10s)", ct.Timeout.D())
	}
	return nil
}
