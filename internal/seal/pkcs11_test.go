package seal

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/pkcs11proto"
)

// memToken stands in for the helper and its token in unit tests: AES-GCM with
// a key of its own, as CKM_AES_GCM computes it (NIST SP 800-38D, 128-bit
// tag), and the helper's serial check. The integration tests use SoftHSM2.
type memToken struct {
	serial string
	key    []byte
	answer *pkcs11proto.Answer // if set, answered instead
	reqs   []*pkcs11proto.Request
}

func (m *memToken) run(_ context.Context, req *pkcs11proto.Request) (*pkcs11proto.Answer, error) {
	m.reqs = append(m.reqs, req)
	if m.answer != nil {
		return m.answer, nil
	}
	block, _ := aes.NewCipher(m.key)
	gcm, _ := cipher.NewGCM(block)
	a := &pkcs11proto.Answer{V: 1, Serial: m.serial}
	switch req.Op {
	case pkcs11proto.OpEncrypt:
		a.Data = gcm.Seal(nil, req.IV, req.Data, req.AAD)
	case pkcs11proto.OpDecrypt:
		if req.Serial != m.serial {
			return &pkcs11proto.Answer{V: 1, Error: pkcs11proto.CodeWrongDevice, Message: "another serial"}, nil
		}
		out, err := gcm.Open(nil, req.IV, req.Data, req.AAD)
		if err != nil {
			return &pkcs11proto.Answer{V: 1, Error: pkcs11proto.CodeWrongDevice, Message: "CKR_GENERAL_ERROR"}, nil
		}
		a.Data = out
	}
	return a, nil
}

var testPKCS11Config = config.PKCS11{
	Module: "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", TokenLabel: "edgeseal",
	KeyLabel: "edgeseal-unseal", PINFile: "/etc/edgeseal/pkcs11-pin", Timeout: config.Duration(5 * time.Second),
}

// memPKCS11 is the pkcs11 sealer on a memToken whose key is 32 bytes of fill.
func memPKCS11(cfg config.PKCS11, serial string, fill byte) (*pkcs11Sealer, *memToken) {
	s := newPKCS11(cfg, "/nonexistent")
	tok := &memToken{serial: serial, key: bytes.Repeat([]byte{fill}, 32)}
	s.token = tok.run
	return s, tok
}

func TestPKCS11SealsADataKeyTheTokenEncryptsAndUnsealsIt(t *testing.T) {
	s, tok := memPKCS11(testPKCS11Config, "0123456789abcdef", 7)
	blob, err := s.Seal(t.Context(), []byte(goldenSecret))
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseEnvelope(blob)
	if err != nil {
		t.Fatal(err)
	}
	if e.Method != MethodPKCS11 || string(e.Token) != "0123456789abcdef" || len(e.Wrapped) != wrappedSize {
		t.Fatalf("envelope %+v", e)
	}
	// The token saw the data key and the key label, never the secret.
	if r := tok.reqs[0]; r.Op != "encrypt" || bytes.Contains(r.Data, []byte(goldenSecret)) || !bytes.HasSuffix(r.AAD, []byte("\x0fedgeseal-unseal")) ||
		r.PINFile != "/etc/edgeseal/pkcs11-pin" || r.TokenLabel != "edgeseal" || len(r.Data) != 32 {
		t.Fatalf("the token was asked %+v", r)
	}
	got, err := s.Unseal(t.Context(), blob)
	if err != nil || string(got) != goldenSecret {
		t.Fatalf("unseal: %q, %v", got, err)
	}
	if r := tok.reqs[1]; r.Op != "decrypt" || r.Serial != "0123456789abcdef" {
		t.Fatalf("the token was asked %+v", r)
	}
}

func TestPKCS11BlobOpensOnlyWithItsTokenAndKeyLabel(t *testing.T) {
	s, _ := memPKCS11(testPKCS11Config, "0123456789abcdef", 7)
	blob, err := s.Seal(t.Context(), []byte(goldenSecret))
	if err != nil {
		t.Fatal(err)
	}
	other := testPKCS11Config
	other.KeyLabel = "another-key"
	for name, u := range map[string]*pkcs11Sealer{
		"another token (serial)":               first(memPKCS11(testPKCS11Config, "fedcba9876543210", 7)),
		"the same serial with another key":     first(memPKCS11(testPKCS11Config, "0123456789abcdef", 8)),
		"the same key under another key label": first(memPKCS11(other, "0123456789abcdef", 7)),
	} {
		if _, err := u.Unseal(t.Context(), blob); !errors.Is(err, ErrWrongDevice) {
			t.Errorf("%s: %v, want ErrWrongDevice", name, err)
		}
	}
}

func first(s *pkcs11Sealer, _ *memToken) *pkcs11Sealer { return s }

func TestPKCS11BlobAlteredOutsideTheWrappedKeyIsCorrupt(t *testing.T) {
	s, _ := memPKCS11(testPKCS11Config, "0123456789abcdef", 7)
	blob, err := s.Seal(t.Context(), []byte(goldenSecret))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := ParseEnvelope(blob)
	e.Ciphertext[0] ^= 1
	if _, err := s.Unseal(t.Context(), e.Marshal()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("altered ciphertext: %v, want ErrCorrupt", err)
	}
}

// Each error the helper answers is the sentinel a caller (edgeseal-unseal's
// exit status) acts on. SoftHSM2 has no PIN lockout, so "locked"
// (CKR_PIN_LOCKED) is tested here only.
func TestPKCS11HelperErrorsAreTheSealSentinels(t *testing.T) {
	for _, tc := range []struct {
		code string
		want error
		says string
	}{
		{pkcs11proto.CodeWrongPIN, ErrWrongPIN, "seal.pkcs11.pin_file"},
		{pkcs11proto.CodeLocked, ErrLockout, "PKCS#11 token's user PIN is locked"},
		{pkcs11proto.CodeTokenAbsent, ErrTokenAbsent, "plug the token in"},
		{pkcs11proto.CodeKeyAbsent, ErrKeyAbsent, "no such key"},
		{pkcs11proto.CodeWrongDevice, ErrWrongDevice, "another device or key"},
		{pkcs11proto.CodeModule, ErrPKCS11, "seal.pkcs11.module"},
		{pkcs11proto.CodePINFile, ErrPKCS11, "PKCS#11 sealer failed"},
		{pkcs11proto.CodeFailed, ErrPKCS11, "PKCS#11 sealer failed"},
	} {
		s, tok := memPKCS11(testPKCS11Config, "0123456789abcdef", 7)
		tok.answer = &pkcs11proto.Answer{V: 1, Error: tc.code, Message: "the helper's words"}
		_, err := s.Seal(t.Context(), []byte("x"))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "the helper's words") {
			t.Errorf("%s: %v, want %v saying %q", tc.code, err, tc.want, tc.says)
		}
		if tc.code == pkcs11proto.CodeLocked && strings.Contains(err.Error(), "TPM") {
			t.Errorf("a locked token's PIN is reported as a TPM's: %v", err)
		}
	}
}

func TestPKCS11UnsealOfACorruptBlobDoesNotRunTheHelper(t *testing.T) {
	s, tok := memPKCS11(testPKCS11Config, "0123456789abcdef", 7)
	if _, err := s.Unseal(t.Context(), []byte(validIKM)); !errors.Is(err, ErrWrongMethod) {
		t.Fatalf("an ikm-hook blob: %v", err)
	}
	if _, err := s.Unseal(t.Context(), []byte("{")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage: %v", err)
	}
	if len(tok.reqs) != 0 {
		t.Fatalf("the token was asked %d times", len(tok.reqs))
	}
}

// The helper process: missing, too slow, or answering what is not an answer.
func TestPKCS11HelperThatCannotAnswerIsAPKCS11Error(t *testing.T) {
	slow := writeHook(t, "sleep 10")
	garbage := writeHook(t, `printf '{"v":1,"data":"AA==","extra":1}\n'`)
	crash := writeHook(t, "echo 'edgeseal-pkcs11: cannot read the request' >&2; exit 1")
	for name, tc := range map[string]struct {
		helper string
		says   string
	}{
		"missing":  {"/nonexistent/edgeseal-pkcs11", "is not installed"},
		"too slow": {slow, "did not finish within 1s (seal.pkcs11.timeout)"},
		"garbage":  {garbage, "unknown field"},
		"exits 1":  {crash, "cannot read the request"},
	} {
		cfg := testPKCS11Config
		cfg.Timeout = config.Duration(time.Second)
		s := newPKCS11(cfg, tc.helper)
		_, err := s.Seal(t.Context(), []byte("x"))
		if !errors.Is(err, ErrPKCS11) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want ErrPKCS11 saying %q", name, err, tc.says)
		}
	}
}

// A helper whose module started a process and hung: the timeout kills both,
// as a hook's (the module's process would otherwise outlive the unit's start,
// holding the token's session).
func TestPKCS11HelperTimeoutKillsWhatTheHelperStarted(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	helper := writeHook(t, `sleep 60 </dev/null >/dev/null 2>&1 & echo $! > `+pidFile+`; exec sleep 60`)
	cfg := testPKCS11Config
	cfg.Timeout = config.Duration(300 * time.Millisecond)
	start := time.Now()
	_, err := newPKCS11(cfg, helper).Seal(t.Context(), []byte("x"))
	if !errors.Is(err, ErrPKCS11) || !strings.Contains(err.Error(), "did not finish within") {
		t.Fatalf("got %v, want a timeout", err)
	}
	if took := time.Since(start); took > hookWaitDelay {
		t.Errorf("took %s", took)
	}
	requireGone(t, pidFile)
}

// The helper gets a PATH, SOFTHSM2_CONF (SoftHSM2's module reads its token
// directory from it) and the variables seal.pkcs11.environment names, when
// set; nothing else of edgeseal's environment.
func TestPKCS11HelperRunsWithAnExplicitEnvironment(t *testing.T) {
	t.Setenv("EDGESEAL_TEST_LEAK", "leaked")
	t.Setenv("SOFTHSM2_CONF", "/etc/softhsm/softhsm2.conf")
	t.Setenv("OPENSC_CONF", "/etc/opensc.conf")
	os.Unsetenv("VENDOR_UNSET") // named, not set: not passed
	out := filepath.Join(t.TempDir(), "env")
	helper := writeHook(t, `env | sed 's/^/env=/' > `+out+`; exit 1`)
	cfg := testPKCS11Config
	cfg.Environment = []string{"OPENSC_CONF", "VENDOR_UNSET"}
	if _, err := newPKCS11(cfg, helper).Seal(t.Context(), []byte("x")); !errors.Is(err, ErrPKCS11) {
		t.Fatalf("got %v, want ErrPKCS11", err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	requireSawExactly(t, "the helper", got, "env="+hookPath, "env=SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf", "env=OPENSC_CONF=/etc/opensc.conf")
}

// The golden pkcs11 blob: made by Seal with the counting reader (data key
// 00..1f, token IV 20..2b, nonce 2c..37) and a stand-in token whose key is 32
// bytes of 0x07 and whose serial is 0123456789abcdef.
func TestGoldenPKCS11BlobUnseals(t *testing.T) {
	path := filepath.Join("testdata", "pkcs11-v1.sealed")
	if *updateGolden {
		s, _ := memPKCS11(testPKCS11Config, "0123456789abcdef", 7)
		s.rand = &countingReader{}
		blob, err := s.Seal(t.Context(), []byte(goldenSecret))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, blob, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	blob := mustRead(t, path)
	s, _ := memPKCS11(testPKCS11Config, "0123456789abcdef", 7)
	got, err := s.Unseal(t.Context(), blob)
	if err != nil || string(got) != goldenSecret {
		t.Fatalf("the golden pkcs11 blob unseals to %q, %v", got, err)
	}
	s.rand = &countingReader{}
	again, err := s.Seal(t.Context(), []byte(goldenSecret))
	if err != nil || !bytes.Equal(again, blob) {
		t.Fatalf("Seal with the golden inputs writes\n%s\nbut the golden blob is\n%s", again, blob)
	}
}
