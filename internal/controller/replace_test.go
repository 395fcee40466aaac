package controller

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/paths"
)

// enrolledDevice is a device enrolled once: its enrolment (the fixture) and a
// client key whose text says which enrolment it belongs to.
func enrolledDevice(t *testing.T) (paths.Paths, *Enrolment) {
	t.Helper()
	p := paths.New(t.TempDir())
	e, err := ParseEnrolment(mustRead(t, fixture))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeEnrolment(p, e); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p.ClientKey, "old key")
	return p, e
}

// assertOld checks the device holds its first enrolment, with its own key,
// and nothing set aside.
func assertOld(t *testing.T, p paths.Paths, want *Enrolment) {
	t.Helper()
	got, err := LoadEnrolment(p)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("LoadEnrolment: %+v, %v; want the first enrolment back", got, err)
	}
	if key, _ := os.ReadFile(p.ClientKey); string(key) != "old key" {
		t.Errorf("client key %q, want the first enrolment's", key)
	}
	if left, _ := filepath.Glob(filepath.Join(p.Controller, "*"+replacedSuffix)); len(left) > 0 {
		t.Errorf("files still set aside: %v", left)
	}
}

func TestAReplacementThatFailsPutsTheEnrolmentBack(t *testing.T) {
	p, old := enrolledDevice(t)
	r, err := SetAside(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p.Enrolment); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the enrolment is still in place while set aside: %v", err)
	}
	writeFile(t, p.ClientKey, "new key of a failed enrolment")
	if err := r.Finish(false); err != nil {
		t.Fatal(err)
	}
	assertOld(t, p, old)
}

func TestAReplacementCutShortIsPutRightByTheNextLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		// cut leaves the files as a process killed at that point would
		cut func(t *testing.T, p paths.Paths)
	}{
		{"after the enrolment was set aside, before its key", func(t *testing.T, p paths.Paths) {
			os.Rename(p.Enrolment, p.Enrolment+replacedSuffix)
		}},
		{"after both were set aside", func(t *testing.T, p paths.Paths) {
			if _, err := SetAside(p); err != nil {
				t.Fatal(err)
			}
		}},
		{"after the new enrolment wrote its client key", func(t *testing.T, p paths.Paths) {
			if _, err := SetAside(p); err != nil {
				t.Fatal(err)
			}
			writeFile(t, p.ClientKey, "new key")
		}},
		{"while a failed one was put back, its key back first", func(t *testing.T, p paths.Paths) {
			if _, err := SetAside(p); err != nil {
				t.Fatal(err)
			}
			os.Rename(p.ClientKey+replacedSuffix, p.ClientKey)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, old := enrolledDevice(t)
			tc.cut(t, p)
			assertOld(t, p, old)
		})
	}
}

func TestAReplacementCutShortAfterTheNewEnrolmentKeepsTheNewOne(t *testing.T) {
	p, old := enrolledDevice(t)
	if _, err := SetAside(p); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p.ClientKey, "new key")
	newer := *old
	newer.Enrolled = old.Enrolled.Add(time.Hour)
	if err := writeEnrolment(p, &newer); err != nil {
		t.Fatal(err)
	}
	// Killed before Finish(true): the next load keeps the new enrolment and
	// drops what was set aside.
	got, err := LoadEnrolment(p)
	if err != nil || !got.Enrolled.Equal(newer.Enrolled) {
		t.Fatalf("LoadEnrolment: %+v, %v; want the new enrolment", got, err)
	}
	if key, _ := os.ReadFile(p.ClientKey); string(key) != "new key" {
		t.Errorf("client key %q, want the new one", key)
	}
	for _, f := range []string{p.Enrolment, p.ClientKey} {
		if _, err := os.Lstat(f + replacedSuffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s%s still there: %v", f, replacedSuffix, err)
		}
	}
}
