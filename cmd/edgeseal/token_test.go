package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/tokenclient"
)

// provider answers every connection on a new socket with resp.
func provider(t *testing.T, resp tokenclient.Response) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "tokend.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	resp.V = tokenclient.ProtocolVersion
	line, _ := json.Marshal(resp)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadString('\n')
			c.Write(append(line, '\n'))
			c.Close()
		}
	}()
	return sock
}

// vouchingVault is a fake Vault that says every token was issued to this
// process, in this boot, for service collector; otherwise it answers with
// status code and Vault's errors.
func vouchingVault(t *testing.T, code int) (addr, caFile string) {
	t.Helper()
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{"edgeseal_service": "collector", "pid": strconv.Itoa(os.Getpid()), "boot_id": strings.TrimSpace(string(boot))}
	vault := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/auth/token/lookup-self" {
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"meta": meta, "creation_time": time.Now().Unix()}})
			return
		}
		w.WriteHeader(code)
		io.WriteString(w, `{"errors":["permission denied"]}`)
	}))
	t.Cleanup(vault.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vault.Certificate().Raw}), 0o644)
	return vault.URL, caFile
}

func TestTokenFetchWritesTheTokenFileAndSaysWhere(t *testing.T) {
	sock := provider(t, tokenclient.Response{Status: tokenclient.StatusOK, Service: "collector", Identity: "uid 1001 (pid 9, gid 1001)",
		Token: json.RawMessage(`{"auth":{"client_token":"hvs.secret","accessor":"a","lease_duration":3600,"renewable":true}}`)})
	path := filepath.Join(t.TempDir(), "run", "token.json")
	addr, ca := vouchingVault(t, http.StatusBadRequest)
	pins := []string{"--vault-addr", addr, "--ca-cert", ca}
	out, _, err := runCLI(t, append([]string{"token", "fetch", "--socket", sock, "--out", path}, pins...)...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "wrote the token of service collector to "+path) || !strings.Contains(out, "uid 1001") || strings.Contains(out, "hvs.secret") {
		t.Errorf("output %q", out)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	data, _ := os.ReadFile(path)
	var sec api.Secret
	if err := json.Unmarshal(data, &sec); err != nil || sec.Auth == nil || sec.Auth.ClientToken != "hvs.secret" {
		t.Errorf("token file %s: %v", data, err)
	}
	if out, _, err := runCLI(t, append([]string{"token", "fetch", "--quiet", "--socket", sock, "--out", path}, pins...)...); err != nil || out != "" {
		t.Errorf("--quiet: %q %v", out, err)
	}
}

func TestTokenFetchRefusedWritesNothingAndNamesTheIdentity(t *testing.T) {
	sock := provider(t, tokenclient.Response{Status: tokenclient.StatusRefused, Identity: "uid 4242 (pid 9, gid 4242)", Error: "no rule"})
	path := filepath.Join(t.TempDir(), "token.json")
	_, _, err := runCLI(t, "token", "fetch", "--socket", sock, "--out", path)
	if !errors.Is(err, tokenclient.ErrRefused) || !strings.Contains(err.Error(), "uid 4242") || errors.As(err, new(temporaryError)) {
		t.Errorf("err = %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a refused fetch left a file: %v", err)
	}
}

func TestTokenFetchTellsAScriptToRetryWhenVaultIsSealedOrNothingListens(t *testing.T) {
	sealed := provider(t, tokenclient.Response{Status: tokenclient.StatusSealed, Error: "Vault is sealed"})
	for _, sock := range []string{sealed, filepath.Join(t.TempDir(), "absent.sock")} {
		_, _, err := runCLI(t, "token", "fetch", "--socket", sock, "--out", filepath.Join(t.TempDir(), "t.json"))
		if !errors.As(err, new(temporaryError)) {
			t.Errorf("%s: err = %v, want a temporary error (exit 75)", sock, err)
		}
	}
	_, _, err := runCLI(t, "token", "fetch", "--socket", filepath.Join(t.TempDir(), "absent.sock"), "--out", "/x")
	if err == nil || !strings.Contains(err.Error(), "not started") {
		t.Errorf("no provider: %v", err)
	}
}

func TestTokenFetchAsksTheSocketInTheEnvironmentEvenUnderRoot(t *testing.T) {
	sock := provider(t, tokenclient.Response{Status: tokenclient.StatusRefused, Identity: "uid 4242 (pid 9, gid 4242)", Error: "no rule"})
	t.Setenv("EDGESEAL_TOKEN_SOCKET", sock)
	_, _, err := runCLI(t, "--root", t.TempDir(), "token", "fetch", "--out", filepath.Join(t.TempDir(), "t.json"))
	if !errors.Is(err, tokenclient.ErrRefused) {
		t.Errorf("err = %v, want the refusal of the provider at $EDGESEAL_TOKEN_SOCKET", err)
	}
}

func TestTokenFetchRenewFailsOnceTheTokenIsRevoked(t *testing.T) {
	addr, ca := vouchingVault(t, http.StatusForbidden) // what renew-self answers for a revoked token
	t.Setenv("EDGESEAL_VAULT_ADDR", addr)
	t.Setenv("EDGESEAL_VAULT_CACERT", ca)
	sock := provider(t, tokenclient.Response{Status: tokenclient.StatusOK, Service: "collector",
		Token: json.RawMessage(`{"auth":{"client_token":"hvs.secret","lease_duration":1,"renewable":true}}`)})
	path := filepath.Join(t.TempDir(), "token.json")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"token", "fetch", "--renew", "--socket", sock, "--out", path}, &out, &errOut)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "cannot renew the token of service collector") {
		t.Errorf("err = %v (context: %v), want a renewal failure before the deadline", err, ctx.Err())
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the token file was not written before renewing: %v", err)
	}
}

func TestTokenUsage(t *testing.T) {
	if out, _, err := runCLI(t, "token", "--help"); err != nil || !strings.Contains(out, "secrets-token.json") || !strings.Contains(out, "75") {
		t.Errorf("token --help: %v\n%s", err, out)
	}
	if out, _, err := runCLI(t, "token", "fetch", "--help"); err != nil || !strings.Contains(out, "--renew") {
		t.Errorf("token fetch --help: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"token"}, {"token", "steal"}, {"token", "fetch", "extra"}, {"token", "fetch", "--bogus"}} {
		if _, _, err := runCLI(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("RUNTIME_DIRECTORY", "")
	if _, _, err := runCLI(t, "token", "fetch", "--socket", "/nonexistent"); err == nil || !strings.Contains(err.Error(), "--out") {
		t.Errorf("no default path: %v", err)
	}
}

func TestTokenFetchRefusesAnImpostorsTokenAndWritesNothing(t *testing.T) {
	// Given a socket answering with a token the pinned Vault says was issued
	// to another process
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	vault := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"creation_time": time.Now().Unix(),
			"meta": map[string]string{"edgeseal_service": "collector", "pid": "4711", "boot_id": strings.TrimSpace(string(boot))}}})
	}))
	defer vault.Close()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vault.Certificate().Raw}), 0o644)
	sock := provider(t, tokenclient.Response{Status: tokenclient.StatusOK, Service: "collector",
		Token: json.RawMessage(`{"auth":{"client_token":"hvs.impostor","lease_duration":3600,"renewable":true}}`)})
	path := filepath.Join(t.TempDir(), "token.json")
	// When edgeseal token fetch asks it
	_, _, err := runCLI(t, "token", "fetch", "--socket", sock, "--out", path, "--vault-addr", vault.URL, "--ca-cert", ca)
	// Then it refuses, saying the answer is not edgeseal's, not as a temporary failure, and writes nothing
	if !errors.Is(err, tokenclient.ErrImpostor) || !strings.Contains(err.Error(), "did not come from edgeseal") ||
		!strings.Contains(err.Error(), "pid 4711") || errors.As(err, new(temporaryError)) {
		t.Errorf("err = %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("an impostor's token was written: %v", err)
	}
}
