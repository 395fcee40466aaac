package refctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func goodBaoConfig() *BaoConfig {
	return &BaoConfig{Format: baoConfigFormat, Version: baoConfigVersion,
		Addresses: []string{"https://bao-1:8200", "https://bao-2:8200"}, CAFile: "/etc/edgeseal-controller/bao-ca.crt",
		KVMount: DefaultKVMount, TransitMount: DefaultTransitMount, AppRoleMount: DefaultAppRoleMount,
		RoleID: "9f3c2a1e-role", SecretID: "s3cr3t-secret-id-value"}
}

// The store's file is written 0600 and read back; one others may read, or
// out of shape, is refused naming the file and the field, never quoting the
// secret id.
func TestTheOpenBaoStoresFileIsPrivateAndReadStrictly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "openbao.json")
	if err := goodBaoConfig().Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("written %v, %v; want 0600", fi.Mode(), err)
	}
	got, err := LoadBaoConfig(path)
	if err != nil || got.SecretID != goodBaoConfig().SecretID || len(got.Addresses) != 2 {
		t.Fatalf("LoadBaoConfig = %+v, %v", got, err)
	}

	os.Chmod(path, 0o644)
	if _, err := LoadBaoConfig(path); err == nil || !strings.Contains(err.Error(), "others may read it (mode 0644)") {
		t.Errorf("a file others may read: %v", err)
	}
	os.Chmod(path, 0o600)

	for _, tc := range []struct {
		name string
		edit func(c *BaoConfig)
		raw  string
		want string
	}{
		{"plain http", func(c *BaoConfig) { c.Addresses = []string{"http://bao-1:8200"} }, "", "only https"},
		{"no address", func(c *BaoConfig) { c.Addresses = nil }, "", "addresses"},
		{"a relative CA file", func(c *BaoConfig) { c.CAFile = "ca.crt" }, "", "ca_file"},
		{"a mount with a slash", func(c *BaoConfig) { c.KVMount = "a/b" }, "", "kv_mount"},
		{"a secret id with a newline", func(c *BaoConfig) { c.SecretID = "s3cr3t\nx" }, "", "secret_id: missing, or not printable"},
		{"an unknown field", nil, `{"format":"edgeseal-controller-openbao","version":1,"token":"s3cr3t"}`, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "openbao.json")
			data := []byte(tc.raw)
			if tc.edit != nil {
				c := goodBaoConfig()
				tc.edit(c)
				if err := c.Save(p); err == nil {
					t.Fatal("Save wrote a file out of shape")
				}
				data, _ = json.Marshal(c)
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadBaoConfig(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("LoadBaoConfig: %v; want it to name %s and say %q", err, p, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("the error quotes the secret id: %v", err)
			}
		})
	}
}
