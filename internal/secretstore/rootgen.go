package secretstore

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/api"
)

// GenerateRoot makes a new root token with the unseal key (Vault's generate-root
// with a Vault-chosen one-time pad). Any generate-root left half done, e.g. by a
// crash, is cancelled first. The caller must revoke the token when done.
func GenerateRoot(ctx context.Context, c *api.Client, unsealKey []byte) (string, error) {
	sys := c.Sys()
	st, err := sys.GenerateRootStatusWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("cannot read root token generation status: %w", err)
	}
	if st.Started {
		if err := sys.GenerateRootCancelWithContext(ctx); err != nil {
			return "", fmt.Errorf("cannot cancel an unfinished root token generation: %w", err)
		}
	}
	init, err := sys.GenerateRootInitWithContext(ctx, "", "")
	if err != nil {
		return "", fmt.Errorf("cannot start root token generation: %w", err)
	}
	if init.OTP == "" {
		return "", errors.New("cannot start root token generation: Vault returned no one-time pad (Vault older than 1.10?)")
	}
	upd, err := sys.GenerateRootUpdateWithContext(ctx, base64.StdEncoding.EncodeToString(unsealKey), init.Nonce)
	if err != nil {
		return "", fmt.Errorf("cannot generate root token: %w", err)
	}
	if !upd.Complete {
		return "", fmt.Errorf("cannot generate root token: Vault needs %d key shares, edgeseal holds 1", upd.Required)
	}
	return decodeRootToken(upd.EncodedToken, init.OTP)
}

// decodeRootToken undoes Vault's one-time pad: base64 (unpadded) XOR otp.
func decodeRootToken(encoded, otp string) (string, error) {
	b, err := base64.RawStdEncoding.DecodeString(encoded)
	if err != nil {
		return "", fmt.Errorf("cannot decode generated root token: %w", err)
	}
	if len(b) != len(otp) {
		return "", fmt.Errorf("cannot decode generated root token: %d bytes for a %d-byte one-time pad", len(b), len(otp))
	}
	out := make([]byte, len(b))
	subtle.XORBytes(out, b, []byte(otp))
	return string(out), nil
}
