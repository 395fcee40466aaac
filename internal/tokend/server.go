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
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeseal/edgeseal/internal/access"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/exeid"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/naming"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/internal/snapd"
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
	// WatchSockets: stop serving a socket whose path stops leading to it
	// (WatchSocket), and end Serve with ErrSocketReplaced when no socket is
	// left; another consumer's socket is served on.
	WatchSockets bool
	Ready        func() // called once the provider can serve; may be nil
	// UnitNamespaces says which namespace types a service unit's processes
	// may make (its RestrictNamespaces=, from systemd), for services that pin
	// their executables; nil where systemd cannot be asked (the snap).
	UnitNamespaces func(ctx context.Context, unit string) (uint64, error)
	// UnitFiles says which files systemd loaded a unit from, for services
	// that pin them (unit_files); nil where systemd cannot be asked (the
	// snap).
	UnitFiles func(ctx context.Context, unit string) (peer.UnitFiles, error)
	// SnapInfo says what snapd says of an installed snap (its current
	// revision, its publisher), for services that pin them (snap_revisions,
	// snap_publishers); nil where snapd is not asked (the snap).
	SnapInfo func(ctx context.Context, snap string) (peer.SnapInfo, error)

	// The connection caps; zero is maxConns and maxConnsPerUID (tests set them).
	maxConns, maxConnsPerUID int
	// budget; zero is defaultBudget (tests set it).
	budget time.Duration

	issuing    *issuer
	sem        chan struct{}
	gate       *connGate
	refusals   *lineLimiter // journal lines of refusals, per caller
	acceptErrs *lineLimiter // journal lines of accept errors
	cfg        atomic.Pointer[config.Config]
	cfgMu      sync.Mutex
	cfgSeen    fileStamp
	revoker    *revoker

	exeOnce sync.Once
	exeSem  chan struct{} // questions to edgeseal-exeid under way

	served, refused atomic.Int64
	statusSent      atomic.Int64 // when STATUS= was last sent (UnixNano)
	statusDirty     atomic.Bool  // the counts changed since
}

// Accept errors that more file descriptors or memory cure (EMFILE, ENFILE,
// ENOBUFS, ENOMEM) do not end Serve: it waits and accepts again, the wait
// doubling from acceptRetryMin to acceptRetryMax as net/http's Server does, and
// the callers waiting in the socket's backlog are served once it can. Such
// errors are logged once every acceptLogEvery, with a count of the others.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
	acceptLogEvery = 10 * time.Second
)

// overloadedWrite bounds the answer to a connection over a cap: it is written
// from the accept loop, which must not wait for a caller that reads nothing.
const overloadedWrite = 10 * time.Millisecond

// listener is what Serve needs of its socket.
type listener interface {
	AcceptUnix() (*net.UnixConn, error)
	SetDeadline(time.Time) error
}

// Serve answers connections on every listener in lns until ctx ends or, with
// tokend.idle_exit set, no connection came on any of them for that long and
// none is being served. It waits for every connection and revocation it
// started before it returns. Several listeners serve alike (the snap has one
// socket per consumer slot, so that no consumer can reach another's); who a
// caller is never depends on which socket it came through.
//
// At most maxConns connections are served at once, and maxConnsPerUID of one
// uid, whichever socket they came through; each is closed after
// tokend.request_timeout whatever its caller does. Refusals are logged under a
// rate limit per caller (refusalBurst, refusalEvery), with a count of the
// lines left out.
func (s *Server) Serve(ctx context.Context, lns ...*net.UnixListener) error {
	ls := make([]listener, len(lns))
	for i, ln := range lns {
		ls[i] = ln
	}
	return s.serve(ctx, ls...)
}

func (s *Server) serve(ctx context.Context, lns ...listener) error {
	if len(lns) == 0 {
		return errors.New("cannot serve: no socket to listen on")
	}
	iss, err := newIssuer(s.Vault, s.Paths.IssuingToken, s.Config.Tokens.WrapTTL.D())
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// edgeseal-unseal has not set Vault up this boot (yet).
			return fmt.Errorf("%w: %w", ErrSealed, err)
		}
		return err
	}
	s.issuing = iss
	s.cfg.Store(s.Config)
	s.cfgSeen = stampOf(s.ConfigFile)
	s.sem = make(chan struct{}, s.Config.Tokend.MaxInFlight)
	s.gate = newConnGate(cmp.Or(s.maxConns, maxConns), cmp.Or(s.maxConnsPerUID, maxConnsPerUID))
	s.refusals = newLineLimiter(refusalBurst, refusalEvery, maxLogKeys)
	s.acceptErrs = newLineLimiter(1, acceptLogEvery, 1)
	fresh, stopFresh := context.WithCancel(ctx)
	freshDone := make(chan struct{})
	go func() { defer close(freshDone); s.keepIssuingFresh(fresh) }()
	defer func() { stopFresh(); <-freshDone }()

	var conns sync.WaitGroup
	st := &acceptState{idle: s.Config.Tokend.IdleExit.D(), conns: &conns}
	st.last.Store(time.Now().UnixNano())
	// The revoker stops after the last connection is served (the deferred
	// calls run last first), and then tries the pending ones once more.
	s.revoker = newRevoker(s, s.Config.Tokens.RevokeDelay.D(), st.busy)
	revoking, stopRevoking := context.WithCancel(context.WithoutCancel(ctx))
	revokerDone := make(chan struct{})
	go func() { defer close(revokerDone); s.revoker.run(revoking) }()
	defer func() { stopRevoking(); <-revokerDone }()
	if s.Ready != nil {
		s.Ready()
	}

	reports, stopReports := context.WithCancel(ctx)
	reportsDone := make(chan struct{})
	go func() { defer close(reportsDone); s.reportEvery(reports, suppressReport) }()
	defer func() {
		conns.Wait()
		stopReports()
		<-reportsDone
		s.reportSuppressed()
	}()
	// The accept loops end together: when ctx ends, when one of them finds
	// the provider idle, or when one fails. Connections already accepted are
	// served under ctx, not under this.
	loops, endLoops := context.WithCancel(ctx)
	defer endLoops()
	// A loop whose socket was replaced ends alone; the others serve on.
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		own, stopOwn := loops, context.CancelFunc(func() {})
		if ul, ok := ln.(*net.UnixListener); ok && s.WatchSockets {
			own, stopOwn = WatchSocket(loops, ul, s.Log)
		}
		defer stopOwn()
		stop := context.AfterFunc(own, func() { ln.SetDeadline(time.Now()) })
		defer stop()
		go func() {
			err := s.acceptLoop(ctx, own, ln, st)
			if cause := context.Cause(own); err == nil && loops.Err() == nil && errors.Is(cause, ErrSocketReplaced) {
				err = cause
			} else {
				endLoops()
			}
			errs <- err
		}()
	}
	var first error
	replaced := 0
	for range lns {
		err := <-errs
		if errors.Is(err, ErrSocketReplaced) {
			replaced++
			if replaced < len(lns) {
				continue
			}
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// acceptState is what the accept loops of one Serve share.
type acceptState struct {
	idle   time.Duration   // tokend.idle_exit; 0 never
	last   atomic.Int64    // when the last connection came, on any socket (UnixNano)
	active atomic.Int64    // connections being served
	ended  atomic.Int64    // when the last connection served ended (UnixNano)
	idled  atomic.Bool     // a loop found the provider idle (it says so; the others end quietly)
	conns  *sync.WaitGroup // one per connection being served
}

// busy says whether a connection is being served and, if not, since when.
func (st *acceptState) busy() (serving bool, idleSince time.Time) {
	if st.active.Load() > 0 {
		return true, time.Time{}
	}
	return false, time.Unix(0, max(st.ended.Load(), st.last.Load()))
}

// acceptLoop accepts connections on ln and serves each under ctx until loops
// ends (nil), the provider has been idle for st.idle (nil, after saying so),
// or accepting fails for a reason waiting does not cure.
func (s *Server) acceptLoop(ctx, loops context.Context, ln listener, st *acceptState) error {
	var retry time.Duration // the wait after an accept error, 0 after a success
	for {
		if st.idle > 0 {
			now := time.Now()
			deadline := time.Unix(0, st.last.Load()).Add(st.idle)
			if !deadline.After(now) {
				// A connection still being served kept the provider up.
				deadline = now.Add(st.idle)
			}
			ln.SetDeadline(deadline)
		}
		// After the deadline is set: the end of loops may have set it to
		// now just before.
		if loops.Err() != nil {
			return nil
		}
		c, err := ln.AcceptUnix()
		if err != nil {
			if loops.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if st.idle > 0 && st.active.Load() == 0 && time.Since(time.Unix(0, st.last.Load())) >= st.idle {
					if !st.idled.CompareAndSwap(false, true) {
						return nil // another socket's loop found it idle first
					}
					s.Log.Info("no connection for a while: exiting; the socket stays and systemd starts the provider again on the next one",
						"idle", st.idle.String(), "served", s.served.Load(), "refused", s.refused.Load())
					return nil
				}
				continue
			}
			if !resourceShortage(err) {
				return fmt.Errorf("cannot accept a connection: %w", err)
			}
			retry = min(max(2*retry, acceptRetryMin), acceptRetryMax)
			if s.acceptErrs.allow("accept", time.Now()) {
				s.Log.Error("cannot accept a connection; trying again", "error", err, "retry_in", retry.String())
			}
			select {
			case <-loops.Done():
				return nil
			case <-time.After(retry):
			}
			continue
		}
		retry = 0
		st.last.Store(time.Now().UnixNano())
		p, ok := s.admit(c)
		if !ok {
			continue
		}
		st.active.Add(1)
		st.conns.Add(1)
		go func() {
			defer st.conns.Done()
			defer st.ended.Store(time.Now().UnixNano()) // runs after active's decrement
			defer st.active.Add(-1)
			defer s.gate.leave(p.UID)
			s.handle(ctx, c, p)
		}()
	}
}

func resourceShortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// admit identifies the caller of c (the kernel's word, read once) and lets the
// connection in under the caps. One it does not let in is answered if it is
// over a cap, and closed; no goroutine is started for it.
func (s *Server) admit(c *net.UnixConn) (*peer.Peer, bool) {
	p, err := peer.FromConn(c)
	if err != nil {
		s.refused.Add(1)
		s.logRefusal("unidentified callers", "cannot identify a caller; closed its connection", "error", err)
		c.Close()
		return nil, false
	}
	if err := s.gate.enter(p.UID); err != nil {
		s.refused.Add(1)
		s.logRefusal(uidKey(p.UID), "refused a connection", "pid", p.PID, "uid", p.UID, "reason", err.Error())
		c.SetWriteDeadline(time.Now().Add(overloadedWrite))
		respond(c, tokenclient.Response{Status: tokenclient.StatusOverloaded, Error: err.Error()})
		p.Close()
		c.Close()
		return nil, false
	}
	return p, true
}

// logRefusal writes a refusal's journal line unless key has written too many
// lately (then it is counted, and the count reported).
func (s *Server) logRefusal(key, msg string, args ...any) {
	if s.refusals.allow(key, time.Now()) {
		s.Log.Warn(msg, args...)
	}
}

// reportEvery reports the suppressed journal lines every period until ctx ends.
func (s *Server) reportEvery(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	st := time.NewTicker(statusEvery)
	defer st.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushStatus()
			return
		case <-t.C:
			s.reportSuppressed()
		case <-st.C:
			s.flushStatus()
		}
	}
}

// reportSuppressed writes one line per caller whose refusal lines were left
// out since the last report, and one for accept errors.
func (s *Server) reportSuppressed() {
	now := time.Now()
	for _, r := range s.refusals.report(now) {
		s.Log.Warn(fmt.Sprintf("%d refusals suppressed in the last %s", r.lines, r.over.Round(100*time.Millisecond)), "caller", r.key)
	}
	for _, r := range s.acceptErrs.report(now) {
		s.Log.Error(fmt.Sprintf("%d accept errors suppressed in the last %s", r.lines, r.over.Round(100*time.Millisecond)))
	}
}

// handle serves one admitted connection; it closes c and p.
//
// The caller has tokend.request_timeout to send its request (a client that
// stalls is cut off); the request then has defaultBudget from its connection,
// tokenclient's own patience, to get one of the tokend.max_in_flight slots
// (else it is told the provider is overloaded) and its token created: a
// request served late in a burst is neither refused while it is queued nor
// cut off in the middle of its own work by a bound meant for stalled clients.
// Every answer is written within answerWrite: a caller is told what happened,
// not left with a closed connection.
func (s *Server) handle(ctx context.Context, c *net.UnixConn, p *peer.Peer) {
	defer c.Close()
	defer p.Close()
	start := time.Now()
	deadline := start.Add(s.Config.Tokend.RequestTimeout.D())
	c.SetDeadline(deadline)
	serving := ctx
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	if p.UID == 0 && isCredentialAddr(p.Addr) {
		s.serveCredential(ctx, serving, c, p)
		return
	}
	cfg := s.reloadConfig()
	req, err := readRequest(c)
	if err != nil {
		s.refused.Add(1)
		s.logRefusal(uidKey(p.UID), "refused a malformed token request", "pid", p.PID, "uid", p.UID, "error", err)
		respond(c, tokenclient.Response{Status: tokenclient.StatusBadRequest, Error: err.Error()})
		return
	}
	id, err := s.Resolver.Resolve(ctx, p)
	if err != nil {
		s.refuse(c, p.UID, fmt.Sprintf("pid %d (uid %d, gid %d)", p.PID, p.UID, p.GID), err)
		return
	}
	svc, rule, err := s.match(ctx, p, cfg, &id, req.Service)
	var unsure *unsureError
	if errors.As(err, &unsure) {
		// Not the caller's doing (a helper or systemd unreachable, busy): it
		// may ask again.
		s.logRefusal(uidKey(p.UID), "cannot check what a caller runs", "identity", id.String(), "error", unsure.err)
		respond(c, tokenclient.Response{Status: statusOf(unsure.err), Error: unsure.err.Error()})
		return
	}
	if err == nil && req.Cert && !svc.TLS {
		err = fmt.Errorf("%w: service %s has no tls: true in the config", ErrNoCertificate, svc.Name)
	}
	if err != nil {
		s.refuse(c, p.UID, id.String(), err)
		return
	}
	resp := tokenclient.Response{Identity: id.String(), Service: svc.Name, VaultAddr: cfg.VaultAddr(), CACert: s.Paths.CACert}
	issueStart := time.Now()
	if req.Cert {
		// Before the token, whose create is the last step: a certificate
		// that cannot be issued leaves no token out in its name.
		if resp.TLS, err = s.issueCert(serving, start, cfg, svc, id); err != nil {
			resp.Status, resp.Error = statusOf(err), err.Error()
			s.Log.Error("cannot issue a certificate", "service", svc.Name, "identity", id.String(), "error", err)
			respond(c, resp)
			return
		}
	}
	sec, err := s.issueLimited(serving, start, cfg, svc, id)
	issued := time.Since(issueStart)
	if err != nil {
		// No certificate without its token: it is not kept or sent.
		resp.TLS = nil
		resp.Status, resp.Error = statusOf(err), err.Error()
		s.Log.Error("cannot issue a token", "service", svc.Name, "identity", id.String(), "error", err)
		respond(c, resp)
		return
	}
	resp.Status, resp.Wrapped = tokenclient.StatusOK, sec.WrapInfo != nil
	if resp.Token, err = json.Marshal(sec); err != nil {
		respond(c, tokenclient.Response{Status: tokenclient.StatusError, Error: "cannot encode the token"})
		return
	}
	if err := respond(c, resp); err != nil {
		s.Log.Warn("cannot deliver a token; the caller left", "service", svc.Name, "identity", id.String(), "error", err)
		return
	}
	s.delivered(svc.Name, id, rule, sec, time.Since(start), issued)
}

// unsureError is match's error when what a service pins of a caller could not
// be read through no fault of the caller's.
type unsureError struct{ err error }

func (e *unsureError) Error() string { return e.err.Error() }
func (e *unsureError) Unwrap() error { return e.err }

// match is access.Match, reading into id what the matched service pins of the
// caller (its executable, its unit's files, its snap) when Match says it was
// not read, then matching again: each once at most. An error reading it that
// is not the caller's doing (snapd unreachable) is an *unsureError; one that
// is (it is gone, its executable unreadable) refuses it.
func (s *Server) match(ctx context.Context, p *peer.Peer, cfg *config.Config, id *peer.Identity, want string) (*config.Service, string, error) {
	for {
		svc, rule, err := access.Match(cfg.Services, *id, want)
		var unread *access.Unread
		if !errors.As(err, &unread) {
			return svc, rule, err
		}
		var rerr error
		switch {
		case unread.Pin == access.PinExecutable && id.Exe == "" && id.Credential == nil:
			id.Exe, rerr = s.readExe(ctx, p, *id)
		case unread.Pin == access.PinUnitFiles && id.UnitFiles == nil:
			id.UnitFiles, rerr = s.readUnitFiles(ctx, p, *id)
		case unread.Pin == access.PinSnap && id.Snap == nil:
			id.Snap, rerr = s.readSnap(ctx, *id)
		default:
			return nil, "", err
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, access.ErrExecutable), errors.Is(rerr, access.ErrUnitFile), errors.Is(rerr, access.ErrSnap), errors.Is(rerr, peer.ErrGone):
			return nil, "", rerr
		default:
			return nil, "", &unsureError{rerr}
		}
	}
}

// readUnitFiles asks systemd which files it loaded the caller's unit from (for
// LoadCredential=, the unit asking). A caller in no unit has none, and is
// refused (access.ErrUnitFile).
func (s *Server) readUnitFiles(ctx context.Context, p *peer.Peer, id peer.Identity) (*peer.UnitFiles, error) {
	unit := id.Unit
	if id.Credential != nil {
		unit = id.Credential.Unit
	}
	switch {
	case unit == "":
		return nil, fmt.Errorf("%w: %s runs in no unit, and its service pins its unit files", access.ErrUnitFile, id)
	case s.UnitFiles == nil:
		return nil, fmt.Errorf("%w: %s matched a service that pins its unit files, and systemd is not asked here (the snap's provider reads no unit files)", access.ErrUnitFile, id)
	}
	f, err := s.UnitFiles(ctx, unit)
	if err != nil {
		return nil, err
	}
	// A pin names paths: each must be the file systemd read, and one only
	// root may have written or put there. systemd reports a symlink's path,
	// not its target's, as FragmentPath (systemctl link makes one): an
	// unlisted file would define the unit.
	for _, file := range append([]string{f.Fragment}, f.DropIns...) {
		if file == "" {
			continue
		}
		if err := fsutil.CheckRootFile(file); err != nil {
			return nil, fmt.Errorf("%w: %s runs in unit %s, loaded from a file the pin cannot vouch for: %w", access.ErrUnitFile, id, unit, err)
		}
	}
	// What was read is about the caller's unit only if it is still the
	// process that connected (the unit is known by its pid).
	if err := p.Same(); err != nil {
		return nil, err
	}
	return &f, nil
}

// readSnap asks snapd about the snap of the caller's snap app (for
// LoadCredential=, of the unit asking): its current revision and publisher.
// Match asks only for a caller in a snap. What snapd says is about the snap,
// not the process: a process started before the snap was refreshed still runs
// the revision it started from (README, "Tokens for services").
func (s *Server) readSnap(ctx context.Context, id peer.Identity) (*peer.SnapInfo, error) {
	app := id.SnapApp
	if id.Credential != nil {
		app = peer.SnapAppOfUnit(id.Credential.Unit)
	}
	if s.SnapInfo == nil {
		return nil, fmt.Errorf("%w: %s matched a service that pins its snap's revision or publisher, and snapd is not asked here (the snap's provider cannot ask snapd)", access.ErrSnap, id)
	}
	info, err := s.SnapInfo(ctx, naming.SnapOfApp(app))
	if errors.Is(err, snapd.ErrNotInstalled) {
		// Removed since its process started: the caller's, not the provider's.
		return nil, fmt.Errorf("%w: %s: %w", access.ErrSnap, id, err)
	}
	if err != nil {
		return nil, err
	}
	return &info, nil
}

// readExe asks edgeseal-exeid for the SHA-256 of the executable p runs (the
// provider may not read another user's /proc/PID/exe itself), once it has
// checked that p cannot have pointed its /proc/PID/exe elsewhere (exeFixed).
func (s *Server) readExe(ctx context.Context, p *peer.Peer, id peer.Identity) (string, error) {
	if err := s.exeFixed(ctx, p, id); err != nil {
		return "", err
	}
	// At most maxExeQuestions at once, whoever asks: the helper hashes two
	// files at a time, and a caller of a pinned service must not hold more of
	// the provider than the issue's own bound (max_in_flight) would give it.
	select {
	case s.exeSlots() <- struct{}{}:
		defer func() { <-s.exeSlots() }()
	case <-ctx.Done():
		return "", fmt.Errorf("cannot check the caller's executable: %w", ErrOverloaded)
	}
	timeout := exeTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	sum, err := exeid.Digest(s.Paths.ExeIDSocket, p.PidFD(), timeout)
	switch {
	case errors.Is(err, exeid.ErrGone):
		return "", peer.ErrGone
	case errors.Is(err, exeid.ErrBusy):
		return "", fmt.Errorf("cannot check the caller's executable: %w", ErrOverloaded)
	case errors.Is(err, exeid.ErrUnreadable):
		// The caller's own file (not readable, too large, outside where the
		// helper may read): it is refused, as one that does not match.
		return "", fmt.Errorf("%w: %w", access.ErrExecutable, err)
	}
	return sum, err
}

// maxExeQuestions bounds the questions to edgeseal-exeid under way at once.
const maxExeQuestions = 4

func (s *Server) exeSlots() chan struct{} {
	s.exeOnce.Do(func() { s.exeSem = make(chan struct{}, maxExeQuestions) })
	return s.exeSem
}

// exeTimeout bounds a question to edgeseal-exeid, which hashes an executable
// it has not seen (a large one takes a second or more on a slow device).
const exeTimeout = 10 * time.Second

// serveCredential answers systemd loading a credential for a unit: the bare
// token file content. A refusal is an empty answer (a Unix stream socket has
// no reset to send): the unit gets an empty credential, and the refusal is in
// the journal.
func (s *Server) serveCredential(ctx, serving context.Context, c *net.UnixConn, p *peer.Peer) {
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
		s.refuse(nil, p.UID, fmt.Sprintf("root pid %d at %s", p.PID, p.Addr), err)
		return
	}
	cfg := s.reloadConfig()
	// systemd gets no second chance to ask: an *unsureError refuses too.
	svc, rule, err := s.match(ctx, p, cfg, &id, "")
	if err != nil {
		s.refuse(nil, p.UID, id.String(), err)
		return
	}
	if isCertCredential(id.Credential.ID) {
		s.serveCertCredential(serving, c, cfg, svc, id)
		return
	}
	sec, err := s.issueLimited(serving, time.Now(), cfg, svc, id)
	if err != nil {
		s.Log.Error("cannot issue a token for LoadCredential=; the unit will not start", "service", svc.Name, "unit", id.Credential.Unit, "error", err)
		return
	}
	data, err := json.Marshal(sec)
	if err == nil {
		c.SetWriteDeadline(time.Now().Add(answerWrite))
		_, err = c.Write(data)
	}
	if err != nil {
		s.Log.Warn("cannot deliver a token through LoadCredential=", "service", svc.Name, "unit", id.Credential.Unit, "error", err)
		return
	}
	s.delivered(svc.Name, id, rule, sec, 0, 0)
}

// delivered records a delivery in the journal: with, for a request on the
// socket, how long it took from accept to the answer written (took) and how
// much of that the issue took (waiting for a slot, the token-create, the
// ledger), in milliseconds; the rest is the provider's own work (reading the
// request, who the caller is, the answer).
func (s *Server) delivered(service string, id peer.Identity, rule string, sec *api.Secret, took, issue time.Duration) {
	s.served.Add(1)
	acc, wrapped := accessorOf(sec)
	args := []any{"service", service, "identity", id.String(), "rule", rule, "accessor", acc, "wrapped", wrapped}
	if took > 0 {
		args = append(args, "took_ms", ms(took), "issue_ms", ms(issue))
	}
	s.Log.Info("issued a token", args...)
	s.status()
}

// statusEvery bounds how often the provider tells systemd its STATUS= line
// (a datagram to PID 1): once a second at most, however many requests.
const statusEvery = time.Second

// status tells systemd the counts now, or at the next flushStatus if it told
// it less than statusEvery ago.
func (s *Server) status() {
	if s.Status == nil {
		return
	}
	now := time.Now().UnixNano()
	last := s.statusSent.Load()
	if now-last < int64(statusEvery) || !s.statusSent.CompareAndSwap(last, now) {
		s.statusDirty.Store(true)
		return
	}
	s.statusDirty.Store(false)
	s.Status(fmt.Sprintf("served %d tokens, refused %d requests", s.served.Load(), s.refused.Load()))
}

// flushStatus tells systemd the counts if they changed since it last did.
func (s *Server) flushStatus() {
	if s.statusDirty.Load() {
		s.status()
	}
}

// refuse tells the caller no (c may be nil when there is nobody to tell) and
// writes one journal line (under the limit of uid's lines); the caller learns
// only how it was seen and why.
func (s *Server) refuse(c *net.UnixConn, uid uint32, identity string, why error) {
	s.refused.Add(1)
	s.logRefusal(uidKey(uid), "refused a token request", "identity", identity, "uid", uid, "reason", why.Error())
	if c != nil {
		respond(c, tokenclient.Response{Status: tokenclient.StatusRefused, Identity: identity, Error: why.Error()})
	}
	s.status()
}

// ms is d in milliseconds to the microsecond, for the journal.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// answerWrite bounds the writing of one answer.
const answerWrite = time.Second

func respond(c *net.UnixConn, r tokenclient.Response) error {
	r.V = tokenclient.ProtocolVersion
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	c.SetWriteDeadline(time.Now().Add(answerWrite))
	_, err = c.Write(append(data, '\n'))
	return err
}

// defaultBudget bounds a request from its connection to its token created
// (the wait for a slot included): tokenclient's own patience (30 s). The
// connection caps (maxConns, maxConnsPerUID) bound how many wait.
const defaultBudget = 30 * time.Second

// issueLimited issues under the in-flight bound, within the budget of a
// request whose connection came at start: it waits for a slot, and is told
// the provider is overloaded if the budget runs out first; the token-create
// has what is left of it. Both are under serving (the provider's run).
//
// A request that gets its slot with less than a tenth of its budget left is
// told it is overloaded rather than start a token-create that would likely be
// cut off: otherwise, with the slots taken in turn, every request behind a
// slow server would get a slot just before its end and fail in it, instead of
// some being told to try again while the others are served.
func (s *Server) issueLimited(serving context.Context, start time.Time, cfg *config.Config, svc *config.Service, id peer.Identity) (sec *api.Secret, err error) {
	err = s.limited(serving, start, func(ctx context.Context) error {
		sec, err = s.issue(ctx, cfg, svc, id)
		return err
	})
	return sec, err
}

// limited runs fn in one of the tokend.max_in_flight slots, within the
// request's budget from start.
func (s *Server) limited(serving context.Context, start time.Time, fn func(ctx context.Context) error) error {
	budget := cmp.Or(s.budget, defaultBudget)
	ctx, cancel := context.WithDeadline(serving, start.Add(budget))
	defer cancel()
	overloaded := fmt.Errorf("%w: %d requests in flight (tokend.max_in_flight)", ErrOverloaded, cap(s.sem))
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return overloaded
	}
	defer func() { <-s.sem }()
	if time.Until(start.Add(budget)) < budget/10 {
		return overloaded
	}
	return fn(ctx)
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
