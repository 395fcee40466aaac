package vaultconf

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
)

func TestRenderNamesEdgesealsListenerStorageAndTLS(t *testing.T) {
	cfg := config.Default()
	cfg.Vault.Listen = "0.0.0.0:8300"
	data, err := Render(cfg, "/run/edgeseal/pki/vault.crt", CredentialKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Storage  map[string]map[string]string `json:"storage"`
		Listener []map[string]map[string]any  `json:"listener"`
		Mlock    bool                         `json:"disable_mlock"`
		APIAddr  string                       `json:"api_addr"`
		UI       bool                         `json:"ui"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	tcp := got.Listener[0]["tcp"]
	checks := map[string]bool{
		"file storage at storage_path":  got.Storage["file"]["path"] == "/var/lib/edgeseal-vault/data",
		"listener on vault.listen":      tcp["address"] == "0.0.0.0:8300",
		"TLS certificate from the PKI":  tcp["tls_cert_file"] == "/run/edgeseal/pki/vault.crt",
		"TLS key from the credential":   tcp["tls_key_file"] == "/run/credentials/edgeseal-vault.service/tls.key",
		"TLS is never disabled":         tcp["tls_disable"] == nil,
		"TLS 1.2 at least":              tcp["tls_min_version"] == "tls12",
		"api_addr is the client's view": got.APIAddr == "https://127.0.0.1:8300",
		"no web UI":                     !got.UI,
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("%s:\n%s", what, data)
		}
	}
}

func TestWriteMakesAReadableConfigUnderATightUmask(t *testing.T) {
	p := paths.New(t.TempDir())
	if err := Write(p, []byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{p.VaultConfig: 0o644} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v", path, err, fi.Mode())
		}
	}
}
