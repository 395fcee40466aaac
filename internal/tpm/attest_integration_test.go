//go:build integration

package tpm_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

func TestQuoteVerifiesAndEveryTamperingIsRefusedWithItsReason(t *testing.T) {
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	extendPCR(t, ctx, 7, "shim v1")
	nonce, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	claims := map[string]string{"device_id": "edge-0042", "location": "hall 3"}
	q, err := tpm.MakeQuote(ctx, nonce, claims, []int{7, 0})
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tpm.ParseAKPublic([]byte(q.AKPublic))
	if err != nil {
		t.Fatal(err)
	}
	pcr7, _ := hex.DecodeString(q.PCRs["7"])
	expected := map[int][]byte{7: pcr7}
	if err := tpm.Verify(q, ak, nonce, expected); err != nil {
		t.Fatalf("a good quote: %v", err)
	}
	if q2, err := tpm.MakeQuote(ctx, nonce, nil, []int{7}); err != nil || q2.AKPublic != q.AKPublic {
		t.Errorf("the attestation key is not created once and reused: %v", err)
	}

	otherCtx := openSWTPM(t, testbed.StartSWTPM(t))
	other, err := tpm.MakeQuote(otherCtx, nonce, claims, []int{7, 0})
	if err != nil {
		t.Fatal(err)
	}
	copyQ := func() *tpm.Quote {
		c := *q
		c.Attest = bytes.Clone(q.Attest)
		c.Claims = map[string]string{"device_id": "edge-0042", "location": "hall 3"}
		c.PCRs = map[string]string{"0": q.PCRs["0"], "7": q.PCRs["7"]}
		return &c
	}
	staleNonce, _ := hex.DecodeString("ffeeddccbbaa99887766554433221100")
	cases := []struct {
		name   string
		quote  *tpm.Quote
		nonce  []byte
		expect map[int][]byte
		err    error
		says   string
	}{
		{"a stale nonce", copyQ(), staleNonce, expected, tpm.ErrNonce, "another nonce"},
		{"a changed claim", func() *tpm.Quote { c := copyQ(); c.Claims["location"] = "elsewhere"; return c }(), nonce, expected, tpm.ErrNonce, "other claims"},
		{"a PCR 7 the verifier does not expect", copyQ(), nonce, map[int][]byte{7: make([]byte, 32)}, tpm.ErrPCRValues, "PCR 7 is"},
		{"a reported PCR value that is not the quoted one", func() *tpm.Quote { c := copyQ(); c.PCRs["7"] = strings.Repeat("00", 32); return c }(), nonce, nil, tpm.ErrPCRValues, "not the ones the TPM quoted"},
		{"a signature from another device's key", other, nonce, expected, tpm.ErrSignature, "not from this attestation key"},
		{"an attest structure changed after signing", func() *tpm.Quote { c := copyQ(); c.Attest[len(c.Attest)-1] ^= 1; return c }(), nonce, expected, tpm.ErrSignature, ""},
		{"garbage", &tpm.Quote{Attest: []byte{1, 2}, Signature: []byte{3}}, nonce, nil, tpm.ErrBadQuote, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tpm.Verify(tc.quote, ak, tc.nonce, tc.expect)
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want %v saying %q", err, tc.err, tc.says)
			}
		})
	}
}

// The raw TPMS_ATTEST and TPMT_SIGNATURE in the JSON are what tpm2-tools reads.
func TestTPM2ToolsCheckquoteAcceptsTheQuote(t *testing.T) {
	testbed.Require(t, "tpm2_checkquote")
	ctx := openSWTPM(t, testbed.StartSWTPM(t))
	nonce, _ := hex.DecodeString("0102030405060708")
	q, err := tpm.MakeQuote(ctx, nonce, map[string]string{"device_id": "edge-1"}, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"ak.pem": []byte(q.AKPublic), "attest.bin": q.Attest, "sig.bin": q.Signature}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check := func(qualification string) error {
		cmd := exec.Command("tpm2_checkquote", "-u", "ak.pem", "-m", "attest.bin", "-s", "sig.bin", "-g", "sha256", "-q", qualification)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := check(q.QualifyingData); err != nil {
		t.Errorf("tpm2_checkquote refused edgeseal's quote: %v", err)
	}
	if err := check(strings.Repeat("00", 32)); err == nil {
		t.Error("tpm2_checkquote accepted another qualification")
	}
}
