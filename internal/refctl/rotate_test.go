package refctl

import (
	"slices"
	"testing"
	"time"
)

func vaultAt(created time.Time, versions []int, acked int, pending bool) *vault {
	v := &vault{Name: "v", Acked: acked, RotatePending: pending}
	for _, n := range versions {
		v.Keys = append(v.Keys, &vaultKey{Version: n, Key: make([]byte, 32), Created: created})
	}
	return v
}

func TestRotationIsDueOnlyOnceTheDeviceCaughtUp(t *testing.T) {
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	old, fresh := now.Add(-48*time.Hour), now.Add(-time.Hour)
	cases := []struct {
		name  string
		v     *vault
		every time.Duration
		want  bool
	}{
		{"an operator asked, the device is at the newest", vaultAt(fresh, []int{1}, 1, true), 0, true},
		{"an operator asked, the device reported nothing yet", vaultAt(fresh, []int{1}, 0, true), 0, false},
		{"an operator asked, a rotation under way", vaultAt(fresh, []int{1, 2}, 1, true), 0, false},
		{"the newest is older than every", vaultAt(old, []int{3}, 3, false), 24 * time.Hour, true},
		{"the newest is exactly every old", vaultAt(now.Add(-24*time.Hour), []int{3}, 3, false), 24 * time.Hour, true},
		{"the newest is younger than every", vaultAt(fresh, []int{3}, 3, false), 24 * time.Hour, false},
		{"old, but a rotation under way", vaultAt(old, []int{3, 4}, 3, false), 24 * time.Hour, false},
		{"old, but rotation by age is off", vaultAt(old, []int{3}, 3, false), 0, false},
	}
	for _, tc := range cases {
		if got := rotationDue(tc.v, now, tc.every); got != tc.want {
			t.Errorf("%s: due %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRotateAddsTheNextVersionWithANewKey(t *testing.T) {
	v := vaultAt(time.Now(), []int{4}, 4, true)
	v.Keys[0].Key[0] = 1
	if err := v.rotate(time.Now()); err != nil {
		t.Fatal(err)
	}
	if len(v.Keys) != 2 || v.current().Version != 5 || v.RotatePending || string(v.current().Key) == string(v.Keys[0].Key) {
		t.Errorf("after rotate: %d keys, newest %d, pending %v", len(v.Keys), v.current().Version, v.RotatePending)
	}
}

func TestReleaseGivesTheNewestAndTheDevicesVersion(t *testing.T) {
	v := vaultAt(time.Now(), []int{2, 3}, 2, false)
	cases := []struct {
		deviceAt, cur, prev int
	}{
		{2, 3, 2}, // mid-rotation: both
		{3, 3, 3}, // at the newest
		{0, 3, 3}, // none yet
		{1, 3, 3}, // a version no longer kept
		{9, 3, 3}, // a version never made
	}
	for _, tc := range cases {
		cur, prev := releaseKeys(v, tc.deviceAt)
		if cur.Version != tc.cur || prev.Version != tc.prev {
			t.Errorf("device at %d: current %d previous %d, want %d and %d", tc.deviceAt, cur.Version, prev.Version, tc.cur, tc.prev)
		}
	}
}

func TestAckingTheNewestDropsEveryOlderKey(t *testing.T) {
	v := vaultAt(time.Now(), []int{2, 3}, 2, false)
	old := v.Keys[0]
	old.Key[0] = 0xff
	for _, n := range []int{1, 9} {
		if v.ack(n) {
			t.Errorf("ack %d (not kept) accepted", n)
		}
	}
	if !v.ack(2) || len(v.Keys) != 2 {
		t.Errorf("ack of the version acked already: %d keys", len(v.Keys))
	}
	if !v.ack(3) || v.Acked != 3 || len(v.Keys) != 1 || v.current().Version != 3 {
		t.Errorf("ack of the newest: acked %d, %d keys", v.Acked, len(v.Keys))
	}
	if !slices.Equal(old.Key, make([]byte, 32)) {
		t.Error("the dropped key was not wiped")
	}
	if v.ack(2) {
		t.Error("an older version acked after the newest")
	}
}
