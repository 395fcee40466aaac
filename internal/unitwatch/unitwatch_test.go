package unitwatch

import (
	"testing"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// The end-to-end story (a unit killed into the failed state loses its token
// within a second, under real systemd) is in tests/integration/tokens_test.go.

func TestOnlyAnActiveStateOfFailedIsAFailure(t *testing.T) {
	upd := func(unit string, props map[string]any) *sddbus.PropertiesUpdate {
		ch := map[string]dbus.Variant{}
		for k, v := range props {
			ch[k] = dbus.MakeVariant(v)
		}
		return &sddbus.PropertiesUpdate{UnitName: unit, Changed: ch}
	}
	cases := []struct {
		u    *sddbus.PropertiesUpdate
		want bool
	}{
		{upd("flaky.service", map[string]any{"ActiveState": "failed", "SubState": "failed"}), true},
		{upd("flaky.service", map[string]any{"ActiveState": "deactivating"}), false},
		{upd("flaky.service", map[string]any{"SubState": "failed"}), false},
		{upd("flaky.service", map[string]any{"ActiveState": uint32(3)}), false},
		{upd("", map[string]any{"ActiveState": "failed"}), false},
		{nil, false},
	}
	for i, c := range cases {
		if got := isFailed(c.u); got != c.want {
			t.Errorf("case %d: isFailed = %v, want %v", i, got, c.want)
		}
	}
}
