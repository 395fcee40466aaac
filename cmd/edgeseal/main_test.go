package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestConfigCommands(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("vault:\n  kv_version: 1\n"), 0o644)
	os.WriteFile(bad, []byte("vault:\n  kv_version: 1\n  mout: x\n"), 0o644)
	cases := []struct {
		name    string
		args    []string
		out     string
		errText string
		usage   bool
	}{
		{"a valid file is ok", []string{"config", "check", good}, good + ": ok", "", false},
		{"an invalid file names file, line and field", []string{"config", "check", bad}, "", bad + ":3: vault.mout: unknown key", false},
		{"a missing file is named", []string{"config", "check", filepath.Join(dir, "nope.yaml")}, "", "nope.yaml", false},
		{"the default config is printed", []string{"config", "default"}, "kv_version: 2", "", false},
		{"no subcommand is a usage error", []string{"config"}, "", "check [FILE] or default", true},
		{"an unknown command is a usage error", []string{"frobnicate"}, "", "unknown command", true},
		{"no command is a usage error", nil, "", "no command", true},
		{"--root points every default path at a tree", []string{"--root", dir, "config", "check"}, "", filepath.Join(dir, "etc/edgeseal/edgeseal.yaml"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runCLI(t, tc.args...)
			if !strings.Contains(out, tc.out) {
				t.Errorf("stdout %q lacks %q", out, tc.out)
			}
			if tc.errText == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.errText != "" && (err == nil || !strings.Contains(err.Error(), tc.errText)) {
				t.Errorf("err = %v, want it to mention %q", err, tc.errText)
			}
			if errors.Is(err, errUsage) != tc.usage {
				t.Errorf("usage error = %v, want %v", errors.Is(err, errUsage), tc.usage)
			}
		})
	}
}

func TestConfigDefaultIsTheEmbeddedSample(t *testing.T) {
	out, _, err := runCLI(t, "config", "default")
	if err != nil || out != string(config.Sample) {
		t.Errorf("config default differs from the sample (%v)", err)
	}
}

func TestStatusWithNothingRunningSaysNotReady(t *testing.T) {
	root := t.TempDir()
	out, _, err := runCLI(t, "--root", root, "status")
	if !errors.Is(err, errNotReady) {
		t.Errorf("err = %v, want not ready", err)
	}
	for _, want := range []string{"not ready", "Unseal key", "absent", "Problems:"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestRootTokenRefusesAnUnreasonableTTL(t *testing.T) {
	for _, ttl := range []string{"10s", "48h"} {
		if _, _, err := runCLI(t, "root-token", "--ttl", ttl); !errors.Is(err, errUsage) {
			t.Errorf("--ttl %s: err = %v", ttl, err)
		}
	}
}

func TestTPMResealRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	ikm := filepath.Join(dir, "ikm.yaml")
	os.WriteFile(ikm, []byte("seal:\n  method: ikm-hook\n"), 0o644)
	tpm := filepath.Join(dir, "tpm.yaml")
	os.WriteFile(tpm, []byte("seal:\n  method: tpm2\n  tpm2:\n    pcrs: [0, 7]\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"no subcommand", []string{"tpm"}, "reseal"},
		{"a malformed PCR value", []string{"tpm", "reseal", "--pcr", "7=zz"}, "64 hex digits"},
		{"a PCR out of range", []string{"tpm", "reseal", "--pcr", "24=00"}, "PCR=HEX"},
		{"a config without tpm2", []string{"tpm", "reseal", "--config", ikm}, "not tpm2"},
		{"a value for every sealed PCR", []string{"tpm", "reseal", "--config", tpm, "--pcr", "7=" + strings.Repeat("ab", 32)}, "missing 0"},
		{"a PCR the key is not sealed to", []string{"tpm", "reseal", "--config", tpm, "--pcr", "0=" + strings.Repeat("ab", 32),
			"--pcr", "7=" + strings.Repeat("ab", 32), "--pcr", "8=" + strings.Repeat("ab", 32)}, "not sealed to PCR 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, err := runCLI(t, tc.args...)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error()+errOut, tc.msg) {
				t.Errorf("err = %v, stderr %q; want a usage error mentioning %q", err, errOut, tc.msg)
			}
		})
	}
}

func TestAttestRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"no subcommand", []string{"attest"}, "quote or verify"},
		{"a short nonce", []string{"attest", "quote", "--nonce", "00"}, "16 to 64 hex digits"},
		{"a nonce that is not hex", []string{"attest", "verify", "--nonce", "zz"}, "16 to 64 hex digits"},
		{"a PCR out of range", []string{"attest", "quote", "--nonce", "0011223344556677", "--pcrs", "7,99"}, "not a PCR"},
		{"verify without a trusted key", []string{"attest", "verify", "--nonce", "0011223344556677"}, "--ak is required"},
		{"a malformed claim", []string{"attest", "quote", "--nonce", "0011223344556677", "--claim", "novalue"}, "KEY=VALUE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, err := runCLI(t, append([]string{"--root", dir}, tc.args...)...)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error()+errOut, tc.msg) {
				t.Errorf("err = %v, stderr %q; want a usage error mentioning %q", err, errOut, tc.msg)
			}
		})
	}
}

// A quote with a closing bracket after it is refused as such, before it is
// verified (encoding/json's Decoder alone stops at the end of the value).
func TestAttestVerifyRefusesDataAfterTheQuote(t *testing.T) {
	dir := t.TempDir()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	ak := filepath.Join(dir, "ak.pem")
	os.WriteFile(ak, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	for _, tail := range []string{"]", "}"} {
		quote := filepath.Join(dir, "quote.json")
		os.WriteFile(quote, []byte(`{"nonce":"AAECAwQFBgc="}`+tail), 0o644)
		_, _, err := runCLI(t, "attest", "verify", "--ak", ak, "--nonce", "0001020304050607", "--quote", quote)
		if !errors.Is(err, strictjson.ErrTrailingData) {
			t.Errorf("a quote followed by %q: %v; want strictjson.ErrTrailingData", tail, err)
		}
	}
}

func TestTheStepsAreNamedAsTheirInstallNamesThem(t *testing.T) {
	units, snap := paths.New("/"), paths.Snap("/var/snap/edgeseal/x1", "edgeseal")
	for _, c := range []struct{ got, want string }{
		{stepUnit(units, "vault"), "edgeseal-vault.service"},
		{stepUnit(snap, "vault"), "snap.edgeseal.vault.service"},
		{restartStep(units, "unseal"), "systemctl restart edgeseal-unseal.service"},
		{restartStep(snap, "unseal"), "snap restart edgeseal.unseal"},
		{strings.Join(chainUnits(snap), " "), "snap.edgeseal.pki.service snap.edgeseal.vault.service snap.edgeseal.unseal.service snap.edgeseal.tokend.tokend.socket snap.edgeseal.tokend.service"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
