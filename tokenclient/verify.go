package tokenclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// ErrImpostor: the answer on the socket did not come from edgeseal's token
// provider. The token it holds was issued to another process (or by another
// Vault), so something else listens on the socket: in a snap, another consumer
// of edgeseal's tokend slot may have replaced it. The token is not used; tell
// the operator, and look in edgeseal-tokend's journal for "socket replaced".
var ErrImpostor = errors.New("the answer did not come from edgeseal's token provider")

// The metadata the provider sets on every token it issues
// (internal/tokend/issue.go): who asked, in which boot.
const (
	metaService = "edgeseal_service"
	metaPID     = "pid"
	metaBootID  = "boot_id"
)

// bootIDFile is this boot's id, which the provider writes into each token.
const bootIDFile = "/proc/sys/kernel/random/boot_id"

// containerFile exists in a container systemd runs in (systemd writes it).
const containerFile = "/run/systemd/container"

// self is this process as the provider sees it.
type self struct {
	pid     int
	bootID  string
	started time.Time // when the process started; zero: unknown
	// inContainer: the boot id may differ from the provider's in the same
	// boot. A container manager (systemd-nspawn) mounts a boot id of the
	// container's over the kernel's, and a service systemd sandboxes in a
	// mount namespace of its own (edgeseal-tokend.service) may see the
	// kernel's (seen in the test bed's systemd-nspawn containers).
	inContainer bool
}

func thisProcess() (self, error) {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return self{}, fmt.Errorf("cannot read this boot's id: %w", err)
	}
	_, err = os.Stat(containerFile)
	return self{pid: os.Getpid(), bootID: strings.TrimSpace(string(b)), started: processStart(), inContainer: err == nil}, nil
}

// startSlack allows for Vault's creation_time being whole seconds.
const startSlack = time.Second

// checkIssuedTo checks Vault's lookup-self data of a token names p as its
// holder (pid, boot id, created after p started) and service, when service is
// not "", as its service. Any difference is ErrImpostor; a different boot id
// is not one in a container (see self.inContainer).
func checkIssuedTo(data map[string]any, p self, service string) error {
	meta, _ := data["meta"].(map[string]any)
	str := func(k string) string { s, _ := meta[k].(string); return s }
	switch {
	case meta == nil || str(metaPID) == "" || str(metaBootID) == "":
		return fmt.Errorf("%w: the token carries no edgeseal metadata: edgeseal's provider did not issue it", ErrImpostor)
	case str(metaPID) != strconv.Itoa(p.pid):
		return fmt.Errorf("%w: the token was issued to pid %s, not to this process (pid %d)", ErrImpostor, str(metaPID), p.pid)
	case str(metaBootID) != p.bootID && !p.inContainer:
		// In a container the start-time check below stands for it (and the
		// provider's set-up revokes every token of a previous boot).
		return fmt.Errorf("%w: the token was issued in boot %s, not in this boot (%s)", ErrImpostor, str(metaBootID), p.bootID)
	case service != "" && str(metaService) != service:
		return fmt.Errorf("%w: the answer says service %s, but the token is of service %q", ErrImpostor, service, str(metaService))
	}
	if created, ok := unixTime(data["creation_time"]); ok && !p.started.IsZero() && created.Add(startSlack).Before(p.started) {
		// An earlier process with this pid (the pid was reused) got it.
		return fmt.Errorf("%w: the token was issued at %s, before this process (pid %d) started at %s",
			ErrImpostor, created.UTC().Format(time.RFC3339), p.pid, p.started.UTC().Format(time.RFC3339))
	}
	return nil
}

func unixTime(v any) (time.Time, bool) {
	var n int64
	switch v := v.(type) {
	case json.Number:
		i, err := v.Int64()
		if err != nil {
			return time.Time{}, false
		}
		n = i
	case float64:
		n = int64(v)
	default:
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}

// processStart is when this process started, from /proc (zero if unknown).
func processStart() time.Time { return processStartOf("/proc/self/stat") }

// processStartOf is when the process of a /proc/PID/stat file started.
func processStartOf(statFile string) time.Time {
	stat, err := os.ReadFile(statFile)
	if err != nil {
		return time.Time{}
	}
	// The command name (field 2) may hold spaces: fields count from the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return time.Time{}
	}
	f := strings.Fields(string(stat[i+1:]))
	const startField = 22 - 3 // starttime is field 22; f[0] is field 3
	if len(f) <= startField {
		return time.Time{}
	}
	ticks, err := strconv.ParseInt(f[startField], 10, 64)
	if err != nil {
		return time.Time{}
	}
	procStat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(procStat), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}
			}
			const clkTck = 100 // USER_HZ on Linux
			return time.Unix(btime, 0).Add(time.Duration(ticks) * time.Second / clkTck)
		}
	}
	return time.Time{}
}

// verify asks the pinned Vault about t's token and checks it was issued to
// this process, for the service the answer names.
func (t *Token) verify(ctx context.Context, pinned pin, p self) error {
	c, err := t.Client()
	if err != nil {
		return err
	}
	sec, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return vaultCheckErr(err, pinned)
	}
	if sec == nil || sec.Data == nil {
		return fmt.Errorf("%w: Vault at %s says nothing about the token", ErrProtocol, pinned.addr)
	}
	return checkIssuedTo(sec.Data, p, t.Service)
}

// vaultCheckErr says why the pinned Vault could not vouch for a token.
func vaultCheckErr(err error, pinned pin) error {
	var re *api.ResponseError
	switch {
	case errors.As(err, &re) && re.StatusCode == http.StatusServiceUnavailable:
		return fmt.Errorf("%w: cannot check the token with Vault at %s: %v", ErrSealed, pinned.addr, err)
	case errors.As(err, &re) && re.StatusCode == http.StatusForbidden:
		// A token revoked since (a newer one went to the same service) or one
		// no Vault of this device issued.
		return fmt.Errorf("cannot check the token with Vault at %s: %w (revoked already, or "+
			"not issued by this device's Vault: run the fetch again, and if this persists, tell the operator): %w", pinned.addr, ErrSuperseded, err)
	case pinned.fromAnswer && isUnverified(err):
		return notOurVault(pinned, err)
	}
	return fmt.Errorf("cannot check the token with Vault at %s (from %s, verified with %s): %w", pinned.addr, pinned.from, pinned.caCert, err)
}

// isUnverified tells whether err is a TLS server certificate that the CA
// certificate does not verify.
func isUnverified(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var verr *tls.CertificateVerificationError
	return errors.As(err, &unknownCA) || errors.As(err, &verr)
}

// notOurVault is the error for an answer that names a Vault whose certificate
// is not of this device's CA.
func notOurVault(pinned pin, err error) error {
	return fmt.Errorf("%w: the Vault it names, %s, has no certificate of this device's CA (%s): %v",
		ErrImpostor, pinned.addr, pinned.caCert, err)
}
