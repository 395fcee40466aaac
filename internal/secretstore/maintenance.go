package secretstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
)

// MaxMaintenanceTTL bounds a maintenance root token: long enough for a
// repair, short enough that a forgotten one is not a standing key to
// everything.
const MaxMaintenanceTTL = 24 * time.Hour

// ErrMaintenanceTTL: a maintenance token's lifetime out of bounds.
var ErrMaintenanceTTL = errors.New("a maintenance root token lives 1m to 24h")

// MaintenanceToken is a root token made for an operator (`edgeseal
// root-token`): never stored, not renewable, expiring after its TTL.
type MaintenanceToken struct {
	Token, Accessor string
}

// MaintenanceRootToken makes a root token that expires after ttl (1m to
// MaxMaintenanceTTL), on the server's admin socket, with edgeseal's admin
// token, which only the unseal key opens: the sealed key is unsealed with
// cfg's sealer (as root), the admin token opened, the token made as an orphan
// with the server's root policy, and the key wiped. warn takes the sealer's
// warnings.
func MaintenanceRootToken(ctx context.Context, p paths.Paths, cfg *config.Config, ttl time.Duration, warn func(string)) (MaintenanceToken, error) {
	if ttl < time.Minute || ttl > MaxMaintenanceTTL {
		return MaintenanceToken{}, fmt.Errorf("%w: %s", ErrMaintenanceTTL, ttl)
	}
	blob, err := os.ReadFile(p.SealedKey)
	if err != nil {
		return MaintenanceToken{}, fmt.Errorf("cannot read the sealed unseal key (run as root, after the first boot): %w", err)
	}
	sealer, err := seal.New(cfg.Seal, warn)
	if err != nil {
		return MaintenanceToken{}, err
	}
	key, err := sealer.Unseal(ctx, blob)
	if err != nil {
		return MaintenanceToken{}, fmt.Errorf("cannot unseal the unseal key from %s: %w", p.SealedKey, err)
	}
	defer clear(key)
	admin, err := OpenAdminToken(ctx, p.AdminToken, key)
	if err != nil {
		return MaintenanceToken{}, fmt.Errorf("%w (it is made when edgeseal-unseal.service sets Vault up)", err)
	}
	c, err := vaultclient.New("unix://"+p.VaultAdmin, nil)
	if err != nil {
		return MaintenanceToken{}, err
	}
	c.SetToken(admin)
	defer c.ClearToken()
	s, err := c.Auth().Token().CreateOrphanWithContext(ctx, &api.TokenCreateRequest{
		Policies:       []string{"root"},
		TTL:            ttl.String(),
		ExplicitMaxTTL: ttl.String(),
		Renewable:      new(bool),
		DisplayName:    "edgeseal-maintenance",
		Metadata:       map[string]string{"edgeseal": "root-token"},
	})
	if err != nil {
		return MaintenanceToken{}, fmt.Errorf("cannot create the maintenance root token: %w", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return MaintenanceToken{}, errors.New("cannot create the maintenance root token: the server's answer holds no token")
	}
	return MaintenanceToken{Token: s.Auth.ClientToken, Accessor: s.Auth.Accessor}, nil
}
