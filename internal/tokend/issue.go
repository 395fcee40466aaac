package tokend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
	"github.com/edgeseal/edgeseal/tokenclient"
)

// Errors that decide what the caller is told.
var (
	ErrOverloaded = errors.New("the token provider is overloaded")
	ErrSealed     = errors.New("Vault is sealed or not set up yet")
)

func statusOf(err error) string {
	switch {
	case errors.Is(err, ErrOverloaded):
		return tokenclient.StatusOverloaded
	case errors.Is(err, ErrSealed):
		return tokenclient.StatusSealed
	}
	return tokenclient.StatusError
}

// vaultErr classifies an error of a Vault call.
func vaultErr(err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusServiceUnavailable {
		return fmt.Errorf("%w: %v", ErrSealed, err)
	}
	return err
}

func isPermissionDenied(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}

// issuer holds Vault clients carrying this boot's token-issuing token, and
// loads the token again when edgeseal-unseal has rotated it.
type issuer struct {
	base    *api.Client
	path    string
	wrapTTL string

	mu       sync.Mutex
	modTime  time.Time
	plain    *api.Client // issues plain tokens
	wrapping *api.Client // issues response-wrapped tokens
}

func newIssuer(base *api.Client, path string, wrapTTL time.Duration) (*issuer, error) {
	i := &issuer{base: base, path: path, wrapTTL: strconv.Itoa(int(wrapTTL/time.Second)) + "s"}
	if err := i.load(); err != nil {
		return nil, err
	}
	return i, nil
}

// load reads the token-issuing token if the file changed since the last load.
func (i *issuer) load() error {
	fi, err := os.Stat(i.path)
	if err != nil {
		return fmt.Errorf("cannot read the token-issuing token: %w (is edgeseal-unseal.service active?)", err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.plain != nil && fi.ModTime().Equal(i.modTime) {
		return nil
	}
	auth, err := vaultlayout.ReadIssuingToken(i.path)
	if err != nil {
		return err
	}
	plain, err := i.base.Clone()
	if err != nil {
		return fmt.Errorf("cannot clone Vault client: %w", err)
	}
	plain.SetToken(auth.ClientToken)
	wrapping, err := plain.Clone()
	if err != nil {
		return fmt.Errorf("cannot clone Vault client: %w", err)
	}
	wrapping.SetToken(auth.ClientToken)
	ttl := i.wrapTTL
	wrapping.SetWrappingLookupFunc(func(operation, path string) string {
		if strings.HasPrefix(path, "auth/token/create/") {
			return ttl
		}
		return ""
	})
	i.plain, i.wrapping, i.modTime = plain, wrapping, fi.ModTime()
	return nil
}

func (i *issuer) clients() (plain, wrapping *api.Client) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.plain, i.wrapping
}

// issue creates a token for svc, records it, and has the service's previous
// token revoked off the request path, within tokens.revoke_delay.
func (s *Server) issue(ctx context.Context, cfg *config.Config, svc *config.Service, id peer.Identity) (*api.Secret, error) {
	if s.Policies != nil {
		if err := s.Policies.Ensure(ctx, cfg, svc.Name); err != nil {
			return nil, fmt.Errorf("cannot apply the Vault policy of service %s: %w", svc.Name, err)
		}
	}
	meta := map[string]string{"edgeseal_service": svc.Name, "uid": strconv.FormatUint(uint64(id.UID), 10), "pid": strconv.Itoa(int(id.PID))}
	if id.Unit != "" {
		meta["unit"] = id.Unit
	}
	if id.SnapApp != "" {
		meta["snap_app"] = id.SnapApp
	}
	if id.Credential != nil {
		meta["unit"] = id.Credential.Unit
		meta["credential"] = id.Credential.ID
	}
	if s.BootID != "" {
		meta["boot_id"] = s.BootID
	}
	req := &api.TokenCreateRequest{
		Policies:    []string{vaultlayout.ServicePolicyPrefix + svc.Name},
		DisplayName: svc.Name,
		Metadata:    meta,
		// The role's period too, on the token itself: lookup-self reports it,
		// and clients that renew only what says it is periodic (EdgeX's) renew.
		Period: s.Config.Tokens.ServicePeriod.D().String(),
	}
	create := func() (*api.Secret, error) {
		plain, wrapping := s.issuing.clients()
		c := plain
		if svc.Wrap {
			c = wrapping
		}
		return c.Auth().Token().CreateWithRoleWithContext(ctx, req, vaultlayout.ServiceRole)
	}
	sec, err := create()
	if isPermissionDenied(err) {
		// edgeseal-unseal may have rotated the token-issuing token.
		if lerr := s.issuing.load(); lerr == nil {
			sec, err = create()
		}
	}
	if err != nil {
		return nil, vaultErr(fmt.Errorf("cannot create a token for service %s: %w", svc.Name, err))
	}
	acc, wrapped := accessorOf(sec)
	if acc == "" {
		return nil, fmt.Errorf("cannot create a token for service %s: Vault's answer has no accessor", svc.Name)
	}
	e := ledger.Entry{Accessor: acc, Unit: meta["unit"], SnapApp: id.SnapApp, PID: int(id.PID), UID: id.UID, GID: id.GID,
		Credential: id.Credential != nil, ExeSHA256: id.Exe, Issued: time.Now().UTC(), Wrapped: wrapped}
	if id.UnitFiles != nil {
		e.UnitFragment, e.UnitDropIns = id.UnitFiles.Fragment, id.UnitFiles.DropIns
	}
	if id.Snap != nil {
		e.SnapRevision, e.SnapPublisher = id.Snap.Revision, id.Snap.Publisher
	}
	old, had, err := s.Ledger.Swap(svc.Name, e)
	if err != nil {
		// A token nobody can find again must not be handed out.
		s.revokeNow(context.WithoutCancel(ctx), svc.Name, acc, "it could not be recorded")
		return nil, err
	}
	if had && old.Accessor != acc {
		// The ledger holds the replaced token as pending: the revoker takes
		// it off the request path (revoke.go).
		s.revoker.wake()
	}
	return sec, nil
}

func accessorOf(sec *api.Secret) (accessor string, wrapped bool) {
	if sec.WrapInfo != nil {
		return sec.WrapInfo.WrappedAccessor, true
	}
	if sec.Auth != nil {
		return sec.Auth.Accessor, false
	}
	return "", false
}

// keepIssuingFresh renews the token-issuing token while the provider runs,
// whenever less than half of its period is left; edgeseal-unseal also replaces
// it on tokens.issuing_rotation, so an idle provider's token never lapses.
func (s *Server) keepIssuingFresh(ctx context.Context) {
	period := s.Config.Tokens.IssuingPeriod.D()
	renew := time.NewTicker(period / 4)
	defer renew.Stop()
	s.renewIssuing(ctx, period)
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			s.renewIssuing(ctx, period)
		}
	}
}

func (s *Server) renewIssuing(ctx context.Context, period time.Duration) {
	if err := s.issuing.load(); err != nil {
		s.Log.Warn("cannot reload the token-issuing token", "error", err)
	}
	plain, _ := s.issuing.clients()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	self, err := plain.Auth().Token().LookupSelfWithContext(rctx)
	if err != nil {
		if ctx.Err() == nil {
			s.Log.Warn("cannot look up the token-issuing token", "error", err)
		}
		return
	}
	ttl, err := self.TokenTTL()
	if err != nil || ttl > period/2 {
		return
	}
	if _, err := plain.Auth().Token().RenewSelfWithContext(rctx, 0); err != nil {
		s.Log.Warn("cannot renew the token-issuing token", "error", err)
		return
	}
	s.Log.Info("renewed the token-issuing token", "ttl_was", ttl.Round(time.Second).String())
}
