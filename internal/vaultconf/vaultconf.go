// Package vaultconf renders the Vault server's config from edgeseal's, so the
// listen address and storage path have one source of truth (edgeseal.yaml) and
// Vault's TLS files are always this boot's PKI.
//
// Vault reads JSON config files as it reads HCL (by the .json extension); in
// JSON, a block such as `listener "tcp" { ... }` is an object keyed by its type:
// "listener": {"tcp": {...}}. The rendered config has file storage, one TCP
// listener that always has TLS (1.2 at least), no cluster listener and no UI.
package vaultconf

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
)

// CredentialKeyPath is where systemd puts Vault's copy of its TLS key, from
// LoadCredential=tls.key:/run/edgeseal/pki/vault.key in edgeseal-vault.service:
// a private copy readable by Vault's user only.
const CredentialKeyPath = "/run/credentials/edgeseal-vault.service/tls.key"

const (
	storageType   = "file"
	listenerType  = "tcp"
	tlsMinVersion = "tls12"
	logLevel      = "info"
	// configMode and dirMode: Vault runs as its own user and must read the
	// config; it holds no secret. The writer's UMask=0077 is overridden.
	configMode = 0o644
	dirMode    = 0o755
)

// server is the part of Vault's server config edgeseal sets (command/server in
// Vault's source; the listener in internalshared/configutil).
type server struct {
	Storage  map[string]fileStorage `json:"storage"`
	Listener map[string]tcpListener `json:"listener"`
	// APIAddr is the address clients are told to use (redirects, Location).
	APIAddr string `json:"api_addr"`
	// DisableClustering: file storage has no HA, so no node forwards to another;
	// without it Vault would still open a cluster listener on the API port + 1
	// once unsealed.
	DisableClustering bool `json:"disable_clustering"`
	// DisableMlock: mlock needs CAP_IPC_LOCK, which edgeseal-vault.service does
	// not grant; the unit keeps Vault out of swap with MemorySwapMax=0 instead.
	DisableMlock bool   `json:"disable_mlock"`
	UI           bool   `json:"ui"`
	LogLevel     string `json:"log_level"`
}

type fileStorage struct {
	Path string `json:"path"`
}

type tcpListener struct {
	Address       string `json:"address"`
	TLSCertFile   string `json:"tls_cert_file"`
	TLSKeyFile    string `json:"tls_key_file"`
	TLSMinVersion string `json:"tls_min_version"`
}

// Render returns Vault's server config for v, as JSON, with the listener's
// certificate chain at certFile and its key at keyFile (absolute paths: Vault
// would resolve relative ones against its working directory).
func Render(v config.Vault, certFile, keyFile string) ([]byte, error) {
	if _, _, err := net.SplitHostPort(v.Listen); err != nil {
		return nil, fmt.Errorf("cannot render the Vault config: listen address %q: %w", v.Listen, err)
	}
	for _, f := range []struct{ what, path string }{
		{"storage path", v.StoragePath},
		{"certificate file", certFile},
		{"key file", keyFile},
	} {
		if !filepath.IsAbs(f.path) {
			return nil, fmt.Errorf("cannot render the Vault config: %s %q is not an absolute path", f.what, f.path)
		}
	}
	s := server{
		Storage: map[string]fileStorage{storageType: {Path: v.StoragePath}},
		Listener: map[string]tcpListener{listenerType: {
			Address:       v.Listen,
			TLSCertFile:   certFile,
			TLSKeyFile:    keyFile,
			TLSMinVersion: tlsMinVersion,
		}},
		APIAddr:           (&config.Config{Vault: v}).VaultAddr(),
		DisableClustering: true,
		DisableMlock:      true,
		UI:                false,
		LogLevel:          logLevel,
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot render the Vault config: %w", err)
	}
	return append(data, '\n'), nil
}

// Write writes data to p.VaultConfig atomically, creating its directory.
func Write(p paths.Paths, data []byte) error {
	dir := filepath.Dir(p.VaultConfig)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("cannot create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, dirMode); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", dir, err)
	}
	return fsutil.WriteFileAtomic(p.VaultConfig, data, configMode, fsutil.Self)
}
