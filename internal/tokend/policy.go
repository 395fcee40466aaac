package tokend

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/policysync"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
)

// PolicySync checks, before a service's first token in this run, that its
// policy in Vault is the one the config asks for; if the config changed since
// boot, it asks edgeseal-unseal (which may write policies; the provider may
// not) to apply it, over paths.SyncSocket.
type PolicySync struct {
	Applied string // paths.Policies
	Socket  string // paths.SyncSocket

	mu   sync.Mutex
	good map[string]string // policy name -> digest known to be in Vault
}

// Ensure implements PolicyEnsurer.
func (p *PolicySync) Ensure(ctx context.Context, cfg *config.Config, service string) error {
	name := vaultlayout.ServicePolicyPrefix + service
	want := vaultlayout.ServicePolicyDigest(cfg, service)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.good[name] == want {
		return nil
	}
	if applied, err := vaultlayout.ReadAppliedPolicies(p.Applied); err == nil && applied[name] == want {
		p.remember(name, want)
		return nil
	}
	if err := p.ask(ctx); err != nil {
		return err
	}
	applied, err := vaultlayout.ReadAppliedPolicies(p.Applied)
	if err != nil {
		return err
	}
	if applied[name] != want {
		return fmt.Errorf("edgeseal-unseal applied a config in which policy %s differs from this provider's: was the config changed just now? try again", name)
	}
	p.remember(name, want)
	return nil
}

func (p *PolicySync) remember(name, digest string) {
	if p.good == nil {
		p.good = map[string]string{}
	}
	p.good[name] = digest
}

func (p *PolicySync) ask(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", p.Socket)
	if err != nil {
		return fmt.Errorf("cannot ask edgeseal-unseal to apply the changed config: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, policysync.Request); err != nil {
		return fmt.Errorf("cannot ask edgeseal-unseal to apply the changed config: %w", err)
	}
	r, err := policysync.ReadReply(c)
	if err != nil {
		return fmt.Errorf("edgeseal-unseal: %w", err)
	}
	if !r.OK {
		return fmt.Errorf("edgeseal-unseal cannot apply the changed config: %s", r.Error)
	}
	return nil
}
