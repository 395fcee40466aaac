// Package seal protects the Vault unseal key at rest. A Sealer turns the key into an
// opaque blob that only this device (its TPM, or its vendor's key material) can turn
// back into the key. Callers branch on the sentinel errors below, never on strings,
// and no error path may overwrite or delete a sealed blob: the blob is the only way
// into Vault.
//
// # Methods
//
// ikm-hook (NewIKMHook) runs a vendor hook that prints this device's input keying
// material, derives an AES-256-GCM key from it with HKDF-SHA256 and a random salt,
// and seals with that key. tpm2 (NewTPM2) seals to the TPM in an approved PCR
// state. pkcs11 (NewPKCS11) seals with a random data key that a PKCS#11
// token's non-extractable AES key encrypts, through the helper edgeseal-pkcs11
// (the vendor's module is never loaded here). none (NewNone) stores the key in
// clear, only with explicit consent and with a warning each time.
//
// # Blobs
//
// Every blob is an Envelope: one line of versioned JSON with base64 fields, parsed
// strictly by ParseEnvelope. docs/sealed-blob.md describes every field, the
// additional authenticated data and the key derivation; testdata holds a blob of
// each method that must keep unsealing.
package seal

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgeseal/edgeseal/internal/tpm"

	"github.com/edgeseal/edgeseal/internal/config"
)

// Seal methods, as named by seal.method in the config and by the envelope.
const (
	MethodIKMHook = "ikm-hook"
	MethodNone    = "none"
	MethodTPM2    = "tpm2"
	MethodPKCS11  = "pkcs11"
)

// New returns the sealer cfg.Method names. A hook command that can never run (none
// configured, or a relative path) is refused here, wrapping ErrHook; method none
// without cfg.AllowInsecureNone is refused with ErrInsecureNotAllowed. warn
// receives the none sealer's warnings.
func New(cfg config.Seal, warn func(string)) (Sealer, error) {
	switch cfg.Method {
	case MethodIKMHook:
		if err := checkHookCommand(cfg.IKMHook.Command); err != nil {
			return nil, fmt.Errorf("cannot use seal method ikm-hook: %w", err)
		}
		return NewIKMHook(cfg.IKMHook), nil
	case MethodNone:
		return NewNone(cfg.AllowInsecureNone, warn)
	case MethodTPM2:
		return NewTPM2(cfg.TPM2), nil
	case MethodPKCS11:
		return NewPKCS11(cfg.PKCS11), nil
	}
	return nil, fmt.Errorf("unknown seal method %q: set seal.method to %s, %s, %s or %s", cfg.Method, MethodIKMHook, MethodTPM2, MethodPKCS11, MethodNone)
}

// Sealer seals and unseals a secret. Implementations must wipe intermediate key
// material they derive and must not log the secret.
type Sealer interface {
	// Method is the config name of the sealer ("ikm-hook", "none", "tpm2", "pkcs11").
	Method() string
	// Seal returns a self-describing blob (see Envelope) holding secret.
	Seal(ctx context.Context, secret []byte) ([]byte, error)
	// Unseal returns the secret held by blob.
	Unseal(ctx context.Context, blob []byte) ([]byte, error)
}

// Errors a caller acts on. Each says what happened; wrap them with the detail an
// operator needs (which file, which PCRs) using fmt.Errorf("...: %w", ErrX).
var (
	// ErrCorrupt: the blob cannot be parsed or fails its integrity check in a way that
	// a different key would not explain (truncated, bad version, bad field). Restore
	// the blob from a backup; do not re-initialise Vault.
	ErrCorrupt = errors.New("sealed blob is corrupt")
	// ErrWrongDevice: the blob is well formed but this device's key does not open it
	// (another device's TPM or key material, or the vendor's IKM changed).
	ErrWrongDevice = errors.New("sealed blob belongs to another device or key")
	// ErrWrongMethod: the blob was sealed by another sealer than the configured one.
	ErrWrongMethod = errors.New("sealed blob was made by another seal method")
	// ErrHook: the IKM hook failed, timed out or printed unusable output.
	ErrHook = errors.New("key material hook failed")
	// ErrInsecureNotAllowed: the none sealer was selected without explicit consent.
	ErrInsecureNotAllowed = errors.New("insecure seal method none is not allowed")

	// For the tpm2 sealer, the tpm package's own errors: the PCR values differ from
	// the approved ones (approve them with `edgeseal tpm reseal` or recover); the
	// PIN is wrong; the TPM is in dictionary-attack lockout (wait); there is no TPM.
	// A storage root key that is missing or different is ErrWrongDevice.
	ErrPCRMismatch = tpm.ErrPCRMismatch
	ErrWrongPIN    = tpm.ErrWrongPIN
	ErrLockout     = tpm.ErrLockout
	ErrTPMAbsent   = tpm.ErrAbsent

	// For the pkcs11 sealer: a wrong PIN is ErrWrongPIN, a locked PIN
	// ErrLockout, another token (its serial differs) or a key that does not
	// open the blob ErrWrongDevice.
	//
	// ErrTokenAbsent: no token with the configured label or serial is present
	// (plug it in, or fix seal.pkcs11.token_label or token_serial).
	ErrTokenAbsent = errors.New("PKCS#11 token not found")
	// ErrKeyAbsent: the token has no AES key with the configured label (make it
	// as README says, or fix seal.pkcs11.key_label). edgeseal never makes it.
	ErrKeyAbsent = errors.New("no such key in the PKCS#11 token")
	// ErrPKCS11: the module, the helper edgeseal-pkcs11 or the token failed in
	// another way (the message says how).
	ErrPKCS11 = errors.New("PKCS#11 sealer failed")
	// With seal.tpm2.storage nv: the blob is older than the TPM's rollback
	// counter (an old copy put back: restore the latest or recover); the TPM's
	// NV storage is full (free indices or use storage file). An NV index that is
	// gone (a cleared TPM) or another is ErrWrongDevice.
	ErrRolledBack = tpm.ErrRolledBack
	ErrNVFull     = tpm.ErrNVFull
	// ErrNVInUse: a configured NV handle holds an index that is not edgeseal's
	// (set seal.tpm2.nv_index or counter_index to free handles).
	ErrNVInUse = tpm.ErrNVInUse
)
