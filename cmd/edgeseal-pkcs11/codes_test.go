//go:build cgo

package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/edgeseal/edgeseal/internal/pkcs11proto"
)

// The PKCS#11 return values the sealer acts on. CKR_PIN_LOCKED is tested here
// only: SoftHSM2 2.6 has no PIN lockout to provoke it.
func TestTokenReturnValuesMapToTheAnswerCodes(t *testing.T) {
	for _, tc := range []struct {
		rv   uint
		want string
	}{
		{pkcs11.CKR_PIN_INCORRECT, pkcs11proto.CodeWrongPIN},
		{pkcs11.CKR_PIN_LEN_RANGE, pkcs11proto.CodeWrongPIN},
		{pkcs11.CKR_PIN_LOCKED, pkcs11proto.CodeLocked},
		{pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11proto.CodeTokenAbsent},
		{pkcs11.CKR_DEVICE_REMOVED, pkcs11proto.CodeTokenAbsent},
		{pkcs11.CKR_DEVICE_ERROR, pkcs11proto.CodeFailed},
		{pkcs11.CKR_MECHANISM_INVALID, pkcs11proto.CodeFailed},
	} {
		err := fmt.Errorf("cannot log in: %w", pkcs11.Error(tc.rv))
		if got := code(err); got != tc.want {
			t.Errorf("%v: %q, want %q", pkcs11.Error(tc.rv), got, tc.want)
		}
	}
	if got := code(fail(pkcs11proto.CodeKeyAbsent, "no key")); got != pkcs11proto.CodeKeyAbsent {
		t.Errorf("a failure keeps its code: %q", got)
	}
	if got := code(errors.New("other")); got != pkcs11proto.CodeFailed {
		t.Errorf("another error: %q", got)
	}
}

func TestOnlyATagThatDoesNotVerifyIsAnotherKey(t *testing.T) {
	if !isAuthFailure(pkcs11.Error(pkcs11.CKR_ENCRYPTED_DATA_INVALID)) || !isAuthFailure(pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)) {
		t.Error("a GCM tag failure (CKR_ENCRYPTED_DATA_INVALID; SoftHSM2 says CKR_GENERAL_ERROR) is not another key")
	}
	if isAuthFailure(pkcs11.Error(pkcs11.CKR_DEVICE_REMOVED)) {
		t.Error("a removed token is another key")
	}
}
