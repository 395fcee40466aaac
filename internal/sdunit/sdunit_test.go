package sdunit

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestSignalledFindsTheUnitsProcessesByTheirCgroup(t *testing.T) {
	proc := t.TempDir()
	for pid, cgroup := range map[string]string{
		"10":   "0::/system.slice/snap.edgeseal.vault.service\n",
		"11":   "0::/system.slice/snap.edgeseal.unseal.service\n",
		"12":   "0::/system.slice/snap.edgeseal.vault.service\n",
		"13":   "0::/system.slice/other.service/snap.edgeseal.vault.service\n", // a delegated subgroup: other.service's
		"self": "0::/system.slice/snap.edgeseal.vault.service\n",               // not a pid
	} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "cgroup"), []byte(cgroup), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pids, err := Signalled{Name: "snap.edgeseal.vault.service", Proc: proc}.pids()
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{10, 12}; !reflect.DeepEqual(pids, want) {
		t.Errorf("pids %v, want %v", pids, want)
	}
}
