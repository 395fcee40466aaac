package tokenclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// fakeProvider answers each connection on a socket in a temporary directory
// with answer, after recording the request line it read.
type fakeProvider struct {
	socket   string
	requests chan string
}

func newFakeProvider(t *testing.T, answer string) *fakeProvider {
	t.Helper()
	f := &fakeProvider{socket: filepath.Join(t.TempDir(), "tokend.sock"), requests: make(chan string, 16)}
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			f.requests <- line
			c.Write([]byte(answer))
			c.Close()
		}
	}()
	return f
}

func answer(t *testing.T, r Response) string {
	t.Helper()
	r.V = ProtocolVersion
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(data) + "\n"
}

func okResponse(t *testing.T) Response {
	sec, _ := json.Marshal(api.Secret{Auth: &api.SecretAuth{ClientToken: "hvs.test", Accessor: "acc", LeaseDuration: 3600, Renewable: true}})
	return Response{Status: StatusOK, Service: "collector", Identity: "uid 1001 (pid 7, gid 1001)", VaultAddr: "https://127.0.0.1:8200", Token: sec}
}

// fetch fetches from socket, trusting a fake Vault that vouches for every
// token as issued to this process for service collector.
func fetch(t *testing.T, socket string) (*Token, error) {
	t.Helper()
	addr, ca := fakeVault(t, func(w http.ResponseWriter, r *http.Request) {
		if !vouch(t, w, r, "collector") {
			vaultError(w, http.StatusBadRequest, "unexpected "+r.Method+" "+r.URL.Path)
		}
	})
	return fetchAt(t, socket, addr, ca)
}

// fetchAt fetches from socket, trusting the Vault at addr verified by ca.
func fetchAt(t *testing.T, socket, addr, ca string) (*Token, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return Fetch(ctx, Options{Socket: socket, VaultAddr: addr, CACert: ca})
}

func TestFetchSendsOneRequestLineAndReturnsTheToken(t *testing.T) {
	f := newFakeProvider(t, answer(t, okResponse(t)))
	tok, err := fetch(t, f.socket)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-f.requests; got != `{"v":1}`+"\n" {
		t.Errorf("request line %q", got)
	}
	if tok.ClientToken() != "hvs.test" || tok.Service != "collector" || tok.Period() != time.Hour || !strings.Contains(tok.Identity, "uid 1001") {
		t.Errorf("token %+v", tok)
	}
	addr, ca := fakeVault(t, func(w http.ResponseWriter, r *http.Request) { vouch(t, w, r, "collector") })
	if _, err := Fetch(context.Background(), Options{Socket: f.socket, Service: "collector", VaultAddr: addr, CACert: ca}); err != nil {
		t.Fatal(err)
	}
	if got := <-f.requests; got != `{"v":1,"service":"collector"}`+"\n" {
		t.Errorf("request line with a service %q", got)
	}
}

func TestFetchRefusalNamesTheIdentityTheProviderSaw(t *testing.T) {
	f := newFakeProvider(t, answer(t, Response{Status: StatusRefused, Identity: "uid 4242 (pid 77, gid 4242)", Error: "no service has a rule for this identity"}))
	_, err := fetch(t, f.socket)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "uid 4242 (pid 77, gid 4242)") || !strings.Contains(err.Error(), "no service has a rule") {
		t.Errorf("err = %v", err)
	}
	if Temporary(err) {
		t.Errorf("a refusal is not temporary")
	}
}

func TestFetchMapsEachStatusToItsError(t *testing.T) {
	for status, want := range map[string]error{
		StatusSealed: ErrSealed, StatusOverloaded: ErrOverloaded, StatusBadRequest: ErrBadRequest,
		StatusError: ErrProvider, "bored": ErrProtocol,
	} {
		f := newFakeProvider(t, answer(t, Response{Status: status, Error: "why"}))
		_, err := fetch(t, f.socket)
		if !errors.Is(err, want) {
			t.Errorf("status %q: err = %v, want %v", status, err, want)
		}
		if temp := status == StatusSealed || status == StatusOverloaded; Temporary(err) != temp {
			t.Errorf("status %q: Temporary = %v", status, Temporary(err))
		}
	}
}

func TestFetchRejectsAnswersItDoesNotUnderstand(t *testing.T) {
	long := `{"v":1,"status":"ok","error":"` + strings.Repeat("a", MaxResponseSize) + `"}` + "\n"
	wrongVersion := strings.Replace(answer(t, okResponse(t)), `"v":1`, `"v":2`, 1)
	noToken := answer(t, Response{Status: StatusOK, Token: json.RawMessage(`{"auth":null}`)})
	for name, a := range map[string]string{
		"not JSON": "hello\n", "no newline": answer(t, okResponse(t))[:20],
		"too long": long, "another version": wrongVersion, "no token": noToken,
		"token not a secret": answer(t, Response{Status: StatusOK, Token: json.RawMessage(`[1]`)}),
	} {
		f := newFakeProvider(t, a)
		if _, err := fetch(t, f.socket); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want ErrProtocol", name, err)
		}
	}
}

// A provider killed, or turning the connection away, before its answer: the
// socket starts it again, so the caller is told to try again (exit 75 of
// edgeseal token fetch), not that the protocol broke.
func TestAProviderThatClosesWithoutAnAnswerIsWorthAnotherTry(t *testing.T) {
	f := newFakeProvider(t, "")
	_, err := fetch(t, f.socket)
	if !errors.Is(err, ErrInterrupted) || !Temporary(err) {
		t.Errorf("err = %v (temporary %v), want ErrInterrupted, temporary", err, Temporary(err))
	}
}

func TestFetchWithoutAProviderSaysToStartTheSocket(t *testing.T) {
	_, err := fetch(t, filepath.Join(t.TempDir(), "absent.sock"))
	if !errors.Is(err, ErrNoProvider) || !strings.Contains(err.Error(), "edgeseal-tokend.socket is not started") || !Temporary(err) {
		t.Errorf("err = %v", err)
	}
	// A socket file nobody listens on any more.
	sock := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := fetch(t, sock); !errors.Is(err, ErrNoProvider) {
		t.Errorf("stale socket: err = %v", err)
	}
}

func TestFetchGivesUpWhenTheProviderStalls(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "slow.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			time.Sleep(2 * time.Second)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if _, err := Fetch(ctx, Options{Socket: sock}); err == nil || time.Since(t0) > time.Second {
		t.Errorf("err = %v after %v", err, time.Since(t0))
	}
}

func TestTheSocketComesFromTheEnvironmentWhenNotGiven(t *testing.T) {
	t.Setenv("EDGESEAL_TOKEN_SOCKET", "/run/snap.edgeseal/tokend.sock")
	if got := (Options{}).socket(); got != "/run/snap.edgeseal/tokend.sock" {
		t.Errorf("socket %q", got)
	}
	if got := (Options{Socket: "/x.sock"}).socket(); got != "/x.sock" {
		t.Errorf("socket %q", got)
	}
	t.Setenv("EDGESEAL_TOKEN_SOCKET", "")
	if got := (Options{}).socket(); got != DefaultSocket {
		t.Errorf("socket %q", got)
	}
}

func TestWriteTokenFileWritesVaultsAuthResponseWithMode0600(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "edgeseal")
	path := filepath.Join(dir, "token.json")
	r := okResponse(t)
	sec, _ := r.Secret()
	tok := &Token{Service: "collector", Secret: sec}
	for range 2 { // the second replaces the first
		if err := WriteTokenFile(path, tok); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", di.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	var back struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if err := json.Unmarshal(data, &back); err != nil || back.Auth.ClientToken != "hvs.test" {
		t.Errorf("file %s: %v", data, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestDefaultTokenPath(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1001")
	t.Setenv("RUNTIME_DIRECTORY", "/run/app-one:/run/other")
	if p, _ := DefaultTokenPath(); p != "/run/user/1001/edgeseal/token.json" {
		t.Errorf("with XDG_RUNTIME_DIR: %q", p)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	if p, _ := DefaultTokenPath(); p != "/run/app-one/token.json" {
		t.Errorf("with RUNTIME_DIRECTORY: %q", p)
	}
	t.Setenv("RUNTIME_DIRECTORY", "")
	if _, err := DefaultTokenPath(); err == nil || !strings.Contains(err.Error(), "--out") {
		t.Errorf("with neither: %v", err)
	}
}
