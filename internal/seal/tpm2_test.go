package seal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/fsutil"
)

// The TPM PIN file is read as root: one others can read, or a symlink, is
// refused before the TPM sees an authorisation.
func TestTheTPMPINFileIsRefusedIfOthersCanReadOrRedirectIt(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pin")
	if err := os.WriteFile(good, []byte("2468\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if pin, err := (&tpm2Sealer{cfg: config.TPM2{PINFile: good}}).pin(); err != nil || string(pin) != "2468" {
		t.Fatalf("a 0600 PIN file: %q, %v", pin, err)
	}
	readable := filepath.Join(dir, "readable")
	if err := os.WriteFile(readable, []byte("2468\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(readable, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{readable, link} {
		_, err := (&tpm2Sealer{cfg: config.TPM2{PINFile: p}}).pin()
		if !errors.Is(err, fsutil.ErrUnsafeSecret) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "seal.tpm2.pin_file") {
			t.Errorf("PIN file %s: %v, want ErrUnsafeSecret naming it and seal.tpm2.pin_file", p, err)
		}
	}
}
