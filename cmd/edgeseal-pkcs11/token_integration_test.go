//go:build cgo && integration

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/edgeseal/edgeseal/internal/pkcs11proto"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// inToken runs fn in a read-write session, logged in with pin, on the token
// labelled token.
func inToken(t *testing.T, token, pin string, fn func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle)) {
	t.Helper()
	ctx := pkcs11.New(testbed.SoftHSMModule)
	if ctx == nil {
		t.Fatal("cannot load SoftHSM2's module")
	}
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer ctx.Finalize()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if ti, err := ctx.GetTokenInfo(s); err != nil || ti.Label != token {
			continue
		}
		sh, err := ctx.OpenSession(s, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer ctx.CloseSession(sh)
		if err := ctx.Login(sh, pkcs11.CKU_USER, pin); err != nil {
			t.Fatal(err)
		}
		defer ctx.Logout(sh)
		fn(ctx, sh)
		return
	}
	t.Fatalf("no token %q", token)
}

// makeKey makes an AES-256 key labelled label in the token labelled token,
// with extractable as CKA_EXTRACTABLE and sensitive as CKA_SENSITIVE, and
// extra attributes: keys the helper's own generate would never make.
func makeKey(t *testing.T, token, pin, label string, sensitive, extractable bool, extra ...*pkcs11.Attribute) pkcs11.ObjectHandle {
	t.Helper()
	var key pkcs11.ObjectHandle
	inToken(t, token, pin, func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) {
		var err error
		key, err = ctx.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, append(aesKeyTemplate(label, sensitive, extractable), extra...))
		if err != nil {
			t.Fatal(err)
		}
	})
	return key
}

// importKey puts an AES-256 key of a value the caller knows in the token
// (C_CreateObject), flagged sensitive and not extractable.
func importKey(t *testing.T, token, pin, label string, value []byte) {
	t.Helper()
	inToken(t, token, pin, func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) {
		var tmpl []*pkcs11.Attribute
		for _, a := range aesKeyTemplate(label, true, false) {
			if a.Type != pkcs11.CKA_VALUE_LEN { // C_CreateObject takes the value, not its length
				tmpl = append(tmpl, a)
			}
		}
		if _, err := ctx.CreateObject(sh, append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE, value))); err != nil {
			t.Fatal(err)
		}
	})
}

// lockKey makes a key that could leave the token, takes its value out if it
// is not sensitive, then sets it sensitive and not extractable: a key whose
// value someone may hold, with the flags of one nobody does. It returns the
// value taken out (nil if none).
func lockKey(t *testing.T, token, pin, label string, sensitive bool) []byte {
	t.Helper()
	var value []byte
	inToken(t, token, pin, func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) {
		key, err := ctx.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, aesKeyTemplate(label, sensitive, true))
		if err != nil {
			t.Fatal(err)
		}
		if !sensitive {
			a, err := ctx.GetAttributeValue(sh, key, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
			if err != nil || len(a) != 1 || len(a[0].Value) != 32 {
				t.Fatalf("cannot take the value out of %s: %v", label, err)
			}
			value = a[0].Value
		}
		lock := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false)}
		if !sensitive { // SoftHSM2 refuses to set CKA_SENSITIVE again (CKR_ATTRIBUTE_READ_ONLY)
			lock = append(lock, pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true))
		}
		if err := ctx.SetAttributeValue(sh, key, lock); err != nil {
			t.Fatal(err)
		}
	})
	return value
}

// writePIN writes pin in a file of mode 0600 in a new directory and returns its path.
func writePIN(t *testing.T, pin string) string {
	t.Helper()
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return pinFile
}

// The helper refuses keys and tokens it cannot be sure of, before using them.
func TestTheHelperRefusesAKeyThatCanLeaveTheTokenAndAmbiguousNames(t *testing.T) {
	const pin = "4711"
	h := testbed.NewSoftHSM(t)
	t.Setenv("SOFTHSM2_CONF", h.Conf)
	h.InitToken(t, "dev", pin, "")
	makeKey(t, "dev", pin, "extractable", true, true)
	makeKey(t, "dev", pin, "not-sensitive", false, false)
	makeKey(t, "dev", pin, "twice", true, false)
	makeKey(t, "dev", pin, "twice", true, false)
	// Keys whose value may be known outside the token, flagged as if not.
	importKey(t, "dev", pin, "imported", bytes.Repeat([]byte{0xab}, 32))
	if lockKey(t, "dev", pin, "read-then-locked", false) == nil {
		t.Fatal("the read-then-locked key's value was not taken out")
	}
	lockKey(t, "dev", pin, "extractable-then-locked", true)
	// A key the token lets a session use without the PIN.
	makeKey(t, "dev", pin, "public", true, false, pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false))
	h.InitToken(t, "twin", pin, "")
	h.InitToken(t, "twin", pin, "")
	pinFile := writePIN(t, pin)
	for _, tc := range []struct{ token, key, says string }{
		{"dev", "extractable", "CKA_EXTRACTABLE is true"},
		{"dev", "not-sensitive", "CKA_SENSITIVE is false"},
		{"dev", "twice", "more than one AES key"},
		{"dev", "imported", "CKA_ALWAYS_SENSITIVE is false"},
		{"dev", "read-then-locked", "CKA_ALWAYS_SENSITIVE is false"},
		{"dev", "extractable-then-locked", "CKA_NEVER_EXTRACTABLE is false"},
		{"dev", "public", "CKA_PRIVATE is false"},
		{"twin", "edgeseal-unseal", "2 tokens are labelled \"twin\""},
	} {
		req := &pkcs11proto.Request{V: 1, Op: pkcs11proto.OpEncrypt, Module: testbed.SoftHSMModule, TokenLabel: tc.token,
			KeyLabel: tc.key, PINFile: pinFile, IV: make([]byte, 12), Data: make([]byte, 32)}
		a := serve(req)
		if a.Error != pkcs11proto.CodeFailed || !strings.Contains(a.Message, tc.says) || len(a.Data) != 0 {
			t.Errorf("%s in %s: %+v, want %q", tc.key, tc.token, a, tc.says)
		}
	}
}

// The helper reads the PIN as root: a PIN file others can read, or a symlink
// that someone else may have pointed anywhere, is refused before the token
// sees a login.
func TestTheHelperRefusesAPINFileOthersCanReadOrRedirect(t *testing.T) {
	const pin = "4711"
	h := testbed.NewSoftHSM(t)
	t.Setenv("SOFTHSM2_CONF", h.Conf)
	h.InitToken(t, "dev", pin, "edgeseal-unseal")
	pinFile := writePIN(t, pin)
	readable := writePIN(t, pin)
	if err := os.Chmod(readable, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "pin")
	if err := os.Symlink(pinFile, link); err != nil {
		t.Fatal(err)
	}
	req := func(pinFile string) *pkcs11proto.Request {
		return &pkcs11proto.Request{V: 1, Op: pkcs11proto.OpEncrypt, Module: testbed.SoftHSMModule, TokenLabel: "dev",
			KeyLabel: "edgeseal-unseal", PINFile: pinFile, IV: make([]byte, 12), Data: make([]byte, 32)}
	}
	if a := serve(req(pinFile)); a.Error != "" || len(a.Data) != 48 {
		t.Fatalf("with a 0600 PIN file: %+v", a)
	}
	for _, tc := range []struct{ path, says string }{
		{readable, "chmod 0600 " + readable},
		{link, "symlink"},
	} {
		a := serve(req(tc.path))
		if a.Error != pkcs11proto.CodePINFile || !strings.Contains(a.Message, tc.path) || !strings.Contains(a.Message, tc.says) || len(a.Data) != 0 {
			t.Errorf("PIN file %s: %+v, want %s saying %q", tc.path, a, pkcs11proto.CodePINFile, tc.says)
		}
	}
}
