//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
)

// TestNarrowingTheConfigTakesAccessAwayAtOnce: issue 15's sixth finding. An
// operator takes a shared group from a service, removes a service and moves
// another to a new uid, and does nothing else (no reload, no reboot). Before
// the fix the tokens already out kept the old access, renewable until reboot.
func TestNarrowingTheConfigTakesAccessAwayAtOnce(t *testing.T) {
	ctx := context.Background()
	t.Log("Given three services, each holding its token, one of them reading the shared group telemetry")
	d := newDevice(t, false, func(c *config.Config) {
		c.Services = []config.Service{
			{Name: "reader", UIDs: []uint32{1001}, SharedRead: []string{"telemetry"}},
			{Name: "leaver", UIDs: []uint32{1002}},
			{Name: "mover", UIDs: []uint32{1003}},
		}
	})
	d.start()
	tokens := map[string]string{}
	for i, name := range []string{"reader", "leaver", "mover"} {
		uid := 1001 + i
		out := fmt.Sprintf("/tmp/%s/token.json", name)
		if _, stderr, err := d.m.RunAs(ctx, uid, uid, "edgeseal", "token", "fetch", "--out", out); err != nil {
			t.Fatalf("token fetch as uid %d: %v %s\n%s", uid, err, stderr, d.journal())
		}
		tokens[name] = d.tokenIn(out)
	}
	root := d.rootToken()
	d.vaultOK(root, "kv", "put", "-mount=secret", "edgeseal/shared/telemetry/rate", "hz=10")
	d.vaultOK(tokens["reader"], "kv", "get", "-mount=secret", "edgeseal/shared/telemetry/rate")

	t.Log("When the operator narrows the config: reader loses telemetry, leaver is removed, mover moves to uid 1004")
	d.cfg.Services = []config.Service{
		{Name: "reader", UIDs: []uint32{1001}},
		{Name: "mover", UIDs: []uint32{1004}},
	}
	d.writeConfig()

	t.Log("Then within seconds, with no reload: reader cannot read telemetry, leaver's and mover's tokens are revoked, leaver's policy is gone")
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, readerErr := d.m.Run(ctx, append(d.vaultEnv(tokens["reader"]), "kv", "get", "-mount=secret", "edgeseal/shared/telemetry/rate")...)
		_, _, leaverErr := d.m.Run(ctx, append(d.vaultEnv(tokens["leaver"]), "token", "lookup")...)
		_, _, moverErr := d.m.Run(ctx, append(d.vaultEnv(tokens["mover"]), "token", "lookup")...)
		if readerErr != nil && leaverErr != nil && moverErr != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after the change: reader still reads telemetry %v, leaver's token works %v, mover's token works %v\n%s",
				readerErr == nil, leaverErr == nil, moverErr == nil, d.m.Journal(t, "edgeseal-unseal.service"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	d.vaultDenied(tokens["reader"], "kv", "get", "-mount=secret", "edgeseal/shared/telemetry/rate")
	if out, _, _ := d.m.Run(ctx, append(d.vaultEnv(root), "policy", "list")...); strings.Contains(out, "edgeseal-svc-leaver") {
		t.Errorf("the removed service's policy is still in Vault:\n%s", out)
	}
	t.Log("And reader's token still works for its own secrets: what the config still grants stays")
	d.vaultOK(tokens["reader"], "kv", "put", "-mount=secret", "edgeseal/reader/k", "v=1")
}
