//go:build cgo && integration

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/edgeseal/edgeseal/internal/pkcs11proto"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// makeKey makes an AES-256 key labelled label in the token labelled token,
// with extractable as CKA_EXTRACTABLE and sensitive as CKA_SENSITIVE: keys the
// helper's own generate would never make.
func makeKey(t *testing.T, token, pin, label string, sensitive, extractable bool) {
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
		if _, err := ctx.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, aesKeyTemplate(label, sensitive, extractable)); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no token %q", token)
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
	h.InitToken(t, "twin", pin, "")
	h.InitToken(t, "twin", pin, "")
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ token, key, says string }{
		{"dev", "extractable", "can leave the token"},
		{"dev", "not-sensitive", "can leave the token"},
		{"dev", "twice", "more than one AES key"},
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
