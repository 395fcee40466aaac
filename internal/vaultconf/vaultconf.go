// Package vaultconf renders the Vault server's config from edgeseal's: one source
// of truth for the listen address and storage path, and the TLS files of this
// boot's PKI. Vault reads JSON config files as it reads HCL.
package vaultconf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
)

// CredentialKeyPath is where systemd's LoadCredential=tls.key:... puts Vault's copy
// of its TLS key, readable only by Vault's user.
const CredentialKeyPath = "/run/credentials/edgeseal-vault.service/tls.key"

type server struct {
	Storage      map[string]map[string]string `json:"storage"`
	Listener     []map[string]map[string]any  `json:"listener"`
	DisableMlock bool                         `json:"disable_mlock"`
	APIAddr      string                       `json:"api_addr"`
	UI           bool                         `json:"ui"`
	LogLevel     string                       `json:"log_level"`
}

// Render returns Vault's server config: file storage, one TLS listener.
func Render(c *config.Config, certFile, keyFile string) ([]byte, error) {
	s := server{
		Storage: map[string]map[string]string{"file": {"path": c.Vault.StoragePath}},
		Listener: []map[string]map[string]any{{"tcp": {
			"address":         c.Vault.Listen,
			"tls_cert_file":   certFile,
			"tls_key_file":    keyFile,
			"tls_min_version": "tls12",
		}}},
		// edgeseal's units keep Vault out of swap another way (no swap on the
		// device, or MemorySwapMax=0); mlock needs CAP_IPC_LOCK we do not grant.
		DisableMlock: true,
		APIAddr:      c.VaultAddr(),
		UI:           false,
		LogLevel:     "info",
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot render the Vault config: %w", err)
	}
	return append(data, '\n'), nil
}

// Write writes the rendered config to p.VaultConfig (0644: it holds no secret).
func Write(p paths.Paths, data []byte) error {
	dir := filepath.Dir(p.VaultConfig)
	// Explicit mode: the writer runs with UMask=0077, and Vault (its own user)
	// must read this directory.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", dir, err)
	}
	return fsutil.WriteFileAtomic(p.VaultConfig, data, 0o644, fsutil.Self)
}
