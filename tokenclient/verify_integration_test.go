//go:build integration

package tokenclient

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// realVault starts the test bed's Vault, initialised and unsealed, and returns
// it with a root client of its TCP listener.
func realVault(t *testing.T) (*testbed.VaultServer, *api.Client) {
	t.Helper()
	cfg := config.Default()
	cfg.Vault.StoragePath = filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(cfg.Vault.StoragePath, 0o700); err != nil {
		t.Fatal(err)
	}
	vs := testbed.StartVault(t, cfg)
	admin := vs.AdminClient(t)
	init, err := admin.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Sys().Unseal(init.Keys[0]); err != nil {
		t.Fatal(err)
	}
	root := vs.Client(t)
	root.SetToken(init.RootToken)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := root.Auth().Token().LookupSelf()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Vault does not serve after unsealing: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return vs, root
}

// The lookup-self check against a real Vault: tokens made as the provider
// makes them (metadata pid, boot id, service), plain and response-wrapped,
// handed over by a socket that is not the provider.
func TestFetchChecksWithARealVaultWhoTheTokenWasIssuedTo(t *testing.T) {
	vs, root := realVault(t)
	issue := func(pid string, bootID string, wrap bool) []byte {
		t.Helper()
		c, err := root.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(root.Token())
		if wrap {
			c.SetWrappingLookupFunc(func(string, string) string { return "60s" })
		}
		sec, err := c.Auth().Token().Create(&api.TokenCreateRequest{NoParent: true, Period: "1h", DisplayName: "collector",
			Metadata: map[string]string{metaService: "collector", metaPID: pid, metaBootID: bootID, "uid": "1001"}})
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(sec)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	me, boot := strconv.Itoa(os.Getpid()), thisBootID(t)
	// An impostor's Vault and CA, named in the answers: never used.
	other, otherCA := fakeVaultOfAnotherCA(t, nil)
	for _, c := range []struct {
		name  string
		token []byte
		wrap  bool
		says  string // "": accepted
	}{
		{"issued to this process", issue(me, boot, false), false, ""},
		{"issued to this process, wrapped", issue(me, boot, true), true, ""},
		// The impostor's own token, from its own grant.
		{"issued to another process", issue("1", boot, false), false, "issued to pid 1, not to this process"},
		{"issued to another process, wrapped", issue("1", boot, true), true, "issued to pid 1, not to this process"},
		{"issued in another boot", issue(me, "00000000-0000-0000-0000-000000000000", false), false, "not in this boot"},
	} {
		// Given a socket answering with the token and the impostor's Vault
		f := newFakeProvider(t, answer(t, Response{Status: StatusOK, Service: "collector", Identity: "uid 1001",
			VaultAddr: other, CACert: otherCA, Wrapped: c.wrap, Token: c.token}))
		// When the client pinned to the device's Vault fetches
		tok, err := fetchAt(t, f.socket, vs.Addr, vs.CAFile)
		// Then it takes its own token and refuses any other as an impostor's
		switch {
		case c.says == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.says == "" && (tok.VaultAddr != vs.Addr || tok.Secret.Auth == nil):
			t.Errorf("%s: token %+v", c.name, tok)
		case c.says != "" && (!errors.Is(err, ErrImpostor) || !strings.Contains(err.Error(), c.says)):
			t.Errorf("%s: err = %v, want ErrImpostor saying %q", c.name, err, c.says)
		}
	}
	// A token the device's Vault does not know (a forged one) is not taken.
	f := newFakeProvider(t, answer(t, Response{Status: StatusOK, Service: "collector",
		Token: []byte(`{"auth":{"client_token":"hvs.forged","lease_duration":3600,"renewable":true}}`)}))
	if tok, err := fetchAt(t, f.socket, vs.Addr, vs.CAFile); tok != nil || err == nil || !errors.Is(err, ErrSuperseded) {
		t.Errorf("a forged token: %v, %v", tok, err)
	}
}
