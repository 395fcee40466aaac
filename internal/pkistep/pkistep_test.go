package pkistep

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
	"github.com/edgeseal/edgeseal/tests/keyscan"
)

// device is a root with a config file, as on a device.
func device(t *testing.T, cfg string) paths.Paths {
	t.Helper()
	// A short root: Vault's admin socket lies below it, and a socket's path
	// has at most 107 bytes (t.TempDir's names are long).
	root, err := os.MkdirTemp("", "es-pki-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	p := paths.New(root)
	if cfg != "" {
		os.MkdirAll(filepath.Dir(p.ConfigFile), 0o755)
		if err := os.WriteFile(p.ConfigFile, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func runStep(t *testing.T, o Options) (string, error) {
	t.Helper()
	var log bytes.Buffer
	err := Run(context.Background(), journal.New(&log).Logger, o)
	return log.String(), err
}

func caCert(t *testing.T, p paths.Paths) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTheStepWritesThisBootsPKIAndVaultConfig(t *testing.T) {
	p := device(t, "pki:\n  intermediate: true\n  extra_names: [vault.local, 10.1.2.3]\n")
	log, err := runStep(t, Options{Root: p.Root, VaultKeyPath: p.VaultKey})
	if err != nil {
		t.Fatal(err)
	}

	pool, err := pki.LoadCAPool(p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := os.ReadFile(p.VaultCert)
	var certs []*x509.Certificate
	for rest := chain; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, _ := x509.ParseCertificate(blk.Bytes)
		certs = append(certs, c)
	}
	if len(certs) != 2 {
		t.Fatalf("vault.crt holds %d certificates, want leaf and issuing CA", len(certs))
	}
	inter := x509.NewCertPool()
	inter.AddCert(certs[1])
	for _, name := range []string{"127.0.0.1", "::1", "localhost", "vault.local", "10.1.2.3"} {
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: name}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	var vc struct {
		Listener map[string]map[string]any `json:"listener"`
	}
	// A first boot (no sealed key yet): the TCP listener is held back.
	data, _ := os.ReadFile(p.VaultTCPHeld)
	if err := json.Unmarshal(data, &vc); err != nil {
		t.Fatalf("%s: %v", p.VaultTCPHeld, err)
	}
	if _, err := os.Stat(p.VaultTCP); !os.IsNotExist(err) {
		t.Errorf("%s exists on a first boot: %v", p.VaultTCP, err)
	}
	if tcp := vc.Listener["tcp"]; tcp["tls_cert_file"] != p.VaultCert || tcp["tls_key_file"] != p.VaultKey {
		t.Errorf("Vault's TLS files: %v", tcp)
	}

	ca := caCert(t, p)
	if found, err := keyscan.FindPrivateKeysMatching(p.Root, ca.PublicKey); err != nil || len(found) > 0 {
		t.Errorf("the CA key is on disk: %v %v", found, err)
	}

	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) != 2 {
		t.Errorf("%d log lines, want one per step:\n%s", len(lines), log)
	}
	for _, want := range []string{"level=INFO", pki.Fingerprint(ca), "vault_names=localhost,vault.local,127.0.0.1,::1,10.1.2.3", p.VaultConfDir, "admin socket only"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
	assertNoKeyIn(t, log, p.VaultKey)
}

// assertNoKeyIn fails if text holds the PEM body of the key file, or a part of it.
func assertNoKeyIn(t *testing.T, text, keyFile string) {
	t.Helper()
	if strings.Contains(text, "PRIVATE KEY") {
		t.Error("a private key is in the output")
	}
	data, _ := os.ReadFile(keyFile)
	for _, line := range strings.Split(string(data), "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") && strings.Contains(text, line[:16]) {
			t.Error("the Vault key is in the output")
		}
	}
}

func TestVaultReadsItsKeyFromTheSystemdCredentialByDefault(t *testing.T) {
	p := device(t, "{}\n")
	// No VaultKeyPath: what the command passes without --vault-key-path.
	if _, err := runStep(t, Options{Root: p.Root}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p.VaultTCPHeld)
	if !strings.Contains(string(data), `"tls_key_file": "`+vaultconf.CredentialKeyPath+`"`) {
		t.Errorf("the TCP listener does not name the credential:\n%s", data)
	}
}

// Once edgeseal has sealed Vault's unseal key, every boot's Vault listens on
// TCP from the start: the services' listener is on, none is held back.
func TestALaterBootsVaultListensOnTCPFromTheStart(t *testing.T) {
	p := device(t, "{}\n")
	if err := os.MkdirAll(p.StateDir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.SealedKey, []byte("sealed"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runStep(t, Options{Root: p.Root, VaultKeyPath: vaultconf.CredentialKeyPath}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.VaultTCP); err != nil {
		t.Errorf("no TCP listener after the key was sealed: %v", err)
	}
	if _, err := os.Stat(p.VaultTCPHeld); !os.IsNotExist(err) {
		t.Errorf("a held TCP listener beside the active one: %v", err)
	}
}

func TestEveryRunMakesANewCA(t *testing.T) {
	p := device(t, "{}\n")
	var cas []*x509.Certificate
	for range 2 {
		if _, err := runStep(t, Options{Root: p.Root, VaultKeyPath: vaultconf.CredentialKeyPath}); err != nil {
			t.Fatal(err)
		}
		cas = append(cas, caCert(t, p))
	}
	if cas[0].Equal(cas[1]) {
		t.Error("a second boot kept the first boot's CA")
	}
}

func TestABadConfigWritesNothing(t *testing.T) {
	p := device(t, "pki:\n  validity: 1m\n")
	_, err := runStep(t, Options{Root: p.Root, VaultKeyPath: vaultconf.CredentialKeyPath})
	if !errors.Is(err, ErrUsage) {
		t.Fatalf("err = %v, want a config error (ErrUsage: exit 2)", err)
	}
	// The operator reads the config's error, not the sentinel's.
	if !strings.Contains(err.Error(), "pki.validity") || strings.Contains(err.Error(), ErrUsage.Error()) {
		t.Errorf("err = %q, want the config's error alone", err)
	}
	if _, err := os.Stat(p.RunDir); !os.IsNotExist(err) {
		t.Errorf("%s was made despite a bad config", p.RunDir)
	}
}

func fakeServer(t *testing.T, versionLine string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bao")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho '"+versionLine+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestAnUnsupportedServerIsRefusedBeforeAnythingIsWritten(t *testing.T) {
	for _, line := range []string{"Vault v1.15.6, built then", "Consul v1.20.0", "OpenBao v2.5.0 (x)"} {
		p := device(t, "pki:\n  extra_names: [vault.local]\n")
		bin := fakeServer(t, line)
		_, err := runStep(t, Options{Root: p.Root, Server: bin, VaultKeyPath: vaultconf.CredentialKeyPath})
		if !errors.Is(err, ErrUsage) || !errors.Is(err, vaultbin.ErrUnsupported) || !strings.Contains(err.Error(), bin) || !strings.Contains(err.Error(), "OpenBao 2.4.x, Vault 1.21.x") {
			t.Errorf("%q: err = %v, want ErrUsage (exit 2) and vaultbin.ErrUnsupported naming %s and the releases supported", line, err, bin)
		}
		if _, err := os.Stat(p.RunDir); !os.IsNotExist(err) {
			t.Errorf("%q: %s was made for an unsupported server", line, p.RunDir)
		}
	}
}

func TestTheServersConfigIsWrittenForTheServerItIs(t *testing.T) {
	for _, tc := range []struct {
		line    string
		hardens bool
	}{
		{"OpenBao v2.4.1 (efb9efa), built 2025-11-01", true},
		{"Vault v1.21.0, built 2025-12-02", false},
	} {
		p := device(t, "pki:\n  extra_names: [vault.local]\n")
		log, err := runStep(t, Options{Root: p.Root, Server: fakeServer(t, tc.line), VaultKeyPath: vaultconf.CredentialKeyPath})
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(p.VaultConfig)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(data), "disable_unauthed_rekey_endpoints"); got != tc.hardens {
			t.Errorf("%q: the admin listener refuses unauthenticated rekeys: %v, want %v\n%s", tc.line, got, tc.hardens, data)
		}
		if release := strings.TrimSuffix(strings.Join(strings.Fields(tc.line)[:2], " "), ","); !strings.Contains(log, release) {
			t.Errorf("%q: the log does not name the release:\n%s", tc.line, log)
		}
	}
}
