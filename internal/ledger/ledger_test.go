package ledger

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/fsutil"
)

func TestSwapReturnsThePreviousTokenAndPersistsPrivately(t *testing.T) {
	path := filepath.Join(t.TempDir(), "issued.json")
	l, err := Open(path, "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	if _, had, err := l.Swap("app-one", Entry{Accessor: "a1", Unit: "app-one.service", Issued: time.Now()}); err != nil || had {
		t.Fatalf("first Swap: had %v, err %v", had, err)
	}
	old, had, err := l.Swap("app-one", Entry{Accessor: "a2", Unit: "app-one.service"})
	if err != nil || !had || old.Accessor != "a1" {
		t.Fatalf("second Swap = %+v, %v, %v; want a1", old, had, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ledger file: %v, %v; want mode 0600", fi, err)
	}
	t.Log("A provider started again in the same boot knows the last token")
	l2, err := Open(path, "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	if old, had, _ := l2.Swap("app-one", Entry{Accessor: "a3"}); !had || old.Accessor != "a2" {
		t.Fatalf("after reopening: %+v, %v; want a2", old, had)
	}
	t.Log("A ledger of another boot is forgotten: that boot's tokens were revoked at setup")
	l3, err := Open(path, "boot-2", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	if _, had, _ := l3.Swap("app-one", Entry{Accessor: "b1"}); had {
		t.Fatal("a token of the previous boot was returned for revocation")
	}
}

func TestOfUnitListsTheTokensOfOneUnit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "issued.json")
	l, _ := Open(path, "b", fsutil.Self)
	l.Swap("one", Entry{Accessor: "a1", Unit: "x.service"})
	l.Swap("two", Entry{Accessor: "a2", Unit: "y.service"})
	l.Swap("three", Entry{Accessor: "a3", Unit: "x.service"})
	got, err := OfUnit(path, "x.service")
	if err != nil || len(got) != 2 || got[0].Service != "one" || got[1].Service != "three" {
		t.Fatalf("OfUnit = %+v, %v", got, err)
	}
	if got, _ := OfUnit(path, "z.service"); len(got) != 0 {
		t.Fatalf("OfUnit(z) = %+v", got)
	}
}

func TestReadRefusesAnotherVersionOrGarbage(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"v2": `{"version":2,"services":{}}`, "garbage": `{{`} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(data), 0o600)
		if _, err := Read(p); err == nil {
			t.Errorf("Read(%s) succeeded", name)
		}
		if _, err := Open(p, "b", fsutil.Self); err == nil {
			t.Errorf("Open(%s) succeeded", name)
		}
	}
}

// A replaced token stays in the ledger until its revocation is confirmed,
// across a restart of the provider: a revocation that failed (Vault sealed
// for a moment) is tried again, not forgotten.
func TestAReplacedTokenStaysPendingUntilRevoked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "issued.json")
	l, err := Open(path, "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	l.Swap("app-one", Entry{Accessor: "a1"})
	l.Swap("app-one", Entry{Accessor: "a2"})
	l.Swap("app-two", Entry{Accessor: "b1"})
	if p := l.PendingRevocations(); len(p) != 1 || p[0].Accessor != "a1" || p[0].Service != "app-one" {
		t.Fatalf("pending = %+v, want a1 of app-one", p)
	}
	l2, err := Open(path, "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	if p := l2.PendingRevocations(); len(p) != 1 || p[0].Accessor != "a1" {
		t.Fatalf("after a restart, pending = %+v, want a1", p)
	}
	if err := l2.Revoked("a1"); err != nil {
		t.Fatal(err)
	}
	l3, _ := Open(path, "boot-1", fsutil.Self)
	if p := l3.PendingRevocations(); len(p) != 0 {
		t.Errorf("pending after Revoked = %+v, want none", p)
	}
}

func TestUnitsListsEachUnitWithATokenOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "issued.json")
	l, err := Open(path, "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	for svc, unit := range map[string]string{"a": "b.service", "c": "b.service", "d": "a.service", "e": ""} {
		if _, _, err := l.Swap(svc, Entry{Accessor: "acc-" + svc, Unit: unit}); err != nil {
			t.Fatal(err)
		}
	}
	units, err := Units(path)
	if err != nil || len(units) != 2 || units[0] != "a.service" || units[1] != "b.service" {
		t.Fatalf("Units = %v, %v; want [a.service b.service]", units, err)
	}
}
