//go:build integration

package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// BenchmarkCertificateIssue: what a certificate adds to a delivery. Per run,
// tokenbench sends 100 requests on the socket, one at a time, as the service
// "collector" (tls: true): first for the token alone, then asking for the
// certificate too (the server's PKI engine makes an EC P-256 key and signs
// it, before the token-create); the ratio is per run (with / without).
func BenchmarkCertificateIssue(b *testing.B) {
	onEachServerBench(b, certificateIssue)
}

func certificateIssue(b *testing.B, srv testbed.Server) {
	d := newDevice(b, false, func(c *config.Config) {
		c.Tokend.IdleExit = 0
		c.ServiceTLS.TrustDomain = "bench.example"
		c.Services = []config.Service{{Name: "collector", Units: []string{benchUnit("collector")}, TLS: true}}
	}, withServer(srv))
	d.start()
	d.run("systemctl", "start", "edgeseal-tokend.service")
	plain, withCert, ratio := newSeries("token-median", "ms"), newSeries("token+cert-median", "ms"), newSeries("with/without", "x")
	for range b.N {
		tok := d.tokenbench(b, "collector", "socket", 100, 1)
		d.waitRevocationsDrained(b, time.Now(), 2*time.Minute)
		cert := d.tokenbench(b, "collector", "socket-cert", 100, 1)
		d.waitRevocationsDrained(b, time.Now(), 2*time.Minute)
		plain.Add(tok.MedianMS)
		withCert.Add(cert.MedianMS)
		ratio.Add(cert.MedianMS / tok.MedianMS)
	}
	for _, s := range []*series{plain, withCert, ratio} {
		s.Report(b)
	}
	table(b, fmt.Sprintf("A certificate with the token, %s (median of each run's 100 requests; over %d runs)", srv, b.N),
		[]string{"token alone", "token and certificate", "ratio"},
		[][]string{{plain.String(), withCert.String(), ratio.String()}})
}
