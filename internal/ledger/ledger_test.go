package ledger

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	for name, data := range map[string]string{
		"v3":             `{"version":3,"services":{}}`,
		"garbage":        `{{`,
		"v2-bad-record":  "{\"version\":2,\"boot_id\":\"b\"}\n{\"issued\":{\"service\":\"s\",\"accessor\":\"a\"},\"revoked\":\"a\"}\n",
		"v2-torn-middle": "{\"version\":2,\"boot_id\":\"b\"}\n{\"issued\":{\"serv\n{\"revoked\":\"a\"}\n",
	} {
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

// A write cut short (the provider killed in the middle of one) leaves a last
// line without its newline: readers ignore it, and the provider's next start
// writes the file again without it.
func TestATornLastLineIsIgnoredAndDroppedAtTheNextOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "issued.json")
	l, err := Open(path, "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	l.Swap("app-one", Entry{Accessor: "a1"})
	l.Close()
	fh, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	fh.WriteString(`{"issued":{"service":"app-one","accessor":"a2"`)
	fh.Close()
	f, err := Read(path)
	if err != nil || f.Services["app-one"].Accessor != "a1" {
		t.Fatalf("Read = %+v, %v; want a1 and the torn line ignored", f, err)
	}
	l, err = Open(path, "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	if old, had, err := l.Swap("app-one", Entry{Accessor: "a3"}); err != nil || !had || old.Accessor != "a1" {
		t.Fatalf("Swap after reopening = %+v, %v, %v; want a1", old, had, err)
	}
	if f, err := Read(path); err != nil || f.Services["app-one"].Accessor != "a3" || len(f.Pending) != 1 {
		t.Fatalf("Read = %+v, %v; want a3 with a1 pending", f, err)
	}
}

// The file grows by a line per change and is written again whole when it
// has grown enough; what it says is the same before and after.
func TestTheLedgerIsCompactedWithoutLosingAnything(t *testing.T) {
	defer func(g int64) { compactGrowth = g }(compactGrowth)
	compactGrowth = 2048
	path := filepath.Join(t.TempDir(), "issued.json")
	l, err := Open(path, "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if _, _, err := l.Swap(fmt.Sprintf("svc-%d", i%7), Entry{Accessor: fmt.Sprintf("acc-%d", i), UID: uint32(i)}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if p := l.PendingRevocations(); len(p) > 0 {
				if err := l.Revoked(p[0].Accessor); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	data, _ := os.ReadFile(path)
	if lines := bytes.Count(data, []byte("\n")); lines >= 500 {
		t.Errorf("the file has %d lines for 500 tokens and their revocations: not compacted", lines)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after compaction, want 0600", fi.Mode().Perm())
	}
	f, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Services) != 7 || f.Services["svc-3"].Accessor != "acc-493" {
		t.Errorf("services = %+v", f.Services)
	}
	if got, want := f.Pending, l.PendingRevocations(); !slices.EqualFunc(got, want, func(a, b Pending) bool { return a.Accessor == b.Accessor }) {
		t.Errorf("pending read back = %v, in memory %v", got, want)
	}
}

// A provider updated without a reboot finds the previous version's file.
func TestAVersion1LedgerIsStillRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "issued.json")
	os.WriteFile(path, []byte(`{
  "version": 1,
  "boot_id": "boot-1",
  "services": {"app-one": {"accessor": "a1", "pid": 7, "uid": 1, "gid": 1, "issued": "2026-12-02T10:00:00Z"}},
  "pending": [{"service": "app-one", "accessor": "a0", "since": "2026-12-02T10:00:00Z"}]
}`), 0o600)
	l, err := Open(path, "boot-1", fsutil.Self)
	if err != nil {
		t.Fatal(err)
	}
	if p := l.PendingRevocations(); len(p) != 1 || p[0].Accessor != "a0" {
		t.Fatalf("pending = %+v", p)
	}
	if old, had, _ := l.Swap("app-one", Entry{Accessor: "a2"}); !had || old.Accessor != "a1" {
		t.Fatalf("Swap = %+v, %v; want a1", old, had)
	}
	if f, err := Read(path); err != nil || f.Version != Version || len(f.Pending) != 2 {
		t.Fatalf("after Open, Read = %+v, %v; want version %d with a0 and a1 pending", f, err, Version)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("{\"version\":2,\"boot_id\":\"b\"}\n{\"issued\":{\"service\":\"s\",\"accessor\":\"a\"}}\n{\"issued\":{\"service\":\"s\",\"accessor\":\"b\"}}\n{\"revoked\":\"a\"}\n"))
	f.Add([]byte(`{"version":1,"boot_id":"b","services":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		lf, err := Parse(data)
		if err != nil {
			return
		}
		if lf.Services == nil || len(lf.Pending) > maxPending {
			t.Fatalf("Parse = %+v", lf)
		}
	})
}
