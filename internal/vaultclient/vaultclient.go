// Package vaultclient is the one way edgeseal makes a client of a
// Vault-compatible server (OpenBao or HashiCorp Vault): through
// github.com/hashicorp/vault/api, over TLS verified against the roots given,
// deaf to the VAULT_* environment, with no retries of its own (callers decide
// what is retried, and where).
package vaultclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/api"
)

// requestTimeout bounds one request to Vault: it is local, so a slow answer means
// something is wrong and the caller should retry or report.
const requestTimeout = 30 * time.Second

// New returns a Vault client for addr that trusts only pool. It ignores the
// VAULT_* environment (a VAULT_TOKEN, VAULT_SKIP_VERIFY or proxy inherited by a
// service must not change whom edgeseal talks to or with which identity).
func New(addr string, pool *x509.CertPool) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("cannot configure Vault client: %w", cfg.Error)
	}
	cfg.Address = addr
	cfg.MaxRetries = 0
	cfg.Timeout = requestTimeout
	cfg.Limiter = nil
	cfg.SRVLookup = false
	cfg.HttpClient = &http.Client{
		Timeout: requestTimeout,
		// HTTP/2, as Vault's own default client speaks it: concurrent
		// requests (the token provider's, up to tokend.max_in_flight) share
		// one TLS connection instead of each opening its own, which cost a
		// handshake on both sides whenever more than two were in flight.
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 10 * time.Second,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        4,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		},
		// Vault answers standby redirects; edgeseal's Vault is a single node.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot create Vault client for %s: %w", addr, err)
	}
	c.ClearToken()
	c.ClearNamespace()
	c.SetHeaders(http.Header{})
	return c, nil
}
