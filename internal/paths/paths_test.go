package paths

import "testing"

func TestTheSnapKeepsSecretsInTmpfsAndTheSocketInItsSlot(t *testing.T) {
	p := Snap("/var/snap/edgeseal/x3", "edgeseal")
	for name, got := range map[string]string{
		"config":        p.ConfigFile,
		"sealed key":    p.SealedKey,
		"issuing token": p.IssuingToken,
		"vault key":     p.VaultKey,
		"socket":        p.TokendSocket,
	} {
		want := map[string]string{
			"config":        "/var/snap/edgeseal/x3/edgeseal.yaml",
			"sealed key":    "/var/snap/edgeseal/x3/state/unseal-key.sealed",
			"issuing token": "/run/snap.edgeseal/tokend/issuing-token.json",
			"vault key":     "/run/snap.edgeseal/pki/vault.key",
			"socket":        "/var/snap/edgeseal/x3/tokend/tokend.sock",
		}[name]
		if got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	if p.SnapInstance != "edgeseal" {
		t.Errorf("SnapInstance %q", p.SnapInstance)
	}
}

func TestDetectIsTheSnapLayoutOnlyInTheSnapAndWithoutARoot(t *testing.T) {
	t.Setenv("SNAP_DATA", "/var/snap/edgeseal/x1")
	t.Setenv("SNAP_INSTANCE_NAME", "edgeseal_b")
	if p := Detect("/"); p.RunDir != "/run/snap.edgeseal_b" {
		t.Errorf("in the snap: RunDir %s", p.RunDir)
	}
	if p := Detect("/tmp/root"); p.RunDir != "/tmp/root/run/edgeseal" || p.SnapInstance != "" {
		t.Errorf("with --root: RunDir %s", p.RunDir)
	}
	t.Setenv("SNAP_DATA", "")
	if p := Detect("/"); p.RunDir != "/run/edgeseal" || p.SnapInstance != "" {
		t.Errorf("outside the snap: RunDir %s", p.RunDir)
	}
}
