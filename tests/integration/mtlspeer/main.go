// Command mtlspeer is a service of the test bed that speaks mutual TLS with
// its certificate from edgeseal's service CA and accepts one peer identity
// (SPIFFE ID) only, as a device builder's service would.
//
//	mtlspeer serve -pair FILE -ca FILE -listen ADDR -allow spiffe://TD/SERVICE
//	mtlspeer dial  -pair FILE -ca FILE -addr ADDR -expect spiffe://TD/SERVICE
//	mtlspeer selfsign -id spiffe://TD/SERVICE -out FILE
//
// -pair is a PEM file with the certificate then its key (tls.pem, or a
// LoadCredential= file); -ca is the service CA: the last certificate of its
// file (tls-ca.pem, or the same LoadCredential= file). serve prints one line
// per connection: "accepted ID" or "refused: why". dial prints the server's
// greeting and exits 0, or the error and exits 1. selfsign writes a
// self-signed certificate and key naming an identity, as an intruder would.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mtlspeer serve|dial|selfsign ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	pair := fs.String("pair", "", "certificate then key, PEM")
	caFile := fs.String("ca", "", "the service CA: the last certificate of this file")
	listen := fs.String("listen", "", "serve: address")
	allow := fs.String("allow", "", "serve: the one peer identity accepted")
	addr := fs.String("addr", "", "dial: address")
	expect := fs.String("expect", "", "dial: the server's identity")
	id := fs.String("id", "", "selfsign: the identity to claim")
	out := fs.String("out", "", "selfsign: where to write")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(*pair, *caFile, *listen, *allow)
	case "dial":
		err = dial(*pair, *caFile, *addr, *expect)
	case "selfsign":
		err = selfsign(*id, *out)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func load(pair, caFile string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(pair, pair)
	if err != nil {
		return cert, nil, err
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return cert, nil, err
	}
	var last []byte
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			last = b.Bytes
		}
	}
	ca, err := x509.ParseCertificate(last)
	if err != nil {
		return cert, nil, fmt.Errorf("no CA certificate in %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return cert, pool, nil
}

// identity checks the peer's certificate names want as its only URI SAN.
func identity(cs tls.ConnectionState, want string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no peer certificate")
	}
	uris := cs.PeerCertificates[0].URIs
	if len(uris) != 1 || uris[0].String() != want {
		return fmt.Errorf("peer %v is not %s", uris, want)
	}
	return nil
}

func serve(pair, caFile, listen, allow string) error {
	cert, pool, err := load(pair, caFile)
	if err != nil {
		return err
	}
	own, _ := x509.ParseCertificate(cert.Certificate[0])
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		MinVersion:       tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error { return identity(cs, allow) },
	}
	ln, err := tls.Listen("tcp", listen, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("serving as %v on %s, accepting %s\n", own.URIs, listen, allow)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func(c *tls.Conn) {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := c.Handshake(); err != nil {
				fmt.Println("refused:", err)
				return
			}
			peer := c.ConnectionState().PeerCertificates[0].URIs[0].String()
			fmt.Println("accepted", peer)
			fmt.Fprintf(c, "hello %s from %s\n", peer, own.URIs[0])
		}(c.(*tls.Conn))
	}
}

func dial(pair, caFile, addr, expect string) error {
	cert, pool, err := load(pair, caFile)
	if err != nil {
		return err
	}
	u, err := url.Parse(expect)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		// Always sent, even one the server's CA did not sign (a forged one).
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		RootCAs:              pool, MinVersion: tls.VersionTLS13,
		ServerName:       strings.TrimPrefix(u.Path, "/"),
		VerifyConnection: func(cs tls.ConnectionState) error { return identity(cs, expect) },
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// TLS 1.3: a client certificate the server refuses shows on the first read.
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("the server refused: %w", err)
	}
	fmt.Print(line)
	return nil
}

func selfsign(id, out string) error {
	u, err := url.Parse(id)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(u.Path, "/")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		IsCA:        true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})...)
	return os.WriteFile(out, data, 0o600)
}
