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
	// (Only root may ask a shorter lifetime than the role's: the policies
	// allow no ttl.)
	short, err := d.rootClient(ctx).Logical().WriteWithContext(ctx, path, map[string]any{"common_name": "app-one", "uri_sans": "spiffe://plant7.example/app-one", "ttl": "3s"})
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

// The review's attacks on the service CA (each seen issued before the fix):
// a service's own token, and the provider's, asking its role for what the
// role alone does not forbid: a lifetime past service_tls.ttl through
// not_after (a certificate that outlives its service's tls by years), and
// another service's name as the common name with exclude_cn_from_sans (an
// identity for peers that read the subject, not the URI SAN).
func TestACertificateRequestBeyondTheServicesOwnIsRefused(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, func(c *config.Config) {
		c.ServiceTLS.TrustDomain = "plant7.example"
		c.Services[0].TLS = true
		c.Services[1].TLS = true
	})
	d.run(ctx)
	c := d.vault.Client(t)
	provider, _ := c.Clone()
	provider.SetToken(d.issuingToken())
	s, err := provider.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{vaultlayout.ServicePolicyPrefix + "app-one"}}, vaultlayout.ServiceRole)
	if err != nil {
		t.Fatal(err)
	}
	service, _ := c.Clone()
	service.SetToken(s.Auth.ClientToken)
	path := vaultlayout.IssuePath(d.cfg, "app-one")
	own := map[string]any{"common_name": "app-one", "uri_sans": "spiffe://plant7.example/app-one"}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for a, b := range own {
			m[a] = b
		}
		m[k] = v
		return m
	}
	years := time.Now().Add(5 * 365 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name string
		data map[string]any
	}{
		{"a lifetime of years through not_after", with("not_after", years)},
		{"another service's name as the common name only", map[string]any{"common_name": "app-two", "exclude_cn_from_sans": true}},
		{"a wildcard as the common name only", map[string]any{"common_name": "*", "exclude_cn_from_sans": true}},
		{"a SPIFFE ID as the common name only", map[string]any{"common_name": "spiffe://plant7.example/app-two", "exclude_cn_from_sans": true}},
		{"its own name left out of the SANs", with("exclude_cn_from_sans", true)},
	} {
		for who, cl := range map[string]*api.Client{"the service's token": service, "the provider's token": provider} {
			sec, err := cl.Logical().WriteWithContext(ctx, path, tc.data)
			if err == nil {
				cert, _ := (&tokenclient.Certificate{Certificate: sec.Data["certificate"].(string)}).Leaf()
				t.Errorf("%s: %s was issued a certificate: CN %q, DNS %v, URIs %v, valid until %v", tc.name, who,
					cert.Subject.CommonName, cert.DNSNames, cert.URIs, cert.NotAfter)
			}
		}
	}
	t.Log("And what the provider and the client ask for is still issued")
	if _, err := tokenclient.IssueCertificate(ctx, service, path, "app-one", "spiffe://plant7.example/app-one"); err != nil {
		t.Errorf("the service's own request: %v", err)
	}
	if _, err := tokenclient.IssueCertificate(ctx, provider, path, "app-one", "spiffe://plant7.example/app-one"); err != nil {
		t.Errorf("the provider's request: %v", err)
	}
}

func forbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}
