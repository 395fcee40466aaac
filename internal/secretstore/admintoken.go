package secretstore

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/seal"
)

// The admin token is the root token Vault's init returned, kept for edgeseal's
// own setup at every boot, on disk only sealed under a key derived from the
// unseal key (paths.AdminToken; seal.NewKeyed).
//
// Why keep it: the alternative, Vault's generate-root at every boot, is an
// unauthenticated ceremony on Vault's global state, and every local user
// reaches Vault's TCP listener: a loop of DELETE sys/generate-root/attempt
// makes the ceremony fail at will, after Vault is unsealed and before the
// previous boot's tokens are revoked. Why it costs nothing: whoever can open
// the sealed file holds the unseal key, and with it can make a root token at
// will (generate-root); the sealed file gives no one anything the sealed
// unseal key does not.
const adminTokenPurpose = "edgeseal admin-token v1"

// saveAdminToken seals token under the unseal key and writes it, atomically,
// root's only (0600).
func (b *Bootstrap) saveAdminToken(ctx context.Context, token string) error {
	blob, err := seal.NewKeyed(b.unsealKey, adminTokenPurpose).Seal(ctx, []byte(token))
	if err != nil {
		return fmt.Errorf("cannot seal the admin token: %w", err)
	}
	return fsutil.WriteFileAtomic(b.Paths.AdminToken, blob, 0o600, fsutil.Self)
}

// OpenAdminToken reads the admin token at path and unseals it with the unseal
// key: for `edgeseal root-token`, which makes a short-lived root token with it.
func OpenAdminToken(ctx context.Context, path string, unsealKey []byte) (string, error) {
	blob, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the admin token: %w", err)
	}
	token, err := seal.NewKeyed(unsealKey, adminTokenPurpose).Unseal(ctx, blob)
	if err != nil {
		return "", fmt.Errorf("cannot unseal the admin token %s: %w", path, err)
	}
	defer clear(token)
	return string(token), nil
}

// adminClient returns a client of Vault's admin socket carrying the admin
// token. A device set up by an earlier edgeseal has none yet, and an operator
// may have revoked it: then, and only then, it makes one with generate-root
// and keeps it.
func (b *Bootstrap) adminClient(ctx context.Context) (*api.Client, error) {
	token, err := OpenAdminToken(ctx, b.Paths.AdminToken, b.unsealKey)
	switch {
	case err == nil:
		c, err := b.clientWith(token)
		if err != nil {
			return nil, err
		}
		_, err = c.Auth().Token().LookupSelfWithContext(ctx)
		if err == nil {
			return c, nil
		}
		if !isForbidden(err) {
			return nil, fmt.Errorf("cannot look up the admin token: %w", err)
		}
		b.Log.Warn("Vault refuses the admin token (revoked?); making a new one with generate-root", "path", b.Paths.AdminToken)
	case errors.Is(err, os.ErrNotExist):
		b.say("no admin token yet (a device set up by an earlier edgeseal); making one with generate-root, once", "path", b.Paths.AdminToken)
	case errors.Is(err, seal.ErrCorrupt), errors.Is(err, seal.ErrWrongDevice), errors.Is(err, seal.ErrWrongMethod):
		// Not the unseal key's fault (that one opened): a damaged or foreign
		// file, which the unseal key can replace.
		b.Log.Warn("the admin token does not open with the unseal key; making a new one with generate-root", "path", b.Paths.AdminToken, "error", err)
	default:
		return nil, err
	}
	root, err := GenerateRoot(ctx, b.Client, b.unsealKey)
	if err != nil {
		return nil, err
	}
	if err := b.saveAdminToken(ctx, root); err != nil {
		return nil, err
	}
	return b.clientWith(root)
}
