// Package tokend is the token provider: it answers a connection on
// /run/edgeseal/tokend.sock with a Vault token for the service the caller is,
// and with nothing but a refusal (and a journal line) for anyone else.
//
// Who the caller is comes from the kernel (SO_PEERCRED, SO_PEERPIDFD) and
// systemd (the caller's unit), never from what the caller says; see
// internal/peer. Which service that identity is comes from the config's rules
// (Match). What it gets is a token from the service token role, with its own
// policy only; a new token revokes the service's previous one (internal/ledger).
package tokend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeseal/edgeseal/internal/access"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/tokenclient"
	"github.com/hashicorp/vault/api"
)

// Resolver tells who is on the other end of a connection.
type Resolver interface {
	Resolve(ctx context.Context, p *peer.Peer) (peer.Identity, error)
}

// PolicyEnsurer makes sure the Vault policy of a service matches the config
// before its first token is issued (the config may have changed since boot).
type PolicyEnsurer interface {
	Ensure(ctx context.Context, cfg *config.Config, service string) error
}

// Server is one run of the provider. Fields are inputs.
type Server struct {
	Config     *config.Config
	ConfigFile string // read again when it changes; "" never
	Paths      paths.Paths
	Vault      *api.Client // address and TLS set; Serve gives clones the issuing token
	Resolver   Resolver
	Ledger     *ledger.Ledger
	Policies   PolicyEnsurer // may be nil
	Log        *slog.Logger
	BootID     string
	Status     func(string) // one line for systemd's STATUS=; may be nil
	Ready      func()       // called once the provider can serve; may be nil

	issuing *issuer
	sem     chan struct{}
	cfg     atomic.Pointer[config.Config]
	cfgMu   sync.Mutex
	cfgSeen fileStamp
	bg      sync.WaitGroup // revocations still running

	served, refused atomic.Int64
}

// Serve answers connections on ln until ctx ends or, with tokend.idle_exit set,
// no connection came for that long and none is being served. It waits for
// every connection and revocation it started before it returns.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	iss, err := newIssuer(s.Vault, s.Paths.IssuingToken, s.Config.Tokens.WrapTTL.D())
	if err != nil {
		return err
	}
	s.issuing = iss
	s.cfg.Store(s.Config)
	s.cfgSeen = stampOf(s.ConfigFile)
	s.sem = make(chan struct{}, s.Config.Tokend.MaxInFlight)
	fresh, stopFresh := context.WithCancel(ctx)
	freshDone := make(chan struct{})
	go func() { defer close(freshDone); s.keepIssuingFresh(fresh) }()
	defer func() { stopFresh(); <-freshDone }()
	if s.Ready != nil {
		s.Ready()
	}

	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Now()) })
	defer stop()
	idle := s.Config.Tokend.IdleExit.D()
	var active atomic.Int64
	var conns sync.WaitGroup
	defer func() { conns.Wait(); s.bg.Wait() }()
	for {
		if idle > 0 {
			ln.SetDeadline(time.Now().Add(idle))
		}
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if active.Load() == 0 {
					s.Log.Info("no connection for a while: exiting; the socket stays and systemd starts the provider again on the next one",
						"idle", idle.String(), "served", s.served.Load(), "refused", s.refused.Load())
					return nil
				}
				continue
			}
			return fmt.Errorf("cannot accept a connection: %w", err)
		}
		active.Add(1)
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer active.Add(-1)
			s.handle(ctx, c)
		}()
	}
}

func (s *Server) handle(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	deadline := time.Now().Add(s.Config.Tokend.RequestTimeout.D())
	c.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	p, err := peer.FromConn(c)
	if err != nil {
		s.Log.Warn("cannot identify a caller; closed its connection", "error", err)
		return
	}
	defer p.Close()
	if p.UID == 0 && isCredentialAddr(p.Addr) {
		s.serveCredential(ctx, c, p)
		return
	}
	cfg := s.reloadConfig()
	req, err := readRequest(c)
	if err != nil {
		s.refused.Add(1)
		s.Log.Warn("refused a malformed token request", "pid", p.PID, "uid", p.UID, "error", err)
		s.respond(c, tokenclient.Response{Status: tokenclient.StatusBadRequest, Error: err.Error()})
		return
	}
	id, err := s.Resolver.Resolve(ctx, p)
	if err != nil {
		s.refuse(c, fmt.Sprintf("pid %d (uid %d, gid %d)", p.PID, p.UID, p.GID), err)
		return
	}
	svc, rule, err := access.Match(cfg.Services, id, req.Service)
	if err != nil {
		s.refuse(c, id.String(), err)
		return
	}
	resp := tokenclient.Response{Identity: id.String(), Service: svc.Name, VaultAddr: cfg.VaultAddr(), CACert: s.Paths.CACert}
	sec, err := s.issueLimited(ctx, cfg, svc, id)
	if err != nil {
		resp.Status, resp.Error = statusOf(err), err.Error()
		s.Log.Error("cannot issue a token", "service", svc.Name, "identity", id.String(), "error", err)
		s.respond(c, resp)
		return
	}
	resp.Status, resp.Wrapped = tokenclient.StatusOK, sec.WrapInfo != nil
	if resp.Token, err = json.Marshal(sec); err != nil {
		s.respond(c, tokenclient.Response{Status: tokenclient.StatusError, Error: "cannot encode the token"})
		return
	}
	if err := s.respond(c, resp); err != nil {
		s.Log.Warn("cannot deliver a token; the caller left", "service", svc.Name, "identity", id.String(), "error", err)
		return
	}
	s.delivered(svc.Name, id, rule, sec)
}

// serveCredential answers systemd loading a credential for a unit: the bare
// token file content. A refusal is an empty answer (a Unix stream socket has
// no reset to send): the unit gets an empty credential, and the refusal is in
// the journal.
func (s *Server) serveCredential(ctx context.Context, c *net.UnixConn, p *peer.Peer) {
	id, err := s.Resolver.Resolve(ctx, p)
	if err == nil && id.Credential == nil {
		err = errors.New("not a LoadCredential= request")
	}
	if err == nil && id.PID != 1 && id.Unit != id.Credential.Unit {
		// systemd loads credentials in the unit's own process before it runs the
		// program: the caller is PID 1 or a process of the unit it names.
		err = fmt.Errorf("a root process of %q asks for the credential of %q", id.Unit, id.Credential.Unit)
	}
	if err != nil {
		s.refuse(nil, fmt.Sprintf("root pid %d at %s", p.PID, p.Addr), err)
		return
	}
	cfg := s.reloadConfig()
	svc, rule, err := access.Match(cfg.Services, id, "")
	if err != nil {
		s.refuse(nil, id.String(), err)
		return
	}
	sec, err := s.issueLimited(ctx, cfg, svc, id)
	if err != nil {
		s.Log.Error("cannot issue a token for LoadCredential=; the unit will not start", "service", svc.Name, "unit", id.Credential.Unit, "error", err)
		return
	}
	data, err := json.Marshal(sec)
	if err == nil {
		_, err = c.Write(data)
	}
	if err != nil {
		s.Log.Warn("cannot deliver a token through LoadCredential=", "service", svc.Name, "unit", id.Credential.Unit, "error", err)
		return
	}
	s.delivered(svc.Name, id, rule, sec)
}

func (s *Server) delivered(service string, id peer.Identity, rule string, sec *api.Secret) {
	n := s.served.Add(1)
	acc, wrapped := accessorOf(sec)
	s.Log.Info("issued a token", "service", service, "identity", id.String(), "rule", rule, "accessor", acc, "wrapped", wrapped)
	s.status(n)
}

func (s *Server) status(served int64) {
	if s.Status != nil {
		s.Status(fmt.Sprintf("served %d tokens, refused %d requests", served, s.refused.Load()))
	}
}

// refuse tells the caller no (c may be nil when there is nobody to tell) and
// writes one journal line; the caller learns only how it was seen and why.
func (s *Server) refuse(c *net.UnixConn, identity string, why error) {
	s.refused.Add(1)
	s.Log.Warn("refused a token request", "identity", identity, "reason", why.Error())
	if c != nil {
		s.respond(c, tokenclient.Response{Status: tokenclient.StatusRefused, Identity: identity, Error: why.Error()})
	}
	s.status(s.served.Load())
}

func (s *Server) respond(c *net.UnixConn, r tokenclient.Response) error {
	r.V = tokenclient.ProtocolVersion
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = c.Write(append(data, '\n'))
	return err
}

// issueLimited issues under the in-flight bound: a request waits for a slot
// until its deadline, then is told the provider is overloaded.
func (s *Server) issueLimited(ctx context.Context, cfg *config.Config, svc *config.Service, id peer.Identity) (*api.Secret, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %d requests in flight (tokend.max_in_flight)", ErrOverloaded, cap(s.sem))
	}
	defer func() { <-s.sem }()
	return s.issue(ctx, cfg, svc, id)
}

// fileStamp tells whether a file changed.
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func stampOf(path string) fileStamp {
	if path == "" {
		return fileStamp{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st
}

// reloadConfig returns the config to serve a connection with: the config file
// again if it changed (a service added while the device runs), else the one in
// use. A changed file that does not validate is logged and the old one kept.
func (s *Server) reloadConfig() *config.Config {
	if s.ConfigFile == "" {
		return s.cfg.Load()
	}
	st := stampOf(s.ConfigFile)
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	if st == s.cfgSeen {
		return s.cfg.Load()
	}
	s.cfgSeen = st
	cfg, err := config.Load(s.ConfigFile)
	if err != nil {
		s.Log.Error("the config changed but does not validate; serving with the one loaded before", "error", err)
		return s.cfg.Load()
	}
	s.cfg.Store(cfg)
	s.Log.Info("the config changed; serving with the new one", "services", len(cfg.Services))
	return cfg
}

func isCredentialAddr(addr string) bool {
	_, err := peer.ParseCredentialAddr(addr)
	return err == nil
}
