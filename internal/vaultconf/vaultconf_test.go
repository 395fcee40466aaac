package vaultconf

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
)

const (
	certFile    = "/run/edgeseal/pki/vault.crt"
	adminSocket = "/run/edgeseal/vault-admin/admin.sock"
)

// render returns the two files merged as Vault merges them: the top-level
// keys of both, the listeners of both.
func render(t *testing.T, listen string) map[string]any {
	t.Helper()
	v := config.Default().Vault
	v.Listen = listen
	c, err := Render(v, "", certFile, CredentialKeyPath, adminSocket)
	if err != nil {
		t.Fatal(err)
	}
	var server, tcp map[string]any
	if err := json.Unmarshal(c.Server, &server); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, c.Server)
	}
	if err := json.Unmarshal(c.TCP, &tcp); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, c.TCP)
	}
	if keys := slices.Sorted(maps.Keys(tcp)); !slices.Equal(keys, []string{"listener"}) {
		t.Errorf("listener-tcp.json has keys %v, want only the listener", keys)
	}
	maps.Copy(server["listener"].(map[string]any), tcp["listener"].(map[string]any))
	return server
}

// at follows keys through nested objects; nil if a key is missing.
func at(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		o, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = o[k]
	}
	return v
}

func TestRenderHasTheShapeVaultParses(t *testing.T) {
	got := render(t, "127.0.0.1:8200")
	cases := []struct {
		name string
		keys []string
		want any
	}{
		// Blocks are objects keyed by type: storage "file" {...}, listener "tcp" {...}.
		{"file storage at vault.storage_path", []string{"storage", "file", "path"}, "/var/lib/edgeseal-vault/data"},
		{"the listener listens on vault.listen", []string{"listener", "tcp", "address"}, "127.0.0.1:8200"},
		{"the certificate chain is this boot's", []string{"listener", "tcp", "tls_cert_file"}, certFile},
		{"the key is systemd's credential copy", []string{"listener", "tcp", "tls_key_file"}, "/run/credentials/edgeseal-vault.service/tls.key"},
		{"TLS 1.2 at least", []string{"listener", "tcp", "tls_min_version"}, "tls12"},
		{"TLS is never disabled", []string{"listener", "tcp", "tls_disable"}, nil},
		{"no cluster address on the listener", []string{"listener", "tcp", "cluster_address"}, nil},
		{"no cluster address", []string{"cluster_addr"}, nil},
		{"no cluster listener", []string{"disable_clustering"}, true},
		{"api_addr is what clients dial", []string{"api_addr"}, "https://127.0.0.1:8200"},
		{"no mlock (no CAP_IPC_LOCK; MemorySwapMax=0 instead)", []string{"disable_mlock"}, true},
		{"no web UI", []string{"ui"}, false},
		{"info logs", []string{"log_level"}, "info"},
		{"the admin listener is a Unix socket", []string{"listener", "unix", "address"}, adminSocket},
		{"the admin socket has no TLS (its directory is Vault's, 0700)", []string{"listener", "unix", "tls_disable"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if v := at(got, tc.keys...); !reflect.DeepEqual(v, tc.want) {
				t.Errorf("%s = %#v, want %#v", strings.Join(tc.keys, "."), v, tc.want)
			}
		})
	}
	keys := slices.Sorted(maps.Keys(got))
	if want := []string{"api_addr", "disable_clustering", "disable_mlock", "listener", "log_level", "storage", "ui"}; !slices.Equal(keys, want) {
		t.Errorf("top-level keys %v, want %v", keys, want)
	}
	if len(got["storage"].(map[string]any)) != 1 || len(got["listener"].(map[string]any)) != 2 {
		t.Error("not one storage and two listeners")
	}
}

func TestAPIAddrIsTheClientsViewOfTheListenAddress(t *testing.T) {
	for _, tc := range []struct{ listen, want string }{
		{"127.0.0.1:8200", "https://127.0.0.1:8200"},
		// An unspecified address listens everywhere; local clients use loopback.
		{"0.0.0.0:8300", "https://127.0.0.1:8300"},
		{"[::]:8200", "https://127.0.0.1:8200"},
		{"[::1]:8200", "https://[::1]:8200"},
		{"10.1.2.3:8200", "https://10.1.2.3:8200"},
	} {
		if got := at(render(t, tc.listen), "api_addr"); got != tc.want {
			t.Errorf("listen %s: api_addr %v, want %s", tc.listen, got, tc.want)
		}
	}
}

func TestRenderRefuses(t *testing.T) {
	good := config.Default().Vault
	for _, tc := range []struct {
		name                      string
		mod                       func(v *config.Vault)
		certFile, keyFile, socket string
		says                      string
	}{
		{"a listen address without a port", func(v *config.Vault) { v.Listen = "127.0.0.1" }, certFile, CredentialKeyPath, adminSocket, `listen address "127.0.0.1"`},
		{"a relative storage path", func(v *config.Vault) { v.StoragePath = "data" }, certFile, CredentialKeyPath, adminSocket, `storage path "data" is not an absolute path`},
		{"a relative certificate path", func(*config.Vault) {}, "vault.crt", CredentialKeyPath, adminSocket, `certificate file "vault.crt"`},
		{"an empty key path", func(*config.Vault) {}, certFile, "", adminSocket, `key file ""`},
		{"a relative admin socket", func(*config.Vault) {}, certFile, CredentialKeyPath, "admin.sock", `admin socket "admin.sock"`},
		{"an admin socket path too long to bind", func(*config.Vault) {}, certFile, CredentialKeyPath, "/" + strings.Repeat("x", 107), "admin socket path is 108 bytes, a Unix socket's path must be shorter than 108"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := good
			tc.mod(&v)
			_, err := Render(v, "", tc.certFile, tc.keyFile, tc.socket)
			if err == nil || !strings.Contains(err.Error(), "cannot render the Vault config: "+tc.says) {
				t.Errorf("err = %v, want it to say %q", err, tc.says)
			}
		})
	}
}

// The writer runs with UMask=0077; Vault, another user, must read the config.
func TestWriteMakesAConfigVaultCanReadWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	p := paths.New(t.TempDir())
	for _, data := range []string{"{}\n", `{"ui": false}` + "\n"} {
		if err := Write(p, Config{Server: []byte(data), TCP: []byte(data)}, true); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{p.VaultConfig, p.VaultTCP} {
			if got, _ := os.ReadFile(f); string(got) != data {
				t.Errorf("%s: content %q, want %q", f, got, data)
			}
		}
	}
	for path, want := range map[string]os.FileMode{p.VaultConfig: 0o644, p.VaultTCP: 0o644, p.VaultConfDir: 0o755 | os.ModeDir} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", path, err, fi.Mode(), want)
		}
	}
	if entries, _ := os.ReadDir(p.VaultConfDir); len(entries) != 2 {
		t.Errorf("%d files beside the config: temporary files left", len(entries)-2)
	}
}

// Before edgeseal has initialised Vault, Vault must not listen where every
// local user can call sys/init: the TCP listener waits under a name Vault does
// not read, until EnableTCP.
func TestTheTCPListenerIsHeldBackUntilEnabled(t *testing.T) {
	p := paths.New(t.TempDir())
	c := Config{Server: []byte("{}\n"), TCP: []byte(`{"listener": {}}` + "\n")}
	if err := Write(p, c, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.VaultTCP); !os.IsNotExist(err) {
		t.Fatalf("%s exists before EnableTCP: %v", p.VaultTCP, err)
	}
	if !strings.HasSuffix(p.VaultTCPHeld, ".held") {
		t.Fatalf("the held listener %s would be read by Vault (it reads *.json and *.hcl)", p.VaultTCPHeld)
	}
	for i, want := range []bool{true, false} {
		changed, err := EnableTCP(p)
		if err != nil || changed != want {
			t.Fatalf("EnableTCP #%d = %v, %v; want %v", i+1, changed, err, want)
		}
	}
	if got, _ := os.ReadFile(p.VaultTCP); string(got) != string(c.TCP) {
		t.Errorf("%s: %q", p.VaultTCP, got)
	}
	t.Log("And the next boot's pki step, seeing the sealed key, writes it on at once and no held copy")
	if err := Write(p, c, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.VaultTCPHeld); !os.IsNotExist(err) {
		t.Errorf("%s left beside %s: %v", p.VaultTCPHeld, p.VaultTCP, err)
	}
}

func TestEachServerGetsOnlyTheOptionsItKnows(t *testing.T) {
	v := config.Default().Vault
	for _, tc := range []struct {
		kind vaultbin.Kind
		want any
	}{
		{vaultbin.OpenBao, true},
		{vaultbin.Vault, nil},
		{"", nil},
	} {
		c, err := Render(v, tc.kind, certFile, CredentialKeyPath, adminSocket)
		if err != nil {
			t.Fatal(err)
		}
		var server, tcp map[string]any
		if err := json.Unmarshal(c.Server, &server); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(c.TCP, &tcp); err != nil {
			t.Fatal(err)
		}
		if got := at(server, "listener", "unix", "disable_unauthed_rekey_endpoints"); got != tc.want {
			t.Errorf("%q: admin listener disable_unauthed_rekey_endpoints = %v, want %v", tc.kind, got, tc.want)
		}
		if got := at(tcp, "listener", "tcp", "disable_unauthed_rekey_endpoints"); got != tc.want {
			t.Errorf("%q: TCP listener disable_unauthed_rekey_endpoints = %v, want %v", tc.kind, got, tc.want)
		}
		// OpenBao removed mlock and warns of disable_mlock as an unknown key.
		if got, want := at(server, "disable_mlock") != nil, tc.kind != vaultbin.OpenBao; got != want {
			t.Errorf("%q: disable_mlock present: %v, want %v", tc.kind, got, want)
		}
	}
	if _, err := Render(v, "consul", certFile, CredentialKeyPath, adminSocket); err == nil || !strings.Contains(err.Error(), `"consul"`) {
		t.Errorf("an unknown server: err %v, want one naming it", err)
	}
}

// A thief with the disk rewrites edgeseal-pki's kept answer so that it writes
// HashiCorp Vault's form of the config for OpenBao: listeners that take
// unauthenticated rekeys. edgeseal-unseal, which knows the running server's
// kind, finds it before it unseals.
func TestAConfigOfTheOtherServersFormIsFoundForOpenBao(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		for _, tc := range []struct {
			rendered vaultbin.Kind
			ok       bool
		}{{vaultbin.OpenBao, true}, {vaultbin.Vault, false}, {"", false}} {
			p := paths.New(t.TempDir())
			c, err := Render(config.Default().Vault, tc.rendered, certFile, CredentialKeyPath, adminSocket)
			if err != nil {
				t.Fatal(err)
			}
			if err := Write(p, c, tcp); err != nil {
				t.Fatal(err)
			}
			err = CheckRendered(p, vaultbin.OpenBao)
			if tc.ok && err != nil || !tc.ok && (!errors.Is(err, ErrNotForServer) || !errors.Is(err, vaultbin.ErrUnsupported)) {
				t.Errorf("config rendered for %q (tcp %v), OpenBao running: %v", tc.rendered, tcp, err)
			}
			// With Vault running, its own form (and OpenBao's) is fine.
			if err := CheckRendered(p, vaultbin.Vault); err != nil {
				t.Errorf("config rendered for %q, Vault running: %v", tc.rendered, err)
			}
		}
	}
	// A missing config is an error, not a pass.
	if err := CheckRendered(paths.New(t.TempDir()), vaultbin.OpenBao); err == nil || errors.Is(err, ErrNotForServer) {
		t.Errorf("no config: %v", err)
	}
}
