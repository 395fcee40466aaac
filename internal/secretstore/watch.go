package secretstore

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// Status is what the unseal daemon reports in paths.StatusFile, for `edgeseal
// status`. It holds no secret.
type Status struct {
	Version            int        `json:"version"`
	Phase              string     `json:"phase"`
	Sealer             string     `json:"sealer"`
	VaultAddr          string     `json:"vault_addr"`
	Server             string     `json:"server,omitempty"` // "OpenBao" or "Vault", when known (--server)
	BootID             string     `json:"boot_id"`
	Updated            time.Time  `json:"updated"`
	Reunseals          int        `json:"reunseals"`
	LastReunseal       *time.Time `json:"last_reunseal,omitempty"`
	LastReunsealMillis int64      `json:"last_reunseal_ms,omitempty"`
}

// maxStatus bounds the status file read back: a few hundred bytes.
const maxStatus = 64 << 10

// ReadStatus reads the status file the unseal daemon writes (paths.StatusFile).
func ReadStatus(path string) (*Status, error) {
	data, err := fsutil.ReadBounded(path, maxStatus)
	if err != nil {
		return nil, err
	}
	var st Status
	if err := strictjson.Decode(data, maxStatus, &st); err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", path, err)
	}
	return &st, nil
}

func (b *Bootstrap) writeStatus() {
	b.status.Updated = time.Now().UTC()
	data, _ := json.MarshalIndent(b.status, "", "  ")
	if err := fsutil.WriteFileAtomic(b.Paths.StatusFile, data, 0o644, fsutil.Self); err != nil {
		b.Log.Warn("cannot write status file", "error", err)
	}
}

// ReportFailure records, for `edgeseal status`, that the boot sequence failed and
// why (the first line of err, which names no secret).
func (b *Bootstrap) ReportFailure(err error) {
	line, _, _ := strings.Cut(err.Error(), "\n")
	b.status.Phase = "failed: " + line
	b.writeStatus()
}

// keep holds the unseal key for re-unsealing, locked in memory so it is never
// swapped out. It is unsealed from its blob once per boot.
func (b *Bootstrap) keep(key []byte) {
	if err := unix.Mlock(key); err != nil {
		b.Log.Warn("cannot lock the unseal key in memory; it may be swapped out", "error", err)
	}
	b.unsealKey = key
}

// Forget wipes the unseal key held for re-unsealing.
func (b *Bootstrap) Forget() {
	clear(b.unsealKey)
	unix.Munlock(b.unsealKey)
	b.unsealKey = nil
}

// Unseal submits key to Vault if it is sealed; sealed tells whether it was.
func Unseal(ctx context.Context, c *api.Client, key []byte) (sealed bool, err error) {
	st, err := c.Sys().SealStatusWithContext(ctx)
	if err != nil {
		return false, fmt.Errorf("cannot read Vault's seal status: %w", err)
	}
	if !st.Sealed {
		return false, nil
	}
	st, err = c.Sys().UnsealWithContext(ctx, base64.StdEncoding.EncodeToString(key))
	if err != nil {
		return true, fmt.Errorf("cannot unseal Vault: %w", err)
	}
	if st.Sealed {
		return true, fmt.Errorf("cannot unseal Vault: still sealed after the key was accepted (progress %d/%d)", st.Progress, st.T)
	}
	return true, nil
}

// unseal unseals Vault with the key held for this boot, if it is sealed.
func (b *Bootstrap) unseal(ctx context.Context) error {
	sealed, err := Unseal(ctx, b.Client, b.unsealKey)
	if err != nil {
		b.setStatus("cannot unseal Vault")
		return err
	}
	if sealed {
		b.say("unsealed Vault", "addr", b.Client.Address())
	}
	return nil
}

// Watch keeps Vault unsealed until ctx ends: when Vault restarts (a crash, a
// `systemctl restart`) it comes back sealed, and Watch unseals it again within one
// interval plus one unseal. It returns only when ctx is done.
func (b *Bootstrap) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	const (
		up = iota
		unreachable
		sealed
	)
	state, since, lastErr := up, time.Time{}, ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := b.Client.Sys().SealStatusWithContext(rctx)
		cancel()
		switch {
		case err != nil:
			if state == up {
				since = time.Now()
				b.Log.Warn("Vault does not answer; it will be unsealed when it is back", "error", err)
				b.setStatus("Vault unreachable; waiting to unseal it")
			}
			state = unreachable
		case !st.Initialized:
			if state != sealed {
				b.Log.Error("Vault answers but is not initialised: its storage was lost or replaced; not unsealing", "storage", b.Config.Vault.StoragePath)
				b.setStatus("Vault storage lost: not initialised")
			}
			state = sealed
		case st.Sealed:
			if state == up {
				since = time.Now()
			}
			if err := b.unseal(ctx); err != nil {
				// Once per distinct error, not at every tick.
				if msg := err.Error(); msg != lastErr {
					b.Log.Error("cannot unseal Vault again; retrying", "error", err)
					lastErr = msg
				}
				state = sealed
				continue
			}
			mono := MonotonicMicros()
			lastErr = ""
			took := time.Since(since)
			now := time.Now().UTC()
			b.status.Reunseals++
			b.status.LastReunseal = &now
			b.status.LastReunsealMillis = took.Milliseconds()
			b.say("Vault was sealed (it restarted); unsealed it again", "after", took.Round(time.Millisecond).String(), "count", b.status.Reunseals,
				"mono_us", mono)
			b.setStatus("Vault unsealed and set up")
			state = up
		default:
			if state != up {
				b.say("Vault answers and is unsealed")
				b.setStatus("Vault unsealed and set up")
			}
			state = up
		}
	}
}
