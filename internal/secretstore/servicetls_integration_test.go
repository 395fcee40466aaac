//go:build integration

package secretstore_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
	"github.com/edgeseal/edgeseal/tokenclient"
)

// The service CA as the boot sets it up, against a real server: a service's
// own token renews its own certificate and no other, and a config that takes
// its tls away takes the renewal away at once.
func TestAServiceRenewsItsOwnCertificateUntilTheConfigTakesTLSAway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newDevice(t, func(c *config.Config) {
		c.ServiceTLS.TrustDomain = "plant7.example"
		c.ServiceTLS.TTL = config.Duration(5 * time.Minute)
		c.Services[0].TLS = true
	})
	b := d.run(ctx)
	c := d.vault.Client(t)
	issuer, _ := c.Clone()
	issuer.SetToken(d.issuingToken())

	t.Log("Given app-one's certificate, issued with the token-issuing token as the provider does")
	path := vaultlayout.IssuePath(d.cfg, "app-one")
	first, err := tokenclient.IssueCertificate(ctx, issuer, path, "app-one", "spiffe://plant7.example/app-one")
	if err != nil {
		t.Fatal(err)
	}
	s, err := issuer.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{vaultlayout.ServicePolicyPrefix + "app-one"}}, vaultlayout.ServiceRole)
	if err != nil {
		t.Fatal(err)
	}
	tok := &tokenclient.Token{Service: "app-one", VaultAddr: d.vault.Addr, CACert: d.vault.CAFile, Secret: s, Certificate: first}

	t.Log("When app-one renews it with its own token")
	renewed, err := tok.RenewCertificate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := first.Leaf()
	r, _ := renewed.Leaf()
	t.Log("Then it gets a new certificate of the same identity, for service_tls.ttl")
	if a.SerialNumber.Cmp(r.SerialNumber) == 0 || r.URIs[0].String() != "spiffe://plant7.example/app-one" {
		t.Errorf("renewed: serial %x (first %x), URIs %v", r.SerialNumber, a.SerialNumber, r.URIs)
	}
	if life := r.NotAfter.Sub(r.NotBefore); life < 5*time.Minute || life > 6*time.Minute {
		t.Errorf("renewed certificate lives %v, want 5m", life)
	}

	t.Log("And app-two's token, which has no tls, cannot issue at app-one's role")
	s2, err := issuer.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{vaultlayout.ServicePolicyPrefix + "app-two"}}, vaultlayout.ServiceRole)
	if err != nil {
		t.Fatal(err)
	}
	two, _ := c.Clone()
	two.SetToken(s2.Auth.ClientToken)
	if _, err := tokenclient.IssueCertificate(ctx, two, path, "app-two", "spiffe://plant7.example/app-one"); !forbidden(err) {
		t.Errorf("app-two issued at app-one's role: %v", err)
	}

	t.Log("When app-one holds a certificate of 3s, due for renewal in 2s, and the config takes its tls away and is applied")
	short, err := issuer.Logical().WriteWithContext(ctx, path, map[string]any{"common_name": "app-one", "uri_sans": "spiffe://plant7.example/app-one", "ttl": "3s"})
	if err != nil {
		t.Fatal(err)
	}
	tok.Certificate = &tokenclient.Certificate{Certificate: short.Data["certificate"].(string), PrivateKey: short.Data["private_key"].(string),
		CA: short.Data["issuing_ca"].(string), IssuePath: path}
	cfg := *d.cfg
	cfg.Services = append([]config.Service{}, d.cfg.Services...)
	cfg.Services[0].TLS = false
	writeConfig(t, d, &cfg)
	if err := b.ApplyConfig(ctx); err != nil {
		t.Fatal(err)
	}
	t.Log("Then its renewal loop ends with the server's refusal when the renewal is due")
	done := make(chan error, 1)
	go func() { done <- tok.KeepCertificateRenewed(ctx, func(*tokenclient.Certificate) error { return nil }) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("KeepCertificateRenewed ended without an error")
		}
		t.Logf("it said: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("KeepCertificateRenewed still runs 30s after the role was deleted")
	}
}

func forbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}
