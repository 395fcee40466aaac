package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
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
	checks := []func() *Error{c.validateVault, c.validatePKI, c.validateSeal, c.validateTokens, c.validateServices}
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
	}
	return fieldErr("seal.method", "%q is not a seal method: use ikm-hook, tpm2 or none", s.Method)
}

// maxPCR is the highest PCR index a PC-client TPM has.
const maxPCR = 23

func (c *Config) validateTPM2() *Error {
	t := c.Seal.TPM2
	dev := t.Device
	switch {
	case strings.HasPrefix(dev, "swtpm:"):
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(dev, "swtpm:")); err != nil {
			return fieldErr("seal.tpm2.device", "%q must be swtpm:HOST:PORT", dev)
		}
	case !filepath.IsAbs(dev) || !strings.HasPrefix(dev, "/dev/"):
		return fieldErr("seal.tpm2.device", "%q must be a TPM device such as /dev/tpmrm0, or swtpm:HOST:PORT", dev)
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
	return nil
}

func (c *Config) validateTokens() *Error {
	t := c.Tokens
	if err := between("tokens.service_period", t.ServicePeriod, time.Minute, 8760*time.Hour); err != nil {
		return err
	}
	if err := between("tokens.issuing_period", t.IssuingPeriod, time.Minute, 8760*time.Hour); err != nil {
		return err
	}
	if !userRE.MatchString(t.TokendUser) {
		return fieldErr("tokens.tokend_user", "%q is not a valid user name", t.TokendUser)
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
