//go:build integration

package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// The services of the mutual TLS story, as a device builder writes them:
// orders fetches its certificate with the client, billing takes it as a
// credential, intruder is a service of the device with a certificate of its
// own whom neither accepts.
const (
	ordersPort   = 9441
	billingPort  = 9442
	trustDomain  = "plant7.example"
	ordersUnitTL = `[Unit]
Description=orders: a TLS service; its certificate through the socket
Requires=edgeseal.target
After=edgeseal.target

[Service]
DynamicUser=yes
RuntimeDirectory=orders
ExecStartPre=/usr/bin/edgeseal token fetch --cert --out /run/orders/token.json --quiet
ExecStart=/usr/lib/edgeseal-tests/mtlspeer serve -pair /run/orders/tls.pem -ca /run/orders/tls-ca.pem -listen 127.0.0.1:%d -allow spiffe://%s/billing
`
	billingUnitTL = `[Unit]
Description=billing: a TLS service; its certificate as a credential
Requires=edgeseal.target
After=edgeseal.target

[Service]
DynamicUser=yes
LoadCredential=tls.pem:/run/edgeseal/tokend.sock
ExecStart=/usr/lib/edgeseal-tests/mtlspeer serve -pair %%d/tls.pem -ca %%d/tls.pem -listen 127.0.0.1:%d -allow spiffe://%s/orders
`
	intruderUnitTL = `[Unit]
Description=intruder: a service of the device that is neither orders nor billing
Requires=edgeseal.target
After=edgeseal.target

[Service]
DynamicUser=yes
RuntimeDirectory=intruder
ExecStart=/usr/bin/edgeseal token fetch --cert --out /run/intruder/token.json --renew --quiet
`
)

func serviceTLSConfig(c *config.Config) {
	c.ServiceTLS.TrustDomain = trustDomain
	c.ServiceTLS.TTL = config.Duration(10 * time.Minute)
	c.Services = []config.Service{
		{Name: "orders", Units: []string{"orders.service"}, TLS: true},
		{Name: "billing", Units: []string{"billing.service"}, TLS: true},
		{Name: "intruder", Units: []string{"intruder.service"}, TLS: true},
		{Name: "plain", UIDs: []uint32{1005}},
	}
}

func TestTwoServicesTalkMutualTLSAndAThirdIsRefusedByBoth(t *testing.T) {
	onEachServer(t, twoServicesTalkMutualTLS)
}

func twoServicesTalkMutualTLS(t *testing.T, srv testbed.Server) {
	ctx := context.Background()
	t.Logf("Given a device running %s whose config gives orders, billing and intruder tls: true, and plain none", srv)
	d := newDevice(t, false, serviceTLSConfig, withServer(srv))
	writeFile(t, filepath.Join(d.units, "orders.service"), []byte(fmt.Sprintf(ordersUnitTL, ordersPort, trustDomain)), 0o644)
	writeFile(t, filepath.Join(d.units, "billing.service"), []byte(fmt.Sprintf(billingUnitTL, billingPort, trustDomain)), 0o644)
	writeFile(t, filepath.Join(d.units, "intruder.service"), []byte(intruderUnitTL), 0o644)
	d.run("systemctl", "daemon-reload")
	d.start()

	t.Log("When orders.service fetches its token and certificate with `edgeseal token fetch --cert`, and billing.service takes its certificate with LoadCredential=tls.pem")
	d.run("systemctl", "start", "orders.service", "billing.service", "intruder.service")
	d.waitTokenFile("/run/intruder/token.json")
	orders := d.certIn("/run/orders/tls.pem")
	billing := d.certIn("/run/credentials/billing.service/tls.pem")
	t.Log("Then each certificate names its service by SPIFFE ID and DNS name, lives service_tls.ttl, and comes from a service CA that is not the per-boot CA")
	for name, c := range map[string]*x509.Certificate{"orders": orders, "billing": billing} {
		if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://"+trustDomain+"/"+name {
			t.Errorf("%s's certificate URI SANs %v", name, c.URIs)
		}
		if len(c.DNSNames) != 1 || c.DNSNames[0] != name || c.Subject.CommonName != name {
			t.Errorf("%s's certificate names %q %q", name, c.Subject.CommonName, c.DNSNames)
		}
		if life := c.NotAfter.Sub(c.NotBefore); life < 10*time.Minute || life > 11*time.Minute {
			t.Errorf("%s's certificate lives %v, want service_tls.ttl 10m (and the server's backdating)", name, life)
		}
		if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
			t.Errorf("%s's key is %T, want ECDSA", name, c.PublicKey)
		}
	}
	serviceCA := d.certIn("/run/orders/tls-ca.pem")
	if bootCA := d.certIn("/run/edgeseal/pki/ca.crt"); bootCA.Equal(serviceCA) {
		t.Errorf("the service CA is the per-boot CA")
	}
	if err := orders.CheckSignatureFrom(serviceCA); err != nil {
		t.Errorf("orders' certificate is not signed by the service CA in tls-ca.pem: %v", err)
	}
	if mode := strings.TrimSpace(d.run("stat", "-c", "%a", "/run/orders/tls.pem")); mode != "600" {
		t.Errorf("tls.pem mode %s, want 600", mode)
	}

	t.Log("And orders and billing talk mutual TLS, each checking the other's SPIFFE ID")
	ordersAddr, billingAddr := fmt.Sprintf("127.0.0.1:%d", ordersPort), fmt.Sprintf("127.0.0.1:%d", billingPort)
	d.waitListening(ordersAddr)
	d.waitListening(billingAddr)
	out := d.run("/usr/lib/edgeseal-tests/mtlspeer", "dial", "-pair", "/run/orders/tls.pem", "-ca", "/run/orders/tls-ca.pem",
		"-addr", billingAddr, "-expect", "spiffe://"+trustDomain+"/billing")
	if !strings.Contains(out, "hello spiffe://"+trustDomain+"/orders from spiffe://"+trustDomain+"/billing") {
		t.Errorf("orders -> billing: %s", out)
	}
	out = d.run("/usr/lib/edgeseal-tests/mtlspeer", "dial", "-pair", "/run/credentials/billing.service/tls.pem",
		"-ca", "/run/credentials/billing.service/tls.pem", "-addr", ordersAddr, "-expect", "spiffe://"+trustDomain+"/orders")
	if !strings.Contains(out, "hello spiffe://"+trustDomain+"/billing from spiffe://"+trustDomain+"/orders") {
		t.Errorf("billing -> orders: %s", out)
	}

	t.Log("When intruder, with a valid certificate of its own from the same CA, connects to each")
	for _, to := range []struct{ addr, name string }{{ordersAddr, "orders"}, {billingAddr, "billing"}} {
		stdout, _, err := d.m.Run(ctx, "/usr/lib/edgeseal-tests/mtlspeer", "dial", "-pair", "/run/intruder/tls.pem", "-ca", "/run/intruder/tls-ca.pem",
			"-addr", to.addr, "-expect", "spiffe://"+trustDomain+"/"+to.name)
		t.Logf("Then %s refuses it: %s", to.name, strings.TrimSpace(stdout))
		if err == nil || strings.Contains(stdout, "hello") {
			t.Errorf("intruder -> %s was accepted: %s", to.name, stdout)
		}
	}
	if j := d.m.Journal(t, "orders.service"); !strings.Contains(j, "refused:") || !strings.Contains(j, "spiffe://"+trustDomain+"/intruder") {
		t.Errorf("orders' journal does not say it refused intruder:\n%s", j)
	}

	t.Log("When intruder signs itself a certificate claiming to be orders")
	d.run("/usr/lib/edgeseal-tests/mtlspeer", "selfsign", "-id", "spiffe://"+trustDomain+"/orders", "-out", "/run/forged.pem")
	stdout, _, err := d.m.Run(ctx, "/usr/lib/edgeseal-tests/mtlspeer", "dial", "-pair", "/run/forged.pem", "-ca", "/run/orders/tls-ca.pem",
		"-addr", billingAddr, "-expect", "spiffe://"+trustDomain+"/billing")
	t.Logf("Then billing refuses it: %s", strings.TrimSpace(stdout))
	if err == nil || strings.Contains(stdout, "hello") {
		t.Errorf("a self-signed orders certificate was accepted by billing: %s", stdout)
	}

	t.Log("When intruder asks the service CA, with its own token, for orders' certificate")
	intruderToken := d.tokenIn("/run/intruder/token.json")
	_, stderr, err := d.m.Run(ctx, append(d.vaultEnv(intruderToken), "write", "service-pki/issue/orders", "common_name=orders")...)
	if err == nil || !strings.Contains(stderr, "permission denied") {
		t.Errorf("intruder's token issued at orders' role: %v %s", err, stderr)
	}
	_, stderr, err = d.m.Run(ctx, append(d.vaultEnv(intruderToken), "write", "service-pki/issue/intruder",
		"common_name=intruder", "uri_sans=spiffe://"+trustDomain+"/orders")...)
	t.Logf("Then the server refuses both: %s", firstLine(stderr))
	if err == nil {
		t.Errorf("intruder's role issued a certificate naming orders")
	}
	t.Log("And its own role renews its own certificate with its token (what --renew does)")
	d.vaultOK(intruderToken, "write", "service-pki/issue/intruder", "common_name=intruder", "uri_sans=spiffe://"+trustDomain+"/intruder")

	t.Log("When plain, which has no tls, asks for a certificate")
	stdout, stderr, err = d.m.RunAs(ctx, 1005, 1005, "edgeseal", "token", "fetch", "--cert", "--out", "/tmp/plain/token.json")
	t.Logf("Then it is refused and told why: %s", firstLine(stderr))
	if err == nil || !strings.Contains(stderr, "has no tls: true") {
		t.Errorf("plain got a certificate: %v\n%s%s", err, stdout, stderr)
	}
	if _, _, err := d.m.Run(ctx, "test", "-e", "/tmp/plain/token.json"); err == nil {
		t.Errorf("plain's refused fetch wrote a token")
	}

	t.Log("And no private key appears in the journal")
	if j := d.journal(); strings.Contains(j, "PRIVATE KEY") {
		t.Errorf("a private key is in the journal")
	}

	t.Log("When the device reboots, the service CA is the same and orders gets a new certificate from it")
	d.m.Reboot(t)
	d.start()
	d.run("systemctl", "start", "orders.service")
	if again := d.certIn("/run/orders/tls-ca.pem"); !again.Equal(serviceCA) {
		t.Errorf("the service CA changed across a reboot")
	}
	if renewed := d.certIn("/run/orders/tls.pem"); renewed.SerialNumber.Cmp(orders.SerialNumber) == 0 {
		t.Errorf("orders got the same certificate after a reboot")
	}
}

// certIn reads the first certificate of a PEM file inside the device,
// waiting up to 20s for the file.
func (d *device) certIn(path string) *x509.Certificate {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, _, err := d.m.Run(context.Background(), "cat", path)
		if err == nil {
			b, _ := pem.Decode([]byte(data))
			if b == nil {
				d.t.Fatalf("%s holds no PEM", path)
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				d.t.Fatalf("%s: %v", path, err)
			}
			return c
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no %s after 20s\n%s", path, d.journal())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitListening waits up to 20s for a TCP listener inside the device.
func (d *device) waitListening(addr string) {
	d.t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, _, _ := d.m.Run(context.Background(), "ss", "-Hltn", "sport = :"+port)
		if strings.TrimSpace(out) != "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.t.Fatalf("nothing listens on %s after 20s\n%s", addr, d.journal())
}

// firstLine is s's first line, for a log.
func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
