package tokend

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/tokenclient"
)

// lockedBuffer is a log read while the server writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// strangers resolves every caller to its bare uid, which no service is.
type strangers struct{}

func (strangers) Resolve(_ context.Context, p *peer.Peer) (peer.Identity, error) {
	return peer.Identity{PID: p.PID, UID: p.UID, GID: p.GID}, nil
}

// testServer is a provider on a socket in a temporary directory whose config
// names no service, so it refuses every caller, with a Vault that denies all.
type testServer struct {
	s     *Server
	sock  string   // the first socket
	socks []string // every socket it serves
	done  chan error
	log   *lockedBuffer
	stop  func() error // ends Serve and returns its error
}

func startServer(t *testing.T, edit func(*Server), wrap func(*net.UnixListener) listener) *testServer {
	t.Helper()
	return startServerOn(t, 1, edit, wrap)
}

// startServerOn is startServer with n sockets, each wrapped by wrap.
func startServerOn(t *testing.T, n int, edit func(*Server), wrap func(*net.UnixListener) listener) *testServer {
	t.Helper()
	// Not t.TempDir(): a socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "tokend")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"errors":["permission denied"]}`, http.StatusForbidden)
	}))
	t.Cleanup(vault.Close)
	vc := api.DefaultConfig()
	vc.Address = vault.URL
	client, err := api.NewClient(vc)
	if err != nil {
		t.Fatal(err)
	}
	p := paths.Detect(dir)
	p.IssuingToken = filepath.Join(dir, "issuing-token.json")
	if err := os.WriteFile(p.IssuingToken, []byte(`{"auth":{"client_token":"issuing"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Tokend.IdleExit = 0
	ts := &testServer{log: &lockedBuffer{}, done: make(chan error, 1)}
	var ls []listener
	for i := range n {
		sock := filepath.Join(dir, fmt.Sprintf("tokend-%d.sock", i))
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		ts.socks = append(ts.socks, sock)
		var l listener = ln
		if wrap != nil {
			l = wrap(ln)
		}
		ls = append(ls, l)
	}
	ts.sock = ts.socks[0]
	ts.s = &Server{Config: cfg, Paths: p, Vault: client, Resolver: strangers{}, Log: slog.New(slog.NewTextHandler(ts.log, nil))}
	if edit != nil {
		edit(ts.s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { ts.done <- ts.s.serve(ctx, ls...) }()
	ts.stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-ts.done:
			return err
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of its context ending")
			return nil
		}
	})
	t.Cleanup(func() { ts.stop() })
	return ts
}

func (ts *testServer) dial(t *testing.T) *net.UnixConn {
	t.Helper()
	return ts.dialSocket(t, ts.sock)
}

func (ts *testServer) dialSocket(t *testing.T, sock string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// answer sends line (unless empty) and reads the provider's answer.
func answer(t *testing.T, c *net.UnixConn, line string) tokenclient.Response {
	t.Helper()
	r, err := exchange(c, line)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func exchange(c *net.UnixConn, line string) (tokenclient.Response, error) {
	var r tokenclient.Response
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if line != "" {
		if _, err := c.Write([]byte(line)); err != nil {
			return r, fmt.Errorf("cannot send %q: %w", line, err)
		}
	}
	data, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return r, fmt.Errorf("no answer: %w", err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("answer %q: %w", data, err)
	}
	return r, nil
}

func TestAConnectionOverTheCapOfItsUIDIsToldOverloadedAtOnce(t *testing.T) {
	// Given a provider that serves at most 3 connections of one uid at once
	ts := startServer(t, func(s *Server) { s.maxConnsPerUID = 3 }, nil)
	// When this uid holds 3 connections without a request
	var held []*net.UnixConn
	for range 3 {
		held = append(held, ts.dial(t))
	}
	// Then a fourth is answered "overloaded", without waiting for its request
	r := answer(t, ts.dial(t), "")
	uid := strconv.Itoa(os.Getuid())
	if r.Status != tokenclient.StatusOverloaded || !strings.Contains(r.Error, "uid "+uid+" has 3 connections open") {
		t.Fatalf("a fourth connection: %+v, want overloaded naming uid %s", r, uid)
	}
	// When one of the held connections ends
	held[0].Close()
	// Then a new one of the same uid is served again (refused: no service is
	// this uid), once the provider has seen the end (until then a connection
	// may be closed before its request is sent: a broken pipe)
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if r, err = exchange(ts.dial(t), `{"v":1}`+"\n"); err == nil && r.Status == tokenclient.StatusRefused {
			return
		}
	}
	t.Fatalf("after one held connection ended: %+v, %v; want the request served (refused)", r, err)
}

func TestAFloodOfRefusalsWritesABoundedNumberOfLinesAndCountsTheRest(t *testing.T) {
	// Given a provider
	ts := startServer(t, nil, nil)
	// When one caller sends 100 malformed requests in a row
	const n = 100
	for range n {
		if r := answer(t, ts.dial(t), "not a request\n"); r.Status != tokenclient.StatusBadRequest {
			t.Fatalf("a malformed request: %+v, want bad request", r)
		}
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	// Then the journal has the first refusalBurst lines (and one more a second),
	// and one line counting the others
	log := ts.log.String()
	lines := strings.Count(log, "refused a malformed token request")
	if lines < refusalBurst || lines > refusalBurst+5 {
		t.Errorf("%d refusal lines for %d refusals, want about %d", lines, n, refusalBurst)
	}
	m := regexp.MustCompile(`msg="(\d+) refusals suppressed in the last [^"]+" caller="uid ` + strconv.Itoa(os.Getuid()) + `"`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no line counts the suppressed refusals:\n%s", log)
	}
	if suppressed, _ := strconv.Atoi(m[1]); lines+suppressed != n {
		t.Errorf("%d lines written and %d counted as suppressed, want %d in all", lines, suppressed, n)
	}
}

// shortOfFiles fails its first accepts as accept(2) does when the process has
// no file descriptor left.
type shortOfFiles struct {
	*net.UnixListener
	mu    sync.Mutex
	fails int
}

func (l *shortOfFiles) AcceptUnix() (*net.UnixConn, error) {
	l.mu.Lock()
	fail := l.fails > 0
	l.fails--
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.UnixListener.AcceptUnix()
}

func TestRunningOutOfFileDescriptorsDelaysAcceptsButNeverEndsServe(t *testing.T) {
	// Given a provider whose first 4 accepts fail with EMFILE
	const fails = 4
	ts := startServer(t, nil, func(ln *net.UnixListener) listener { return &shortOfFiles{UnixListener: ln, fails: fails} })
	// When a caller connects
	r := answer(t, ts.dial(t), `{"v":1}`+"\n")
	// Then it is served once accepts work again
	if r.Status != tokenclient.StatusRefused {
		t.Fatalf("a caller after the accept errors: %+v, want it served (refused)", r)
	}
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve: %v, want nil (stopped by its context)", err)
	}
	// And the errors are logged once, with a count of the others
	log := ts.log.String()
	if n := strings.Count(log, "cannot accept a connection; trying again"); n != 1 {
		t.Errorf("%d accept error lines, want 1:\n%s", n, log)
	}
	if want := fmt.Sprintf("%d accept errors suppressed", fails-1); !strings.Contains(log, want) {
		t.Errorf("no line %q:\n%s", want, log)
	}
}

func TestEverySocketIsServedAlike(t *testing.T) {
	// Given a provider on three sockets (the snap's host socket and consumer slots)
	ts := startServerOn(t, 3, nil, nil)
	// When a caller sends a request on each
	for _, sock := range ts.socks {
		// Then each answers it the same way (refused: no service is this caller)
		if r := answer(t, ts.dialSocket(t, sock), `{"v":1}`+"\n"); r.Status != tokenclient.StatusRefused {
			t.Errorf("a request on %s: %+v, want refused", sock, r)
		}
	}
}

func TestTheProviderExitsIdleOnlyOnceNoSocketHadAConnectionForIdleExit(t *testing.T) {
	// Given a provider on two sockets that exits after 400ms without a connection
	const idle = 400 * time.Millisecond
	ts := startServerOn(t, 2, func(s *Server) { s.Config.Tokend.IdleExit = config.Duration(idle) }, nil)
	// When callers keep coming on the second socket only, for three times that
	for end := time.Now().Add(3 * idle); time.Now().Before(end); time.Sleep(idle / 4) {
		answer(t, ts.dialSocket(t, ts.socks[1]), `{"v":1}`+"\n")
	}
	// Then the provider still serves (the first socket saw nothing, yet the
	// provider was not idle)
	select {
	case err := <-ts.done:
		t.Fatalf("Serve returned (%v) while callers kept coming on its second socket", err)
	default:
	}
	// When no caller comes on either
	start := time.Now()
	select {
	case err := <-ts.done:
		// Then it exits, once, without error, after about idle_exit
		if err != nil {
			t.Fatalf("Serve after idle_exit: %v, want nil", err)
		}
	case <-time.After(10 * idle):
		t.Fatalf("Serve did not return within %s of the last connection", 10*idle)
	}
	if waited := time.Since(start); waited > 5*idle {
		t.Errorf("exited %s after the last connection, want about %s", waited, idle)
	}
	if n := strings.Count(ts.log.String(), "no connection for a while"); n != 1 {
		t.Errorf("%d idle-exit lines, want 1:\n%s", n, ts.log.String())
	}
	ts.stop = func() error { return nil }
}

func TestAReplacedSocketIsNoLongerServedButTheOthersAre(t *testing.T) {
	// Given a provider watching its two sockets (two consumer slots)
	ts := startServerOn(t, 2, func(s *Server) { s.WatchSockets = true }, nil)
	// When a process removes the first socket and listens at its path
	replace := func(sock string) {
		t.Helper()
		if err := os.Remove(sock); err != nil {
			t.Fatal(err)
		}
		other, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { other.Close() })
	}
	replace(ts.socks[0])
	// Then the provider says so, and still serves the second socket
	for deadline := time.Now().Add(5 * SocketCheckInterval); !strings.Contains(ts.log.String(), "the token socket was replaced"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no journal line about the replaced socket:\n%s", ts.log.String())
		}
	}
	if r := answer(t, ts.dialSocket(t, ts.socks[1]), `{"v":1}`+"\n"); r.Status != tokenclient.StatusRefused {
		t.Fatalf("a request on the second socket after the first was replaced: %+v, want served (refused)", r)
	}
	select {
	case err := <-ts.done:
		t.Fatalf("Serve returned (%v) with a socket still its own", err)
	default:
	}
	// When the second is replaced too
	replace(ts.socks[1])
	// Then Serve ends with ErrSocketReplaced (the unit shows failed)
	select {
	case err := <-ts.done:
		if !errors.Is(err, ErrSocketReplaced) {
			t.Fatalf("Serve with every socket replaced: %v, want ErrSocketReplaced", err)
		}
	case <-time.After(5 * SocketCheckInterval):
		t.Fatal("Serve did not end once every socket was replaced")
	}
	ts.stop = func() error { return nil }
}
