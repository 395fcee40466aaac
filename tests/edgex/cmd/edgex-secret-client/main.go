// Command edgex-secret-client is an EdgeX service's secret client, made of
// EdgeX's own code, for edgeseal's integration tests (TestAnEdgeXService...):
// it shows that a token edgeseal delivers is one an EdgeX service can use.
//
// It loads its token from a file with EdgeX's token loader (go-mod-secrets'
// authtokenloader, which EdgeX services use for their SecretStore.TokenFile):
// $CREDENTIALS_DIRECTORY/vault-token as LoadCredential= delivers it, or the file
// `edgeseal token fetch --out FILE` writes; both are Vault's auth response,
// {"auth":{"client_token":...}}. It connects with go-mod-secrets' client
// (secrets.NewSecretsClient, store type "openbao"), TLS verified against the
// CA certificate given, reads one secret and prints one line per key it got,
// "ok key=NAME sha256=HEX": never a value.
//
// Exit status: 0 the secret was read; 1 it was not (the client's error on
// stderr, e.g. "Received a '403' response from the secret store" when the
// server refuses the token); 2 bad usage.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/edgexfoundry/go-mod-core-contracts/v4/clients/logger"
	"github.com/edgexfoundry/go-mod-secrets/v4/pkg/token/authtokenloader"
	"github.com/edgexfoundry/go-mod-secrets/v4/pkg/token/fileioperformer"
	"github.com/edgexfoundry/go-mod-secrets/v4/pkg/types"
	"github.com/edgexfoundry/go-mod-secrets/v4/secrets"
)

// options are the settings an EdgeX service has in its SecretStore section.
type options struct {
	service   string // the service key, for log lines
	tokenFile string // SecretStore.TokenFile
	addr      string // SecretStore.Protocol, Host and Port as a URL
	caCert    string // SecretStore.RootCaCertPath
	path      string // <mount>/<prefix>/<service>/<name>: BasePath /v1/<all but name>, then GetSecret(name)
}

func main() {
	var o options
	flag.StringVar(&o.service, "service", "edgex-secret-client", "the service key EdgeX logs under")
	flag.StringVar(&o.tokenFile, "token-file", "", "the token file: $CREDENTIALS_DIRECTORY/vault-token, or the file of `edgeseal token fetch --out`")
	flag.StringVar(&o.addr, "addr", "", "the secret store, https://HOST:PORT")
	flag.StringVar(&o.caCert, "ca-cert", "", "the CA certificate that verifies the secret store (/run/edgeseal/pki/ca.crt)")
	flag.StringVar(&o.path, "path", "", "the secret's KV v1 path, e.g. secret/edgex/core-data/db")
	flag.Parse()
	if o.tokenFile == "" || o.addr == "" || o.caCert == "" || o.path == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: edgex-secret-client --token-file FILE --addr https://HOST:PORT --ca-cert FILE --path MOUNT/PREFIX/SERVICE/NAME")
		os.Exit(2)
	}
	if err := readSecret(context.Background(), os.Stdout, o); err != nil {
		fmt.Fprintf(os.Stderr, "edgex-secret-client: %v\n", err)
		os.Exit(1)
	}
}

// readSecret does what an EdgeX service does at start: load the token, make
// the secret client, then read a secret; it prints the keys it got.
func readSecret(ctx context.Context, stdout io.Writer, o options) error {
	u, err := url.Parse(o.addr)
	if err != nil || u.Scheme == "" || u.Hostname() == "" {
		return fmt.Errorf("cannot use the address %q: want https://HOST:PORT", o.addr)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return fmt.Errorf("cannot use the address %q: want https://HOST:PORT", o.addr)
	}
	dir, name := path.Split(strings.Trim(o.path, "/"))
	if dir == "" || name == "" {
		return fmt.Errorf("cannot use the secret path %q: want MOUNT/PREFIX/SERVICE/NAME", o.path)
	}

	token, err := authtokenloader.NewAuthTokenLoader(fileioperformer.NewDefaultFileIoPerformer()).Load(o.tokenFile)
	if err != nil {
		return fmt.Errorf("cannot load the token from %s: %w", o.tokenFile, err)
	}
	cfg := types.SecretConfig{
		Type:           secrets.DefaultSecretStore, // "openbao"
		Protocol:       u.Scheme,
		Host:           u.Hostname(),
		Port:           port,
		BasePath:       "/v1/" + strings.TrimSuffix(dir, "/"),
		RootCaCertPath: o.caCert,
		Authentication: types.AuthenticationInfo{AuthType: "X-Vault-Token", AuthToken: token},
	}
	lc := logger.NewClient(o.service, "INFO")
	// NewSecretsClient looks the token up (lookup-self) and starts renewing it.
	client, err := secrets.NewSecretsClient(ctx, cfg, lc, nil)
	if err != nil {
		return fmt.Errorf("cannot make the secret client: %w", err)
	}
	data, err := client.GetSecret(name)
	if err != nil {
		return fmt.Errorf("cannot read secret %q at %s: %w", name, cfg.BasePath, err)
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		sum := sha256.Sum256([]byte(data[k]))
		fmt.Fprintf(stdout, "ok key=%s sha256=%s\n", k, hex.EncodeToString(sum[:]))
	}
	return nil
}
