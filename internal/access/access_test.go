package access

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/peer"
)

var matchServices = []config.Service{
	{Name: "app-one", Units: []string{"app-one.service"}, UIDs: []uint32{1001}},
	{Name: "collector", SnapApps: []string{"collector.daemon"}, GIDs: []uint32{2000}},
	{Name: "by-uid", UIDs: []uint32{1002}},
	{Name: "by-gid", GIDs: []uint32{2001}},
	{Name: "other-gid", GIDs: []uint32{1002}},
}

func TestMatchPrefersTheMostSpecificRule(t *testing.T) {
	for _, tc := range []struct {
		name     string
		id       peer.Identity
		service  string
		wantRule string
	}{
		{"unit", peer.Identity{PID: 9, UID: 5, GID: 5, Unit: "app-one.service"}, "app-one", "unit app-one.service"},
		{"unit beats another service's gid", peer.Identity{PID: 9, UID: 5, GID: 2001, Unit: "app-one.service"}, "app-one", "unit app-one.service"},
		{"snap app", peer.Identity{PID: 9, UID: 5, GID: 5, Unit: "snap.collector.daemon.service", SnapApp: "collector.daemon"}, "collector", "snap app collector.daemon"},
		{"uid beats gid", peer.Identity{PID: 9, UID: 1002, GID: 2001, Unit: "session-1.scope"}, "by-uid", "uid 1002"},
		{"gid", peer.Identity{PID: 9, UID: 7, GID: 2001}, "by-gid", "gid 2001"},
		{"uid of a service that also has a unit", peer.Identity{PID: 9, UID: 1001, GID: 7, Unit: "cron.service"}, "app-one", "uid 1001"},
		{"LoadCredential for a unit", peer.Identity{PID: 1, Credential: &peer.CredentialRequest{Unit: "app-one.service", ID: "vault-token"}}, "app-one", "unit app-one.service"},
		{"LoadCredential for a snap daemon", peer.Identity{PID: 1, Credential: &peer.CredentialRequest{Unit: "snap.collector.daemon.service", ID: "t"}}, "collector", "snap app collector.daemon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, rule, err := Match(matchServices, tc.id, "")
			if err != nil {
				t.Fatalf("Match: %v", err)
			}
			if svc.Name != tc.service || rule != tc.wantRule {
				t.Fatalf("Match = %s by %q, want %s by %q", svc.Name, rule, tc.service, tc.wantRule)
			}
		})
	}
}

func TestMatchRefusesAnIdentityNoRuleNames(t *testing.T) {
	for _, id := range []peer.Identity{
		{PID: 9, UID: 4242, GID: 4242, Unit: "evil.service"},
		{PID: 9, UID: 0, GID: 0, Unit: "cron.service"},
		{PID: 1, Credential: &peer.CredentialRequest{Unit: "evil.service", ID: "vault-token"}},
		// A LoadCredential= request matches by its unit only, not by the uid of PID 1.
		{PID: 1, UID: 1001, Credential: &peer.CredentialRequest{Unit: "evil.service", ID: "vault-token"}},
	} {
		if svc, _, err := Match(matchServices, id, ""); !errors.Is(err, ErrNoRule) {
			t.Errorf("Match(%s) = %v, %v; want ErrNoRule", id, svc, err)
		}
	}
}

func TestMatchRefusesAmbiguityUnlessTheCallerNamesTheService(t *testing.T) {
	// uid 1002 is by-uid's; gid 1002 is other-gid's: different levels, not
	// ambiguous. Two services at one level are.
	services := append([]config.Service{}, matchServices...)
	services = append(services, config.Service{Name: "twin", GIDs: []uint32{3000}}, config.Service{Name: "twin2", GIDs: []uint32{3000}})
	id := peer.Identity{PID: 9, UID: 7, GID: 3000}
	_, _, err := Match(services, id, "")
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "twin, twin2") {
		t.Fatalf("Match = %v, want ErrAmbiguous naming both services", err)
	}
	svc, rule, err := Match(services, id, "twin2")
	if err != nil || svc.Name != "twin2" || rule != "gid 3000" {
		t.Fatalf("Match(service twin2) = %v %q %v", svc, rule, err)
	}
}

func TestMatchOfANamedServiceNeedsOneOfItsRules(t *testing.T) {
	id := peer.Identity{PID: 9, UID: 1002, GID: 1002}
	if svc, _, err := Match(matchServices, id, "app-one"); !errors.Is(err, ErrNoRule) {
		t.Fatalf("Match(app-one) for uid 1002 = %v, %v; want ErrNoRule", svc, err)
	}
	if _, _, err := Match(matchServices, id, "nosuch"); !errors.Is(err, ErrNoRule) || !strings.Contains(err.Error(), `no service "nosuch"`) {
		t.Fatalf("Match(nosuch) = %v", err)
	}
	svc, rule, err := Match(matchServices, id, "other-gid")
	if err != nil || svc.Name != "other-gid" || rule != "gid 1002" {
		t.Fatalf("Match(other-gid) = %v %q %v", svc, rule, err)
	}
}

func TestAskingForAServiceTellsNothingOfWhetherItExists(t *testing.T) {
	services := []config.Service{{Name: "billing", UIDs: []uint32{1002}}}
	id := peer.Identity{PID: 9, UID: 4242, GID: 4242}
	_, _, errExists := Match(services, id, "billing")
	_, _, errAbsent := Match(services, id, "nosuch")
	if !errors.Is(errExists, ErrNoRule) || !errors.Is(errAbsent, ErrNoRule) {
		t.Fatalf("errors %v, %v; want ErrNoRule", errExists, errAbsent)
	}
	if a, b := strings.ReplaceAll(errExists.Error(), "billing", "X"), strings.ReplaceAll(errAbsent.Error(), "nosuch", "X"); a != b {
		t.Errorf("an existing and an absent service are refused differently: %q, %q", errExists, errAbsent)
	}
}

func TestAServiceThatPinsItsExecutableTakesOnlyThoseItPins(t *testing.T) {
	good, other := strings.Repeat("a", 64), strings.Repeat("b", 64)
	services := []config.Service{
		{Name: "pinned", Units: []string{"pinned.service"}, UIDs: []uint32{1001}, ExeSHA256: []string{good}},
		{Name: "free", Units: []string{"free.service"}},
	}
	unit := peer.Identity{PID: 9, UID: 5, GID: 5, Unit: "pinned.service"}
	for _, tc := range []struct {
		name    string
		id      peer.Identity
		want    string
		wantErr error
		errText string
	}{
		{"the executable not read yet", unit, "", ErrExecutable, "was not read"},
		{"another executable", peer.Identity{PID: 9, UID: 5, GID: 5, Unit: "pinned.service", Exe: other}, "", ErrExecutable, "runs an executable with SHA-256 " + other},
		{"the pinned executable", peer.Identity{PID: 9, UID: 5, GID: 5, Unit: "pinned.service", Exe: good}, "pinned", nil, ""},
		{"by uid, another executable", peer.Identity{PID: 9, UID: 1001, GID: 5, Exe: other}, "", ErrExecutable, "by uid 1001"},
		{"LoadCredential= for the pinned unit", peer.Identity{PID: 1, Credential: &peer.CredentialRequest{Unit: "pinned.service", ID: "t"}}, "", ErrExecutable, "LoadCredential="},
		{"a service without pins, any executable", peer.Identity{PID: 9, UID: 5, GID: 5, Unit: "free.service", Exe: other}, "free", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, rule, err := Match(services, tc.id, "")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("Match = %v, %q, %v; want %v saying %q", svc, rule, err, tc.wantErr, tc.errText)
				}
				return
			}
			if err != nil || svc.Name != tc.want {
				t.Fatalf("Match = %v, %q, %v; want %s", svc, rule, err, tc.want)
			}
			if tc.want == "pinned" && !strings.Contains(rule, "executable "+good[:12]) {
				t.Errorf("rule %q does not name the executable", rule)
			}
		})
	}
	t.Run("asked for by name", func(t *testing.T) {
		id := unit
		id.Exe = other
		if _, _, err := Match(services, id, "pinned"); !errors.Is(err, ErrExecutable) {
			t.Errorf("Match(want pinned) = %v, want ErrExecutable", err)
		}
	})
}

func TestAServiceThatPinsItsUnitFilesTakesOnlyUnitsLoadedFromThem(t *testing.T) {
	fragment, dropIn := "/etc/systemd/system/pinned.service", "/etc/systemd/system/pinned.service.d/10-limits.conf"
	services := []config.Service{
		{Name: "pinned", Units: []string{"pinned.service"}, UIDs: []uint32{1001}, UnitFiles: []string{fragment, dropIn}},
	}
	unit := peer.Identity{PID: 9, UID: 5, GID: 5, Unit: "pinned.service"}
	with := func(id peer.Identity, f *peer.UnitFiles) peer.Identity { id.UnitFiles = f; return id }
	credential := peer.Identity{PID: 1, Credential: &peer.CredentialRequest{Unit: "pinned.service", ID: "t"}}
	for _, tc := range []struct {
		name    string
		id      peer.Identity
		ok      bool
		errText string
	}{
		{"the files not read yet", unit, false, "were not read"},
		{"the pinned unit file", with(unit, &peer.UnitFiles{Fragment: fragment}), true, ""},
		{"the pinned unit file and drop-in", with(unit, &peer.UnitFiles{Fragment: fragment, DropIns: []string{dropIn}}), true, ""},
		{"a unit file elsewhere", with(unit, &peer.UnitFiles{Fragment: "/run/systemd/system/pinned.service"}), false, "loaded its unit from /run/systemd/system/pinned.service"},
		{"a transient unit", with(unit, &peer.UnitFiles{Fragment: "/run/systemd/transient/pinned.service"}), false, "/run/systemd/transient"},
		{"a unit without a unit file", with(unit, &peer.UnitFiles{}), false, "has no unit file"},
		{"a drop-in not listed", with(unit, &peer.UnitFiles{Fragment: fragment, DropIns: []string{dropIn, "/run/systemd/system/pinned.service.d/zz.conf"}}), false, "drop-in /run/systemd/system/pinned.service.d/zz.conf"},
		{"the drop-in as the unit file", with(unit, &peer.UnitFiles{Fragment: dropIn}), false, "loaded its unit from"},
		{"by uid, a unit file elsewhere", with(peer.Identity{PID: 9, UID: 1001, GID: 5, Unit: "cron.service"}, &peer.UnitFiles{Fragment: "/usr/lib/systemd/system/cron.service"}), false, "by uid 1001"},
		{"LoadCredential=, not read", credential, false, "were not read"},
		{"LoadCredential=, the pinned unit file", with(credential, &peer.UnitFiles{Fragment: fragment}), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, rule, err := Match(services, tc.id, "")
			if !tc.ok {
				if !errors.Is(err, ErrUnitFile) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("Match = %v, %q, %v; want ErrUnitFile saying %q", svc, rule, err, tc.errText)
				}
				var unread *Unread
				if errors.As(err, &unread) != (tc.id.UnitFiles == nil) {
					t.Errorf("Match's error %v is an *Unread: %v, want %v", err, !(tc.id.UnitFiles == nil), tc.id.UnitFiles == nil)
				}
				return
			}
			if err != nil || svc.Name != "pinned" || !strings.Contains(rule, "unit file "+fragment) {
				t.Fatalf("Match = %v, %q, %v; want pinned, by its unit file", svc, rule, err)
			}
		})
	}
}

func TestAServiceThatPinsBothIsReadOneAtATime(t *testing.T) {
	sum := strings.Repeat("a", 64)
	services := []config.Service{{Name: "both", Units: []string{"both.service"}, ExeSHA256: []string{sum}, UnitFiles: []string{"/etc/systemd/system/both.service"}}}
	id := peer.Identity{PID: 9, UID: 5, GID: 5, Unit: "both.service"}
	var unread *Unread
	if _, _, err := Match(services, id, ""); !errors.As(err, &unread) || unread.Pin != PinExecutable || !errors.Is(err, ErrExecutable) {
		t.Fatalf("Match = %v, want the executable unread first", err)
	}
	id.Exe = sum
	if _, _, err := Match(services, id, ""); !errors.As(err, &unread) || unread.Pin != PinUnitFiles || errors.Is(err, ErrExecutable) {
		t.Fatalf("Match = %v, want the unit files unread next", err)
	}
	id.UnitFiles = &peer.UnitFiles{Fragment: "/etc/systemd/system/both.service"}
	if svc, rule, err := Match(services, id, ""); err != nil || svc.Name != "both" || !strings.Contains(rule, "executable "+sum[:12]+", unit file ") {
		t.Fatalf("Match = %v, %q, %v", svc, rule, err)
	}
}

func TestAServiceThatPinsItsSnapTakesOnlyThePinnedRevisionsAndPublishers(t *testing.T) {
	const publisher = "2rsYZu6kqYVFsSejExu4YENdXQEO40Xb"
	services := []config.Service{
		{Name: "revision", SnapApps: []string{"collector.daemon"}, UIDs: []uint32{1001}, SnapRevisions: []string{"42", "x1"}},
		{Name: "publisher", SnapApps: []string{"ingest.daemon"}, GIDs: []uint32{584788}, SnapPublishers: []string{publisher, "canonical"}},
		{Name: "both", SnapApps: []string{"relay.daemon"}, SnapRevisions: []string{"7"}, SnapPublishers: []string{publisher}},
	}
	app := func(a string, sn *peer.SnapInfo) peer.Identity {
		return peer.Identity{PID: 9, UID: 5, GID: 5, Unit: "snap." + a + ".service", SnapApp: a, Snap: sn}
	}
	credential := func(unit string, sn *peer.SnapInfo) peer.Identity {
		return peer.Identity{PID: 1, Credential: &peer.CredentialRequest{Unit: unit, ID: "t"}, Snap: sn}
	}
	for _, tc := range []struct {
		name    string
		id      peer.Identity
		want    string // the service, "" for a refusal
		errText string // for a refusal; the rule's end otherwise
	}{
		{"the snap not read yet", app("collector.daemon", nil), "", "was not read"},
		{"a pinned store revision", app("collector.daemon", &peer.SnapInfo{Name: "collector", Revision: "42"}), "revision", "snap collector revision 42"},
		{"a pinned local revision", app("collector.daemon", &peer.SnapInfo{Name: "collector", Revision: "x1"}), "revision", "snap collector revision x1"},
		{"another revision", app("collector.daemon", &peer.SnapInfo{Name: "collector", Revision: "x2"}), "", "reports revision x2 of snap collector"},
		{"a process in no snap, by uid", peer.Identity{PID: 9, UID: 1001, GID: 5, Unit: "cron.service"}, "", "runs in no snap"},
		{"what was read is of another snap", app("collector.daemon", &peer.SnapInfo{Name: "other", Revision: "42"}), "", "of snap other"},
		{"a pinned publisher", app("ingest.daemon", &peer.SnapInfo{Name: "ingest", Revision: "3", Publisher: publisher}), "publisher", "revision 3 by " + publisher},
		{"another publisher", app("ingest.daemon", &peer.SnapInfo{Name: "ingest", Revision: "3", Publisher: "mallory"}), "", "is published by mallory"},
		{"a local install, no publisher", app("ingest.daemon", &peer.SnapInfo{Name: "ingest", Revision: "x1"}), "", "has no publisher"},
		{"both pinned, both right", app("relay.daemon", &peer.SnapInfo{Name: "relay", Revision: "7", Publisher: publisher}), "both", "revision 7 by " + publisher},
		{"both pinned, the revision wrong", app("relay.daemon", &peer.SnapInfo{Name: "relay", Revision: "8", Publisher: publisher}), "", "reports revision 8"},
		{"both pinned, the publisher wrong", app("relay.daemon", &peer.SnapInfo{Name: "relay", Revision: "7", Publisher: "canonical"}), "", "published by canonical"},
		// Found by the review of this pin: a uid or gid rule (snap_daemon's,
		// say) matches any snap's daemon of that account; its snap's revision
		// or publisher must not stand for the service's snap.
		{"another snap's daemon by uid, at a pinned revision", peer.Identity{PID: 9, UID: 1001, GID: 5, Unit: "snap.intruder.daemon.service", SnapApp: "intruder.daemon", Snap: &peer.SnapInfo{Name: "intruder", Revision: "x1"}}, "", "its snap intruder is not one the service's snap_apps or units name"},
		{"another snap's daemon by gid, of a pinned publisher", peer.Identity{PID: 9, UID: 5, GID: 584788, Unit: "snap.intruder.daemon.service", SnapApp: "intruder.daemon", Snap: &peer.SnapInfo{Name: "intruder", Revision: "7", Publisher: "canonical"}}, "", "its snap intruder is not one"},
		{"another snap's daemon by uid, not read yet", peer.Identity{PID: 9, UID: 1001, GID: 5, Unit: "snap.intruder.daemon.service", SnapApp: "intruder.daemon"}, "", "its snap intruder is not one"},
		{"an instance of the snap", app("collector_two.daemon", &peer.SnapInfo{Name: "collector_two", Revision: "42"}), "", "no rule"},
		{"LoadCredential=, not read", credential("snap.collector.daemon.service", nil), "", "was not read"},
		{"LoadCredential=, a pinned revision", credential("snap.collector.daemon.service", &peer.SnapInfo{Name: "collector", Revision: "x1"}), "revision", "revision x1"},
		{"LoadCredential=, another revision", credential("snap.collector.daemon.service", &peer.SnapInfo{Name: "collector", Revision: "43"}), "", "reports revision 43"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, rule, err := Match(services, tc.id, "")
			if tc.want == "" {
				if tc.errText == "no rule" {
					if !errors.Is(err, ErrNoRule) {
						t.Fatalf("Match = %v, %q, %v; want ErrNoRule", svc, rule, err)
					}
					return
				}
				if !errors.Is(err, ErrSnap) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("Match = %v, %q, %v; want ErrSnap saying %q", svc, rule, err, tc.errText)
				}
				var unread *Unread
				if errors.As(err, &unread) != (tc.errText == "was not read") {
					t.Errorf("Match's error %v: is an *Unread %v, want %v", err, !(tc.errText == "was not read"), tc.errText == "was not read")
				}
				return
			}
			if err != nil || svc.Name != tc.want || !strings.HasSuffix(rule, tc.errText) {
				t.Fatalf("Match = %v, %q, %v; want %s, the rule ending %q", svc, rule, err, tc.want, tc.errText)
			}
		})
	}
}
