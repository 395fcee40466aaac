package tokenclient

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// The parts of the client that talk to Vault itself (unwrapping, renewal) and
// the edges of the wire format; fetch_test.go covers the rest of Fetch.

// fakeVault serves h over TLS and returns its address and a file holding the
// CA certificate that verifies it, as the provider names them in its answer.
func fakeVault(t *testing.T, h http.HandlerFunc) (addr, caFile string) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

func vaultError(w http.ResponseWriter, code int, msg string) {
	w.WriteHeader(code)
	io.WriteString(w, `{"errors":["`+msg+`"]}`)
}

// wrappedAnswer is the provider's answer when it response-wraps the token.
func wrappedAnswer(t *testing.T, addr, caFile string) string {
	t.Helper()
	sec, _ := json.Marshal(api.Secret{WrapInfo: &api.SecretWrapInfo{Token: "hvs.wrapping", Accessor: "wacc", TTL: 60}})
	return answer(t, Response{Status: StatusOK, Service: "collector", Identity: "uid 1001 (pid 7, gid 1001)",
		VaultAddr: addr, CACert: caFile, Wrapped: true, Token: sec})
}

func TestFetchUnwrapsAWrappedTokenOnceWithTheWrappingToken(t *testing.T) {
	var mu sync.Mutex
	used := false
	addr, ca := fakeVault(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Vault-Token") == "hvs.unwrapped" && vouch(t, w, r, "collector") {
			return
		}
		if r.Method != http.MethodPut || r.URL.Path != "/v1/sys/wrapping/unwrap" || r.Header.Get("X-Vault-Token") != "hvs.wrapping" {
			vaultError(w, http.StatusBadRequest, "unexpected "+r.Method+" "+r.URL.Path)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if used { // Vault's wrapping tokens work once
			vaultError(w, http.StatusBadRequest, "wrapping token is not valid or does not exist")
			return
		}
		used = true
		io.WriteString(w, `{"auth":{"client_token":"hvs.unwrapped","accessor":"acc","lease_duration":3600,"renewable":true}}`)
	})
	f := newFakeProvider(t, wrappedAnswer(t, addr, ca))
	tok, err := fetchAt(t, f.socket, addr, ca)
	if err != nil {
		t.Fatal(err)
	}
	if tok.ClientToken() != "hvs.unwrapped" || tok.Service != "collector" || tok.VaultAddr != addr || tok.Secret.WrapInfo != nil {
		t.Errorf("token %+v, secret %+v", tok, tok.Secret)
	}
	if data, _ := tok.MarshalFile(); strings.Contains(string(data), "hvs.wrapping") || !strings.Contains(string(data), "hvs.unwrapped") {
		t.Errorf("token file %s", data)
	}
	// The same wrapping token again: someone has used it already, and the
	// error says so rather than passing for a provider fault.
	_, err = fetchAt(t, f.socket, addr, ca)
	if err == nil || !strings.Contains(err.Error(), "someone else may have unwrapped it") || errors.Is(err, ErrProtocol) || Temporary(err) {
		t.Errorf("second unwrap: err = %v", err)
	}
}

func TestFetchRejectsAWrappedAnswerItCannotUnwrap(t *testing.T) {
	noAuth, noAuthCA := fakeVault(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"data":{"something":"else"}}`)
	})
	noWrapInfo := answer(t, Response{Status: StatusOK, Wrapped: true, Token: json.RawMessage(`{"auth":null}`)})
	for _, c := range []struct {
		name   string
		answer string
		caCert string // the client's pin
		want   error  // nil: any error
		says   string // in the message
	}{
		// Wrapped says so, but there is no wrapping token to unwrap with.
		{"no wrapping token", noWrapInfo, noAuthCA, ErrProtocol, "without a wrapping token"},
		// Unwrapping gives something that is not a token.
		{"unwrapped to no token", wrappedAnswer(t, noAuth, noAuthCA), noAuthCA, ErrProtocol, "holds no token"},
		// The client is pinned to a CA certificate it cannot read.
		{"unreadable CA certificate", wrappedAnswer(t, noAuth, noAuthCA), "/nonexistent/ca.crt", nil, "/nonexistent/ca.crt"},
	} {
		f := newFakeProvider(t, c.answer)
		_, err := fetchAt(t, f.socket, noAuth, c.caCert)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: err = %v, want %v saying %q", c.name, err, c.want, c.says)
		}
	}
}

func TestFetchTakesAnAnswerOfExactlyTheLimitAndNotOneByteMore(t *testing.T) {
	r := okResponse(t)
	base := answer(t, r)
	r.Error = strings.Repeat("x", MaxResponseSize-len(base)-len(`"error":"",`))
	atLimit := answer(t, r)
	if len(atLimit) != MaxResponseSize {
		t.Fatalf("test answer is %d bytes, want %d", len(atLimit), MaxResponseSize)
	}
	if _, err := fetch(t, newFakeProvider(t, atLimit).socket); err != nil {
		t.Errorf("an answer of MaxResponseSize bytes: %v", err)
	}
	r.Error += "x"
	if _, err := fetch(t, newFakeProvider(t, answer(t, r)).socket); !errors.Is(err, ErrProtocol) {
		t.Errorf("an answer one byte longer: err = %v, want ErrProtocol", err)
	}
	// A provider that streams bytes without ever ending the line.
	endless := strings.Repeat("a", 2*MaxResponseSize)
	if _, err := fetch(t, newFakeProvider(t, endless).socket); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("a line without end: err = %v, want ErrProtocol", err)
	}
}

func TestWriteTokenFileLeavesTheModeOfAnExistingDirectoryAlone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "app")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o750) // whatever the umask
	r := okResponse(t)
	sec, _ := r.Secret()
	if err := WriteTokenFile(filepath.Join(dir, "token.json"), &Token{Secret: sec}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o750 {
		t.Errorf("directory mode %v, want it left at 0750", fi.Mode().Perm())
	}
}

// renewableToken is a periodic token of service collector at addr.
func renewableToken(addr, caFile string, period int) *Token {
	return &Token{Service: "collector", VaultAddr: addr, CACert: caFile,
		Secret: &api.Secret{Auth: &api.SecretAuth{ClientToken: "hvs.test", Accessor: "acc", LeaseDuration: period, Renewable: true}}}
}

func TestKeepRenewedRenewsTheTokenUntilTheContextEnds(t *testing.T) {
	addr, ca := fakeVault(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/auth/token/renew-self" || r.Header.Get("X-Vault-Token") != "hvs.test" {
			vaultError(w, http.StatusBadRequest, "unexpected "+r.URL.Path)
			return
		}
		io.WriteString(w, `{"auth":{"client_token":"hvs.test","accessor":"acc","lease_duration":3600,"renewable":true}}`)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	renewed := make(chan *api.Secret, 16)
	done := make(chan error, 1)
	go func() {
		done <- renewableToken(addr, ca, 3600).KeepRenewed(ctx, func(s *api.Secret) { renewed <- s })
	}()
	select {
	case s := <-renewed:
		if s.Auth == nil || s.Auth.LeaseDuration != 3600 {
			t.Errorf("renewal %+v", s)
		}
	case err := <-done:
		t.Fatalf("KeepRenewed returned before renewing: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("KeepRenewed after the context ended: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("KeepRenewed did not return when the context ended")
	}
}

func TestKeepRenewedFailsWhenTheTokenWasRevoked(t *testing.T) {
	addr, ca := fakeVault(t, func(w http.ResponseWriter, r *http.Request) {
		vaultError(w, http.StatusForbidden, "permission denied")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Vault's watcher stops trying once a renewal is denied and returns when
	// the token runs out: a one-second period keeps the test short.
	err := renewableToken(addr, ca, 1).KeepRenewed(ctx, func(*api.Secret) { t.Error("a revoked token was renewed") })
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "cannot renew the token of service collector") {
		t.Errorf("err = %v (context: %v)", err, ctx.Err())
	}
}
