//go:build cgo

package main

import (
	"errors"

	"github.com/miekg/pkcs11"

	"github.com/edgeseal/edgeseal/internal/pkcs11proto"
)

// code maps a PKCS#11 return value to the answer's error code: the PIN and
// the token's presence are the sealer's sentinels; the rest is "failed".
func code(err error) string {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		var f *failure
		if errors.As(err, &f) {
			return f.code
		}
		return pkcs11proto.CodeFailed
	}
	switch rv {
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
		return pkcs11proto.CodeWrongPIN
	case pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED:
		return pkcs11proto.CodeLocked
	case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SLOT_ID_INVALID:
		return pkcs11proto.CodeTokenAbsent
	}
	return pkcs11proto.CodeFailed
}

// isAuthFailure reports whether a C_Decrypt error is what an AES-GCM tag
// that does not verify gives: another key, or data that is not this key's.
func isAuthFailure(err error) bool {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return false
	}
	switch rv {
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, pkcs11.CKR_GENERAL_ERROR:
		return true
	}
	return false
}
