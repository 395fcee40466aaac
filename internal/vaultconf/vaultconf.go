// Package vaultconf renders the Vault server's config from edgeseal's, so the
// listen address and storage path have one source of truth (edgeseal.yaml) and
// Vault's TLS files are always this boot's PKI.
//
// Vault reads JSON config files as it reads HCL (by the .json extension); in
// JSON, a block such as `listener "tcp" { ... }` is an object keyed by its type:
// "listener": {"tcp": {...}}. Vault is started with -config DIR and merges the
// *.json files there, appending their listeners:
//
//   - vault.json: file storage, no cluster listener, no UI, and the admin
//     listener, a Unix socket in a directory only Vault's user may enter, on
//     which edgeseal-unseal (root) initialises, unseals and sets Vault up;
//   - listener-tcp.json: the TCP listener on vault.listen the services use,
//     always with TLS (1.2 at least).
//
// The config is written for the server that will read it (package vaultbin):
// with OpenBao both listeners refuse the unauthenticated rekey endpoints
// (disable_unauthed_rekey_endpoints), which edgeseal never uses and any local
// user could otherwise start and cancel rekeys on; HashiCorp Vault has no such
// option (it warns of an unknown field at every start), so its config goes
// without. OpenBao has no mlock at all, so its config has no disable_mlock.
//
// Every local user reaches the TCP listener, and Vault answers some requests
// there without a token: whoever calls sys/init first holds the root token. So
// until edgeseal has initialised Vault (its sealed unseal key exists) the TCP
// listener is written as listener-tcp.json.held, which Vault does not read;
// edgeseal-unseal makes it listener-tcp.json (EnableTCP) and restarts Vault
// once the unseal key is sealed.
package vaultconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
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
	// maxSocketPath is the size of sun_path: Vault cannot bind a longer path.
	maxSocketPath = 108
	// configMode and dirMode: Vault runs as its own user and must read the
	// config; it holds no secret. The writer's UMask=0077 is overridden.
	configMode = 0o644
	dirMode    = 0o755
)

// server is the part of Vault's server config edgeseal sets (command/server in
// Vault's source; the listener in internalshared/configutil).
type server struct {
	Storage  map[string]fileStorage  `json:"storage"`
	Listener map[string]unixListener `json:"listener"`
	// APIAddr is the address clients are told to use (redirects, Location).
	APIAddr string `json:"api_addr"`
	// DisableClustering: file storage has no HA, so no node forwards to another;
	// without it Vault would still open a cluster listener on the API port + 1
	// once unsealed.
	DisableClustering bool `json:"disable_clustering"`
	// DisableMlock: mlock needs CAP_IPC_LOCK, which edgeseal-vault.service does
	// not grant; the unit keeps Vault out of swap with MemorySwapMax=0 instead.
	// OpenBao has no mlock (it warns of the key as unknown): Vault's only.
	DisableMlock bool   `json:"disable_mlock,omitempty"`
	UI           bool   `json:"ui"`
	LogLevel     string `json:"log_level"`
}

type fileStorage struct {
	Path string `json:"path"`
}

// unixListener is the admin listener. No TLS: the socket's directory is
// Vault's (0700), so only Vault's user and root can connect; the socket takes
// Vault's UMask (0077) too.
type unixListener struct {
	Address    string `json:"address"`
	TLSDisable bool   `json:"tls_disable"`
	// DisableUnauthedRekey is OpenBao's only (internalshared/configutil).
	DisableUnauthedRekey bool `json:"disable_unauthed_rekey_endpoints,omitempty"`
}

type tcpListeners struct {
	Listener map[string]tcpListener `json:"listener"`
}

type tcpListener struct {
	Address       string `json:"address"`
	TLSCertFile   string `json:"tls_cert_file"`
	TLSKeyFile    string `json:"tls_key_file"`
	TLSMinVersion string `json:"tls_min_version"`
	// DisableUnauthedRekey is OpenBao's only (internalshared/configutil).
	DisableUnauthedRekey bool `json:"disable_unauthed_rekey_endpoints,omitempty"`
}

// Config is Vault's server config in its two files.
type Config struct {
	Server []byte // vault.json: storage, the admin listener, the rest
	TCP    []byte // listener-tcp.json: the TCP listener for the services
}

// Render returns the server config of kind's server for v, as JSON, with the
// admin socket at adminSocket, and the TCP listener's certificate chain at
// certFile and its key at keyFile (absolute paths: Vault would resolve
// relative ones against its working directory). An empty kind (the server is
// not known) gives a config both servers read, without OpenBao's options.
func Render(v config.Vault, kind vaultbin.Kind, certFile, keyFile, adminSocket string) (Config, error) {
	switch kind {
	case "", vaultbin.OpenBao, vaultbin.Vault:
	default:
		return Config{}, fmt.Errorf("cannot render the Vault config: unknown server %q", kind)
	}
	openbao := kind == vaultbin.OpenBao
	if _, _, err := net.SplitHostPort(v.Listen); err != nil {
		return Config{}, fmt.Errorf("cannot render the Vault config: listen address %q: %w", v.Listen, err)
	}
	for _, f := range []struct{ what, path string }{
		{"storage path", v.StoragePath},
		{"certificate file", certFile},
		{"key file", keyFile},
		{"admin socket", adminSocket},
	} {
		if !filepath.IsAbs(f.path) {
			return Config{}, fmt.Errorf("cannot render the Vault config: %s %q is not an absolute path", f.what, f.path)
		}
	}
	if len(adminSocket) >= maxSocketPath {
		return Config{}, fmt.Errorf("cannot render the Vault config: admin socket path is %d bytes, a Unix socket's path must be shorter than %d: %q", len(adminSocket), maxSocketPath, adminSocket)
	}
	s := server{
		Storage:           map[string]fileStorage{storageType: {Path: v.StoragePath}},
		Listener:          map[string]unixListener{"unix": {Address: adminSocket, TLSDisable: true, DisableUnauthedRekey: openbao}},
		APIAddr:           (&config.Config{Vault: v}).VaultAddr(),
		DisableClustering: true,
		DisableMlock:      !openbao,
		UI:                false,
		LogLevel:          logLevel,
	}
	t := tcpListeners{Listener: map[string]tcpListener{listenerType: {
		Address:       v.Listen,
		TLSCertFile:   certFile,
		TLSKeyFile:    keyFile,
		TLSMinVersion: tlsMinVersion,

		DisableUnauthedRekey: openbao,
	}}}
	var c Config
	var err error
	if c.Server, err = marshal(s); err != nil {
		return Config{}, err
	}
	if c.TCP, err = marshal(t); err != nil {
		return Config{}, err
	}
	return c, nil
}

func marshal(v any) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot render the Vault config: %w", err)
	}
	return append(data, '\n'), nil
}

// Write writes c to p.VaultConfDir atomically, creating the directory. With
// tcp false the TCP listener is held back (p.VaultTCPHeld) until EnableTCP;
// any TCP listener file of an earlier run is replaced either way.
func Write(p paths.Paths, c Config, tcp bool) error {
	dir := p.VaultConfDir
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("cannot create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, dirMode); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", dir, err)
	}
	if err := fsutil.WriteFileAtomic(p.VaultConfig, c.Server, configMode, fsutil.Self); err != nil {
		return err
	}
	path, other := p.VaultTCP, p.VaultTCPHeld
	if !tcp {
		path, other = other, path
	}
	if err := fsutil.WriteFileAtomic(path, c.TCP, configMode, fsutil.Self); err != nil {
		return err
	}
	return fsutil.RemoveDurable(other)
}

// EnableTCP lets Vault listen on TCP from its next start: it renames the held
// TCP listener file to the name Vault reads. It reports whether it changed
// anything (false: the TCP listener was on already).
func EnableTCP(p paths.Paths) (bool, error) {
	if _, err := os.Stat(p.VaultTCP); err == nil {
		return false, nil
	}
	if err := os.Rename(p.VaultTCPHeld, p.VaultTCP); err != nil {
		return false, fmt.Errorf("cannot turn on Vault's TCP listener: %w", err)
	}
	if err := fsutil.SyncDir(p.VaultConfDir); err != nil {
		return false, err
	}
	return true, nil
}

// ErrNotForServer: the config in p.VaultConfDir was not written for the
// server that runs. It wraps vaultbin.ErrUnsupported: edgeseal-unseal ends
// with the same final status (19), before it unseals anything.
var ErrNotForServer = fmt.Errorf("the server's config was not written for the server that runs: %w", vaultbin.ErrUnsupported)

// CheckRendered checks that the config edgeseal-pki wrote is one for kind's
// server where it matters to security: with OpenBao, every listener of it
// (the admin socket's, and the TCP one whether held or not) refuses the
// unauthenticated rekey endpoints.
//
// Why edgeseal-unseal checks it: edgeseal-pki chooses the form of the config
// from what the server binary says it is, an answer it keeps across boots in
// its state directory on /var (vaultbin.IdentifyCached), which a thief with
// the disk can rewrite to name the other server; edgeseal-unseal knows the
// kind from the running server's own report (vaultbin.Info.Running), so a
// config of the wrong form is caught before the server is unsealed, while
// its rekey endpoints cannot do anything.
func CheckRendered(p paths.Paths, kind vaultbin.Kind) error {
	if kind != vaultbin.OpenBao {
		return nil
	}
	type listeners struct {
		Listener map[string]struct {
			DisableUnauthedRekey bool `json:"disable_unauthed_rekey_endpoints"`
		} `json:"listener"`
	}
	for _, f := range []string{p.VaultConfig, p.VaultTCP, p.VaultTCPHeld} {
		data, err := fsutil.ReadBounded(f, 1<<20)
		if errors.Is(err, os.ErrNotExist) && f != p.VaultConfig {
			continue
		}
		if err != nil {
			return fmt.Errorf("cannot check the server's config: %w", err)
		}
		var l listeners
		if err := json.Unmarshal(data, &l); err != nil {
			return fmt.Errorf("cannot check the server's config %s: %w", f, err)
		}
		if len(l.Listener) == 0 {
			return fmt.Errorf("%w: %s names no listener", ErrNotForServer, f)
		}
		for typ, li := range l.Listener {
			if !li.DisableUnauthedRekey {
				return fmt.Errorf("%w: %s has a %s listener that does not refuse unauthenticated rekeys, as an OpenBao config must "+
					"(edgeseal-pki's kept answer of what the binary is may have been altered: remove /var/lib/edgeseal-pki/%s and start edgeseal.target again)",
					ErrNotForServer, f, typ, vaultbin.CacheName)
			}
		}
	}
	return nil
}
