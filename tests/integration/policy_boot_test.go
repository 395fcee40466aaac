//go:build integration

package integration

import (
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// A boot writes only the policies the server does not hold as the config
// says, and skips reading those its storage shows untouched since a boot
// found them right: this story checks, on each server, that the storage
// files edgeseal stamps are the ones the server writes (else nothing would
// be skipped, or worse, a change missed).
func TestABootPutsRightOnlyThePoliciesChangedOnTheServer(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv testbed.Server) {
		t.Log("Given a device with three services, booted twice")
		d := newDevice(t, false, func(c *config.Config) { c.Services = manyServices(3) }, withServer(srv))
		d.start()
		first := d.timingLine("edgeseal-unseal.service", "boot timing", nil)
		if first["policies_written"] != first["policies"] {
			t.Fatalf("the first boot wrote %s of %s policies, want all", first["policies_written"], first["policies"])
		}
		d.m.Reboot(t)
		d.start()
		d.m.Reboot(t)
		d.start()
		l := d.timingLine("edgeseal-unseal.service", "boot timing", nil)
		if l["policies_read"] != "0" || l["policies_written"] != "0" {
			t.Fatalf("a boot with nothing changed read %s and wrote %s policies, want none: are the stamped files the server's?",
				l["policies_read"], l["policies_written"])
		}

		t.Log("When an operator with a root token changes one service's policy and deletes another's, and the device reboots")
		changed, deleted := vaultlayout.ServicePolicyPrefix+"svc0000", vaultlayout.ServicePolicyPrefix+"svc0001"
		c := d.vaultClient()
		c.SetToken(d.rootToken())
		if err := c.Sys().PutPolicy(changed, `path "secret/*" { capabilities = ["read", "list"] }`); err != nil {
			t.Fatal(err)
		}
		if err := c.Sys().DeletePolicy(deleted); err != nil {
			t.Fatal(err)
		}
		d.m.Reboot(t)
		d.start()

		t.Log("Then the boot wrote both back as the config says, and only them")
		l = d.timingLine("edgeseal-unseal.service", "boot timing", nil)
		if l["policies_written"] != "2" || l["policies_read"] != "1" {
			t.Errorf("the boot read %s and wrote %s policies, want the changed one read and both written", l["policies_read"], l["policies_written"])
		}
		c = d.vaultClient()
		c.SetToken(d.rootToken())
		want := vaultlayout.Policies(d.cfg)
		for _, name := range []string{changed, deleted} {
			got, err := c.Sys().GetPolicy(name)
			if err != nil || got != want[name] {
				t.Errorf("policy %s after the boot: %q, %v; want the config's\n%s", name, got, err, want[name])
			}
		}
	})
}
