package seal

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/edgeseal/edgeseal/internal/aesgcm"
	"github.com/edgeseal/edgeseal/internal/config"
)

const (
	// kdfInfo is the HKDF info of ikm-hook envelope version 1. It names the purpose
	// and the version, so the same IKM never gives the same key to anything else.
	kdfInfo = "edgeseal unseal-key v1"
	// aadMagic starts the additional authenticated data (see ikmHookAAD).
	aadMagic = "edgeseal sealed-blob"
)

// ikmHook seals with a key derived from input keying material (IKM) printed by a
// vendor hook, which is expected to get it from the device's hardware.
type ikmHook struct {
	cfg config.IKMHook
	// rand supplies salts and nonces; tests make it deterministic.
	rand io.Reader
	// ikm returns the key material; the caller clears it. Tests replace the hook.
	ikm func(ctx context.Context) ([]byte, error)
	// info is the HKDF info: kdfInfo for the unseal key, another purpose's
	// name for a secret sealed by NewKeyed.
	info string
}

// NewIKMHook returns the ikm-hook sealer. Each Seal and Unseal runs cfg.Command
// once (argv as given, no shell, only PATH in the environment, stdin from
// /dev/null, within cfg.Timeout, or 10s if that is not positive) and uses its stdout, less one trailing newline,
// as the IKM; the IKM is treated as bytes and must be 16 to 4096 of them. Hook
// failures wrap ErrHook. The key is HKDF-SHA256(IKM, random salt, "edgeseal
// unseal-key v1") and the secret is sealed with AES-256-GCM; the blob format is in
// docs/sealed-blob.md.
func NewIKMHook(cfg config.IKMHook) Sealer {
	h := &ikmHook{cfg: cfg, rand: rand.Reader, info: kdfInfo}
	h.ikm = func(ctx context.Context) ([]byte, error) {
		return runHook(ctx, h.cfg.Command, h.cfg.Timeout.D())
	}
	return h
}

// NewKeyed returns a sealer for a secret that whoever holds key may read
// anyway, kept on disk under key (e.g. Vault's root token under the unseal
// key, with which one can make a root token at will). It is the ikm-hook
// envelope with key as the IKM and purpose as the HKDF info, so a blob sealed
// for one purpose never opens as another's, nor as the unseal key. key is not
// copied (no second copy of a key outside locked memory): it must stay as it
// is while the sealer is in use.
func NewKeyed(key []byte, purpose string) Sealer {
	return &ikmHook{rand: rand.Reader, info: purpose, ikm: func(context.Context) ([]byte, error) {
		return bytes.Clone(key), nil
	}}
}

func (h *ikmHook) Method() string { return MethodIKMHook }

func (h *ikmHook) Seal(ctx context.Context, secret []byte) ([]byte, error) {
	if err := checkSecret(secret); err != nil {
		return nil, err
	}
	e := &Envelope{
		Version: EnvelopeVersion,
		Method:  MethodIKMHook,
		Salt:    make([]byte, saltSize),
		Nonce:   make([]byte, nonceSize),
	}
	if _, err := io.ReadFull(h.rand, e.Salt); err != nil {
		return nil, fmt.Errorf("cannot read random salt: %w", err)
	}
	if _, err := io.ReadFull(h.rand, e.Nonce); err != nil {
		return nil, fmt.Errorf("cannot read random nonce: %w", err)
	}
	aead, err := h.aead(ctx, e.Salt)
	if err != nil {
		return nil, err
	}
	e.Ciphertext = aead.Seal(nil, e.Nonce, secret, ikmHookAAD(e))
	return e.Marshal(), nil
}

func (h *ikmHook) Unseal(ctx context.Context, blob []byte) ([]byte, error) {
	// Parse first: a corrupt or foreign blob is reported without running the hook.
	e, err := parseFor(MethodIKMHook, blob)
	if err != nil {
		return nil, err
	}
	aead, err := h.aead(ctx, e.Salt)
	if err != nil {
		return nil, err
	}
	secret, err := aead.Open(nil, e.Nonce, e.Ciphertext, ikmHookAAD(e))
	if err != nil {
		// GCM cannot tell a different key from damaged salt, nonce or ciphertext;
		// the strict parse has already ruled out most damage.
		return nil, fmt.Errorf("%w: the key material from the hook does not open this blob: "+
			"the blob belongs to another device or the hook's key material changed", ErrWrongDevice)
	}
	return secret, nil
}

// aead runs the hook and returns AES-256-GCM keyed with the key derived from its
// IKM and salt. The IKM and the derived key are wiped before it returns; the
// cipher's own expanded key is beyond reach (best effort).
func (h *ikmHook) aead(ctx context.Context, salt []byte) (cipher.AEAD, error) {
	ikm, err := h.ikm(ctx)
	if err != nil {
		return nil, err
	}
	defer clear(ikm)
	aead, err := aesgcm.Derive(ikm, salt, h.info)
	if err != nil {
		return nil, fmt.Errorf("internal error: %w", err)
	}
	return aead, nil
}

// ikmHookAAD returns the additional authenticated data of an ikm-hook envelope:
//
//	"edgeseal sealed-blob"   20 bytes, ASCII, no terminator
//	0x00                     1 byte separator
//	version                  4 bytes, big-endian uint32
//	len(method)              1 byte
//	method                   ASCII ("ikm-hook", 8 bytes)
//	salt                     32 bytes
//
// 66 bytes for version 1. It binds the ciphertext to the version, the method and
// the salt, independently of how the JSON spells them.
func ikmHookAAD(e *Envelope) []byte {
	aad := make([]byte, 0, len(aadMagic)+1+4+1+len(e.Method)+len(e.Salt))
	aad = append(aad, aadMagic...)
	aad = append(aad, 0)
	aad = binary.BigEndian.AppendUint32(aad, uint32(e.Version))
	aad = append(aad, byte(len(e.Method)))
	aad = append(aad, e.Method...)
	aad = append(aad, e.Salt...)
	return aad
}

// checkSecret refuses secrets that no blob of this format can hold.
func checkSecret(secret []byte) error {
	switch {
	case len(secret) == 0:
		return fmt.Errorf("secret is empty")
	case len(secret) > maxSecretSize:
		return fmt.Errorf("secret is %d bytes, more than the %d a sealed blob holds", len(secret), maxSecretSize)
	}
	return nil
}
