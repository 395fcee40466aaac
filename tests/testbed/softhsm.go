//go:build integration

package testbed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// SoftHSMModule is Debian's SoftHSM2 PKCS#11 library (package libsofthsm2,
// which softhsm2 depends on).
const SoftHSMModule = "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"

// SoftHSM is a SoftHSM2 token store of a test's own: Conf, a softhsm2.conf in
// a temporary directory, keeps its tokens in Tokens. A process reaches it with
// SOFTHSM2_CONF=Conf in its environment (Env).
type SoftHSM struct {
	Conf, Tokens string
}

// NewSoftHSM makes an empty token store.
func NewSoftHSM(t testing.TB) *SoftHSM {
	t.Helper()
	Require(t, "softhsm2-util")
	if _, err := os.Stat(SoftHSMModule); err != nil {
		t.Fatalf("SoftHSM2's PKCS#11 module: %v: apt-get install softhsm2 (or run make deps)", err)
	}
	dir := t.TempDir()
	h := &SoftHSM{Conf: filepath.Join(dir, "softhsm2.conf"), Tokens: filepath.Join(dir, "tokens")}
	if err := os.Mkdir(h.Tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	h.WriteConf(t, h.Conf, h.Tokens)
	return h
}

// WriteConf writes a softhsm2.conf at path whose tokens are in dir (a device
// sees the same tokens at another path).
func (h *SoftHSM) WriteConf(t testing.TB, path, dir string) {
	t.Helper()
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", dir)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Env is the environment entry that points SoftHSM2 at this store.
func (h *SoftHSM) Env() string { return "SOFTHSM2_CONF=" + h.Conf }

// InitToken initialises a token labelled label with the user PIN pin (the
// SO PIN is pin reversed, unused) and makes its sealing key, an AES-256 key
// labelled keyLabel, sensitive and not extractable, with the helper
// edgeseal-pkcs11 (PKCS11Helper). It returns the token's serial number; with
// keyLabel "" it makes no key and returns "".
func (h *SoftHSM) InitToken(t testing.TB, label, pin, keyLabel string) string {
	t.Helper()
	so := []byte(pin)
	for i, j := 0, len(so)-1; i < j; i, j = i+1, j-1 {
		so[i], so[j] = so[j], so[i]
	}
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", string(so))
	cmd.Env = append(os.Environ(), h.Env())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	if keyLabel == "" {
		return ""
	}
	return h.GenerateKey(t, label, pin, keyLabel)
}

// GenerateKey makes a sealing key labelled keyLabel in the token labelled
// label, as a device builder would, and returns the token's serial.
func (h *SoftHSM) GenerateKey(t testing.TB, label, pin, keyLabel string) string {
	t.Helper()
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]any{"v": 1, "op": "generate", "module": SoftHSMModule,
		"token_label": label, "key_label": keyLabel, "pin_file": pinFile})
	cmd := exec.Command(PKCS11Helper(t))
	cmd.Env = append(os.Environ(), h.Env())
	cmd.Stdin = bytes.NewReader(req)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("edgeseal-pkcs11 generate %s in %s: %v", keyLabel, label, err)
	}
	var a struct{ Serial, Error, Message string }
	if err := json.Unmarshal(out, &a); err != nil || a.Error != "" || a.Serial == "" {
		t.Fatalf("edgeseal-pkcs11 generate %s in %s: %s (%v)", keyLabel, label, out, err)
	}
	return a.Serial
}

// pkcs11Helpers are the helpers built, by the test that asked (each test's
// own, in its temporary directory, so that nothing outlives it).
var pkcs11Helpers sync.Map

// PKCS11Helper returns edgeseal-pkcs11 built with cgo into t's temporary
// directory, once per test (Go's build cache makes a second build a link).
func PKCS11Helper(t testing.TB) string {
	t.Helper()
	if bin, ok := pkcs11Helpers.Load(t); ok {
		return bin.(string)
	}
	bin := filepath.Join(t.TempDir(), "edgeseal-pkcs11")
	build := exec.Command("go", "build", "-o", bin, "./cmd/edgeseal-pkcs11")
	build.Dir = repoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cannot build edgeseal-pkcs11 (cgo: apt-get install gcc libc6-dev): %v\n%s", err, out)
	}
	pkcs11Helpers.Store(t, bin)
	t.Cleanup(func() { pkcs11Helpers.Delete(t) })
	return bin
}
