package tokend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
	"github.com/edgeseal/edgeseal/tokenclient"
)

// ErrNoCertificate: the caller's service has no tls: true; it is refused a
// certificate (and told so), as a caller no rule matches is refused a token.
var ErrNoCertificate = errors.New("the service gets no certificate")

// certCredentialSuffix marks a LoadCredential= that asks for the unit's
// certificate instead of its token: LoadCredential=tls.pem:/run/edgeseal/tokend.sock
// puts the certificate and its key, in one PEM file, in
// $CREDENTIALS_DIRECTORY/tls.pem.
const certCredentialSuffix = ".pem"

func isCertCredential(id string) bool { return strings.HasSuffix(id, certCredentialSuffix) }

// issueCert issues svc's certificate from its role of the service CA, with
// the token-issuing token, in one of the provider's slots. The role names
// everything in it; the provider asks for the service's own SPIFFE ID.
func (s *Server) issueCert(serving context.Context, start time.Time, cfg *config.Config, svc *config.Service, id peer.Identity) (cert *tokenclient.Certificate, err error) {
	if !svc.TLS {
		return nil, fmt.Errorf("%w: service %s has no tls: true in the config", ErrNoCertificate, svc.Name)
	}
	td, err := vaultlayout.TrustDomain(cfg)
	if err != nil {
		return nil, err
	}
	err = s.limited(serving, start, func(ctx context.Context) error {
		if s.Policies != nil {
			// A service given tls since the boot: its role is written with
			// its policy.
			if err := s.Policies.Ensure(ctx, cfg, svc.Name); err != nil {
				return fmt.Errorf("cannot apply the Vault policy of service %s: %w", svc.Name, err)
			}
		}
		plain, _ := s.issuing.clients()
		issue := func() error {
			cert, err = tokenclient.IssueCertificate(ctx, plain, vaultlayout.IssuePath(cfg, svc.Name), svc.Name, vaultlayout.SPIFFEID(td, svc.Name))
			return err
		}
		err := issue()
		if isPermissionDenied(err) && s.issuing.load() == nil {
			plain, _ = s.issuing.clients()
			err = issue()
		}
		return vaultErr(err)
	})
	if err != nil {
		return nil, err
	}
	if leaf, err := cert.Leaf(); err == nil {
		s.Log.Info("issued a certificate", "service", svc.Name, "identity", id.String(),
			"serial", fmt.Sprintf("%x", leaf.SerialNumber), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return cert, nil
}

// serveCertCredential answers a LoadCredential= that asks for svc's
// certificate: the certificate, its key and the service CA, in PEM.
func (s *Server) serveCertCredential(serving context.Context, c *net.UnixConn, cfg *config.Config, svc *config.Service, id peer.Identity) {
	cert, err := s.issueCert(serving, time.Now(), cfg, svc, id)
	if errors.Is(err, ErrNoCertificate) {
		s.refuse(nil, id.UID, id.String(), err)
		return
	}
	if err != nil {
		s.Log.Error("cannot issue a certificate for LoadCredential=; the unit will not start", "service", svc.Name, "unit", id.Credential.Unit, "error", err)
		return
	}
	data := append(cert.KeyPairPEM(), []byte(strings.TrimSpace(cert.CA)+"\n")...)
	c.SetWriteDeadline(time.Now().Add(answerWrite))
	if _, err := c.Write(data); err != nil {
		s.Log.Warn("cannot deliver a certificate through LoadCredential=", "service", svc.Name, "unit", id.Credential.Unit, "error", err)
	}
	clear(data)
}
