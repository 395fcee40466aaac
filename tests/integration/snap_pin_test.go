//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/snapd"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// TestASnapServicePinnedToARevisionIsRefusedOnceTheSnapIsReplaced: edgeseal
// installed as units (whose provider asks snapd) beside a real snapd, working
// offline. Snaps come from files here (snap install --dangerous): their
// revisions are x1, x2, and they have no publisher, for there is no store. A
// publisher that matches cannot be shown without one; internal/snapd's tests
// read the answer snapd gives for a store's snap.
func TestASnapServicePinnedToARevisionIsRefusedOnceTheSnapIsReplaced(t *testing.T) {
	ctx := context.Background()
	t.Log("Given edgeseal installed as units beside snapd, whose config gives es-consumer.fetch its token at revision x1 only")
	d := snapdDevice(t, func(c *config.Config) {
		c.Services = []config.Service{{Name: "consumer", SnapApps: []string{"es-consumer.fetch"}, SnapRevisions: []string{"x1"}}}
	})
	if rev := d.installConsumer(); rev != "x1" {
		t.Fatalf("the first install is revision %s, want x1", rev)
	}
	// snapd's own answer, as the provider reads it. (Asked inside: snapd
	// refuses a caller whose pid it cannot see, as the host's.)
	answer := d.run("curl", "-sS", "--unix-socket", snapd.Socket, "http://localhost/v2/snaps/es-consumer")
	if sn, err := snapd.Parse(200, []byte(answer)); err != nil || sn != (snapd.Snap{Name: "es-consumer", Revision: "x1"}) {
		t.Fatalf("snapd says of es-consumer %+v, %v; want revision x1, no publisher\n%s", sn, err, answer)
	}

	t.Log("When its app asks, Then it gets its token, and the journal names the revision that matched")
	fetch := func() (string, error) {
		_, stderr, err := d.m.Run(ctx, "snap", "run", "es-consumer.fetch")
		return stderr, err
	}
	if stderr, err := fetch(); err != nil {
		t.Fatalf("snap run es-consumer.fetch: %v\n%s\n%s", err, stderr, d.journal())
	}
	tok := d.tokenIn("/var/snap/es-consumer/x1/token.json")
	d.vaultOK(tok, "kv", "put", "-mount=secret", "edgeseal/consumer/k", "v=1")
	if j := d.m.Journal(t, "edgeseal-tokend.service"); !strings.Contains(j, "snap es-consumer revision x1") {
		t.Errorf("the provider's journal does not name the revision that matched:\n%s", j)
	}

	t.Log("When the snap is installed again (revision x2), Then its app is refused, told the revision, and so is the journal")
	if rev := d.installConsumer(); rev != "x2" {
		t.Fatalf("the second install is revision %s, want x2", rev)
	}
	stderr, err := fetch()
	const why = "snapd reports revision x2 of snap es-consumer"
	if err == nil || !strings.Contains(stderr, "refused") || !strings.Contains(stderr, why) {
		t.Fatalf("snap run es-consumer.fetch at x2: %v, %q; want a refusal saying %q", err, stderr, why)
	}
	if j := d.m.Journal(t, "edgeseal-tokend.service"); !strings.Contains(j, why) {
		t.Errorf("the provider's journal does not say why x2 was refused:\n%s", j)
	}
	// The token x1 was given stays: nothing changed the config.
	d.vaultOK(tok, "token", "lookup")

	t.Log("When the config changes elsewhere (a service added), Then the token x1 holds stays: the ledger recorded its revision, which the pin allows")
	d.cfg.Services = append(d.cfg.Services, config.Service{Name: "other", UIDs: []uint32{1005}})
	d.writeConfig()
	d.waitApplied("services=2")
	d.vaultOK(tok, "token", "lookup")

	t.Log("When the config also pins a publisher (x2 allowed too), Then edgeseal-unseal revokes the token x1 holds, and the app is refused: it has no publisher")
	d.cfg.Services[0].SnapRevisions = []string{"x1", "x2"}
	d.cfg.Services[0].SnapPublishers = []string{"canonical"}
	d.writeConfig()
	c := d.vaultClient()
	c.SetToken(tok)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.Auth().Token().LookupSelf()
		if err != nil && strings.Contains(err.Error(), "permission denied") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after the change the token x1 holds still works (%v)\n%s", err, d.m.Journal(t, "edgeseal-unseal.service"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if j := d.m.Journal(t, "edgeseal-unseal.service"); !strings.Contains(j, "revoked a service token") || !strings.Contains(j, "snap app es-consumer.fetch") {
		t.Errorf("edgeseal-unseal's journal does not say it revoked the consumer's token:\n%s", j)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		// The provider reads the config again when it changes.
		stderr, err = fetch()
		if err != nil && strings.Contains(stderr, "has no publisher") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snap run es-consumer.fetch with a publisher pin: %v, %q; want a refusal saying it has no publisher", err, stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, _, err := d.m.Run(ctx, "test", "-e", "/var/snap/es-consumer/x2/token.json"); err == nil {
		t.Error("a token file was written for the refused app")
	}
}

// waitApplied waits until edgeseal-unseal's journal says it applied a config
// whose line holds want (e.g. "services=2").
func (d *device) waitApplied(want string) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, line := range strings.Split(d.m.Journal(d.t, "edgeseal-unseal.service"), "\n") {
			if strings.Contains(line, "applied the service policies of the config") && strings.Contains(line, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("edgeseal-unseal did not apply the config (%s) within 20s:\n%s", want, d.m.Journal(d.t, "edgeseal-unseal.service"))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// snapdDevice boots a device with edgeseal installed as units (started) and
// snapd working offline beside it, its config changed by edit. Its tokens
// outlive their holders' units: `snap run` makes a scope that ends with the
// fetch.
func snapdDevice(tb testing.TB, edit func(*config.Config)) *device {
	tb.Helper()
	binds := snapdBinds(tb)
	d := newDevice(tb, false, func(c *config.Config) {
		c.Tokens.RevokeOnStop = false
		edit(c)
	}, func(d *device, opts *testbed.MachineOptions) {
		opts.Binds = append(opts.Binds, binds...)
		opts.CPU = "0" // for snap-confine: see testbed.MachineOptions.CPU
	})
	d.start()
	d.run("/srv/lib/snapd-offline.sh")
	return d
}

// installConsumer installs the consumer snap (again) and returns its new
// revision. Its app asks at its content plugs' targets, which edgeseal's snap
// would fill: here the socket's leads to the units install's socket directory
// (the test bed's kernel enforces no AppArmor, which would ask for a plug),
// and the CA's holds a copy of the per-boot CA.
func (d *device) installConsumer() string {
	d.t.Helper()
	d.run("sh", "-c", "snap install --dangerous /srv/snaps/es-consumer_*.snap")
	rev := strings.TrimSpace(d.run("readlink", "/snap/es-consumer/current"))
	d.run("sh", "-c", "cd /var/snap/es-consumer/current && rm -rf edgeseal edgeseal-ca token.json && ln -s /run/edgeseal edgeseal && "+
		"mkdir edgeseal-ca && cp /run/edgeseal/pki/ca.crt edgeseal-ca/")
	return rev
}
