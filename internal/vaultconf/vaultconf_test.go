package vaultconf

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
)

const certFile = "/run/edgeseal/pki/vault.crt"

func render(t *testing.T, listen string) map[string]any {
	t.Helper()
	v := config.Default().Vault
	v.Listen = listen
	data, err := Render(v, certFile, CredentialKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, data)
	}
	return got
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
	if len(got["storage"].(map[string]any)) != 1 || len(got["listener"].(map[string]any)) != 1 {
		t.Error("more than one storage or listener")
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
		name              string
		mod               func(v *config.Vault)
		certFile, keyFile string
		says              string
	}{
		{"a listen address without a port", func(v *config.Vault) { v.Listen = "127.0.0.1" }, certFile, CredentialKeyPath, `listen address "127.0.0.1"`},
		{"a relative storage path", func(v *config.Vault) { v.StoragePath = "data" }, certFile, CredentialKeyPath, `storage path "data" is not an absolute path`},
		{"a relative certificate path", func(*config.Vault) {}, "vault.crt", CredentialKeyPath, `certificate file "vault.crt"`},
		{"an empty key path", func(*config.Vault) {}, certFile, "", `key file ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := good
			tc.mod(&v)
			_, err := Render(v, tc.certFile, tc.keyFile)
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
		if err := Write(p, []byte(data)); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p.VaultConfig); string(got) != data {
			t.Errorf("content %q, want %q", got, data)
		}
	}
	for path, want := range map[string]os.FileMode{p.VaultConfig: 0o644, filepath.Dir(p.VaultConfig): 0o755 | os.ModeDir} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", path, err, fi.Mode(), want)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(p.VaultConfig)); len(entries) != 1 {
		t.Errorf("%d files beside the config: temporary files left", len(entries)-1)
	}
}
