//go:build integration

package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/tokenclient"
)

// Root runs `edgeseal token fetch` with a user's $XDG_RUNTIME_DIR (su keeps
// it). That user has put edgeseal -> a directory of root's (standing for
// /etc) there, or token.json -> a file of root's: both are refused, and
// nothing is written outside.
func TestTokenFetchAsRootRefusesAUsersRuntimeDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test plays root in a user's runtime directory: run the integration tests as root")
	}
	const user = 1234
	sock := provider(t, tokenclient.Response{Status: tokenclient.StatusOK, Service: "collector", Identity: "uid 0",
		Token: json.RawMessage(`{"auth":{"client_token":"hvs.secret","accessor":"a","lease_duration":3600,"renewable":true}}`)})
	base := t.TempDir()
	etc := filepath.Join(base, "etc") // root's, like /etc
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	passwd := filepath.Join(etc, "passwd")
	os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)

	// The user's runtime directory, as systemd-logind makes it: 0700, theirs.
	xdg := filepath.Join(base, "run-user-1234")
	os.Mkdir(xdg, 0o700)
	if err := os.Symlink(etc, filepath.Join(xdg, "edgeseal")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{xdg, filepath.Join(xdg, "edgeseal")} {
		if err := os.Lchown(p, user, user); err != nil {
			t.Fatal(err)
		}
	}
	t.Log("Given a user's $XDG_RUNTIME_DIR holding edgeseal -> a directory of root's")
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	_, _, err := runCLI(t, "token", "fetch", "--socket", sock)
	t.Logf("When root runs edgeseal token fetch, Then it is refused: %v", err)
	if !errors.Is(err, fsutil.ErrUnsafePath) {
		t.Errorf("token fetch = %v, want fsutil.ErrUnsafePath", err)
	}
	if entries, _ := os.ReadDir(etc); len(entries) != 1 {
		t.Errorf("something was written in root's directory: %v", entries)
	}

	t.Log("Given root's own runtime directory whose token.json is a symlink to a file of root's")
	own := filepath.Join(base, "run-user-0")
	os.MkdirAll(filepath.Join(own, "edgeseal"), 0o700)
	if err := os.Symlink(passwd, filepath.Join(own, "edgeseal", "token.json")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_RUNTIME_DIR", own)
	_, _, err = runCLI(t, "token", "fetch", "--socket", sock)
	t.Logf("When root runs edgeseal token fetch, Then it is refused: %v", err)
	if !errors.Is(err, fsutil.ErrUnsafePath) {
		t.Errorf("token fetch = %v, want fsutil.ErrUnsafePath", err)
	}
	if data, _ := os.ReadFile(passwd); string(data) != "root:x:0:0::/root:/bin/sh\n" {
		t.Errorf("the symlink's target was written: %q", data)
	}

	t.Log("Given root's own runtime directory, plainly, Then the token file is written there")
	// (A whole fetch needs the server that issued the token: the client
	// checks it there. Here the file the fetch writes is what is tested.)
	os.Remove(filepath.Join(own, "edgeseal", "token.json"))
	path, err := tokenclient.DefaultTokenPath()
	if err != nil {
		t.Fatal(err)
	}
	if err := tokenclient.CheckFiles(path, true); err != nil {
		t.Fatalf("the token's files in root's own directory: %v", err)
	}
	var sec api.Secret
	json.Unmarshal([]byte(`{"auth":{"client_token":"hvs.secret"}}`), &sec)
	if err := tokenclient.WriteTokenFile(path, &tokenclient.Token{Secret: &sec}); err != nil {
		t.Fatalf("the token file in root's own directory: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(own, "edgeseal", "token.json")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("token.json: %v %v", fi, err)
	}
}
