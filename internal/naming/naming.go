// Package naming checks the syntax of the names and small values edgeseal
// takes from its config and from its peers: systemd unit names, snap app
// names, attestation claims, a software TPM's address. One leaf package, as
// snapd's snap/naming, so that the config and the mechanisms that act on
// these names (peer, ctlproto, tpm) check them by one set of rules, and so
// that the config depends on nothing else of edgeseal's: edgeseal-pki and the
// snap hook, which load it, do not link the TPM stack.
//
// It imports nothing of edgeseal's.
package naming

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// unitSuffixes are the unit types systemd knows.
var unitSuffixes = []string{".service", ".socket", ".target", ".device", ".mount", ".automount",
	".swap", ".timer", ".path", ".slice", ".scope"}

// ValidUnitName checks s the way systemd's unit_name_is_valid does for a unit
// or an instance of a template (a template itself, "foo@.service", is no unit a
// process can run in, so it is refused).
func ValidUnitName(s string) error {
	if len(s) > 255 {
		return errors.New("longer than 255 bytes")
	}
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 {
		return errors.New("no unit type suffix such as .service")
	}
	suffix := s[dot:]
	known := false
	for _, k := range unitSuffixes {
		if suffix == k {
			known = true
		}
	}
	if !known {
		return fmt.Errorf("unknown unit type %q", suffix)
	}
	name := s[:dot]
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":-_.\\@", c) >= 0) {
			return fmt.Errorf("holds %q", c)
		}
	}
	if prefix, instance, ok := strings.Cut(name, "@"); ok {
		switch {
		case prefix == "":
			return errors.New("nothing before @")
		case instance == "":
			return errors.New("a template: name an instance, e.g. foo@1.service")
		case strings.Contains(instance, "@"):
			return errors.New("more than one @")
		}
	}
	return nil
}

// ValidSnapApp checks "<snap>.<app>" (or "<snap>_<instance key>.<app>") with
// snapd's rules for snap and app names.
func ValidSnapApp(s string) error {
	snap, app, ok := strings.Cut(s, ".")
	if !ok {
		return errors.New("no . between snap and app")
	}
	if err := ValidSnapInstance(snap); err != nil {
		return err
	}
	if err := validAppName(app); err != nil {
		return fmt.Errorf("app name %q: %w", app, err)
	}
	return nil
}

// SnapOfApp is the snap (instance) name of "<snap>.<app>": the part before
// the first "." (a snap name holds none). It does not check the name.
func SnapOfApp(app string) string {
	snap, _, _ := strings.Cut(app, ".")
	return snap
}

// maxSnapRevision bounds a revision's number: snapd keeps it in an int, and
// no store has handed out revisions near a billion.
const maxSnapRevision = 1<<31 - 1

// ValidSnapRevision checks a snap revision as snapd writes it (snap.Revision's
// String): a store's, a positive integer ("42"), or a local install's, x and
// a positive integer ("x1"), without leading zeros or a sign.
func ValidSnapRevision(s string) error {
	digits := strings.TrimPrefix(s, "x")
	_, err := strconv.ParseUint(digits, 10, 31)
	switch {
	case digits == "" || digits[0] < '1' || digits[0] > '9':
		return errors.New("want a positive integer (a store's revision) or x and one (a local install's), as snap list writes it")
	case err != nil:
		return fmt.Errorf("want a number of at most %d", maxSnapRevision)
	}
	return nil
}

// ValidAccountID checks a store account id (a snap's publisher id, as snap
// info --verbose and snapd's API write it) by snapd's rule for account ids:
// 32 letters and digits, or 2 to 28 lowercase letters, digits and hyphens
// (a few well-known accounts, such as canonical).
func ValidAccountID(s string) error {
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	switch {
	case len(s) == 32 && strings.Trim(s, alnum) == "":
		return nil
	case len(s) >= 2 && len(s) <= 28 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == "":
		return nil
	}
	return errors.New("want 32 letters and digits, or 2 to 28 lowercase letters, digits and hyphens (the publisher's account id: snap info --verbose SNAP)")
}

// ValidSnapInstance checks a snap's instance name, "<snap>" or
// "<snap>_<instance key>", with snapd's rules.
func ValidSnapInstance(s string) error {
	name, key, hasKey := strings.Cut(s, "_")
	if err := validSnapName(name); err != nil {
		return fmt.Errorf("snap name %q: %w", name, err)
	}
	if hasKey {
		if key == "" || len(key) > 10 || strings.Trim(key, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			return fmt.Errorf("instance key %q: want 1 to 10 lowercase letters or digits", key)
		}
	}
	return nil
}

func validSnapName(s string) error {
	switch {
	case len(s) < 2 || len(s) > 40:
		return errors.New("want 2 to 40 characters")
	case s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--"):
		return errors.New("a hyphen at an end or two in a row")
	case strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") != "":
		return errors.New("want lowercase letters, digits and hyphens")
	case strings.Trim(s, "0123456789-") == "":
		return errors.New("want at least one letter")
	}
	return nil
}

func validAppName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > 256:
		return errors.New("longer than 256 bytes")
	case s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--"):
		return errors.New("a hyphen at an end or two in a row")
	case strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "":
		return errors.New("want letters, digits and hyphens")
	}
	return nil
}

// Attestation claims: at most MaxClaims in a quote or a device's expected
// set, each name of lower case letters, digits and _, each value printable
// text of at most MaxClaimLen bytes.
const (
	MaxClaims   = 16
	MaxClaimLen = 256
)

var claimRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// ValidClaimName tells whether s may name a claim.
func ValidClaimName(s string) bool { return claimRE.MatchString(s) }

// CheckClaims checks a set of claims: at most MaxClaims, names of lower case
// letters, digits and _, values of printable text up to MaxClaimLen bytes.
func CheckClaims(claims map[string]string) error {
	if len(claims) > MaxClaims {
		return fmt.Errorf("claims: %d, at most %d", len(claims), MaxClaims)
	}
	var errs []error
	for k, v := range claims {
		if !ValidClaimName(k) {
			errs = append(errs, fmt.Errorf("claims: %q is not a claim name (lower case letters, digits, _)", k))
		}
		if err := CheckText("claims."+k, v, 0, MaxClaimLen); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CheckText checks s is minLen to maxLen bytes of text: no control character
// but newline, no DEL, no invalid UTF-8; the error names field, never quotes s.
func CheckText(field, s string, minLen, maxLen int) error {
	if len(s) < minLen || len(s) > maxLen {
		return fmt.Errorf("%s: %d bytes, %d to %d", field, len(s), minLen, maxLen)
	}
	for _, r := range s {
		if r < 0x20 && r != '\n' || r == 0x7f || r == '\uFFFD' {
			return fmt.Errorf("%s: holds a control character or invalid UTF-8", field)
		}
	}
	return nil
}

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

// ValidSHA256 reports whether s is a SHA-256 digest in lower-case hex, as
// sha256sum prints it: how the config pins an executable (a service's
// exe_sha256) and how edgeseal-exeid answers.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
