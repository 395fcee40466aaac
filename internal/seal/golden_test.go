package seal

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgeseal/edgeseal/internal/tpm"
)

// The golden blobs in testdata were sealed once by this code and are committed:
// every later edgeseal must unseal them, so the format cannot drift unnoticed.
// Regenerate them only together with a new envelope version (and keep the old
// ones): go test -run Golden -update-golden
var updateGolden = flag.Bool("update-golden", false, "rewrite the golden sealed blobs in testdata")

// The test vector of docs/sealed-blob.md.
const (
	goldenIKM    = "0f3c9a7e51d24b8896e0a1c3d5f7092b" // printed by the hook, followed by a newline
	goldenSecret = "edgeseal golden Vault unseal key"
	goldenAAD    = "656467657365616c207365616c65642d626c6f62" + "00" + "00000001" + "08" + "696b6d2d686f6f6b" +
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	goldenKey = "185fcc65ce85e990a8a40031eee52ffd8735264e14ae0492ec07a995d5421bd5"
)

// countingReader yields 0x00, 0x01, 0x02, ...: the salt is 00..1f, the nonce 20..2b.
type countingReader struct{ next byte }

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.next
		r.next++
	}
	return len(p), nil
}

func TestGoldenIKMHookBlobUnseals(t *testing.T) {
	path := filepath.Join("testdata", "ikm-hook-v1.sealed")
	if *updateGolden {
		h, _ := memSealer(goldenIKM)
		h.rand = &countingReader{}
		blob, err := h.Seal(t.Context(), []byte(goldenSecret))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, blob, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	blob, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Through a real hook, as on a device.
	got, err := hookSealer(printHook(t, goldenIKM)).Unseal(t.Context(), blob)
	if err != nil {
		t.Fatalf("the golden ikm-hook blob no longer unseals: %v", err)
	}
	if string(got) != goldenSecret {
		t.Fatalf("the golden ikm-hook blob unseals to %q, want %q", got, goldenSecret)
	}
}

func TestGoldenIKMHookBlobIsWhatSealWrites(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("testdata", "ikm-hook-v1.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := memSealer(goldenIKM)
	h.rand = &countingReader{}
	got, err := h.Seal(t.Context(), []byte(goldenSecret))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Seal with the golden inputs writes\n%s\nbut the golden blob is\n%s", got, want)
	}
}

func TestGoldenKDFAndAAD(t *testing.T) {
	e, err := ParseEnvelope(mustRead(t, filepath.Join("testdata", "ikm-hook-v1.sealed")))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(ikmHookAAD(e)); got != goldenAAD {
		t.Errorf("AAD is %s, want %s", got, goldenAAD)
	}
	key, err := hkdf.Key(sha256.New, []byte(goldenIKM), e.Salt, "edgeseal unseal-key v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(key); got != goldenKey {
		t.Errorf("derived key is %s, want %s", got, goldenKey)
	}
}

func TestGoldenNoneBlobUnseals(t *testing.T) {
	path := filepath.Join("testdata", "none-v1.sealed")
	s, _ := NewNone(true, func(string) {})
	if *updateGolden {
		blob, err := s.Seal(t.Context(), []byte(goldenSecret))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, blob, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Unseal(t.Context(), mustRead(t, path))
	if err != nil {
		t.Fatalf("the golden none blob no longer unseals: %v", err)
	}
	if string(got) != goldenSecret {
		t.Fatalf("the golden none blob unseals to %q, want %q", got, goldenSecret)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The golden tpm2 blobs, of storage nv and file (sealed once into swtpm by
// TestTPM2SealerInNVRefusesARolledBackBlobAndRecoversIntoTheOtherSlot with
// -update-nv-golden): they need that TPM to unseal, so this checks that every
// later edgeseal reads the same fields from them and writes them back unchanged.
func TestGoldenTPM2BlobsReadAndReencode(t *testing.T) {
	for _, name := range []string{"tpm2-nv-v1.sealed", "tpm2-v1.sealed"} {
		blob := mustRead(t, filepath.Join("testdata", name))
		e, err := ParseEnvelope(blob)
		if err != nil {
			t.Fatal(err)
		}
		o, err := tpm.UnmarshalSealedObject(e.TPM2)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if o.PIN || !slices.Equal(o.PCRs, []int{7}) || len(o.SRKName) != 34 || len(o.Values[7]) != 32 {
			t.Errorf("%s: PIN %v, PCRs %v, SRK name of %d bytes", name, o.PIN, o.PCRs, len(o.SRKName))
		}
		switch {
		case name == "tpm2-v1.sealed" && (o.NV != nil || o.Public == nil || len(o.Private) == 0):
			t.Errorf("%s does not read as a sealed object", name)
		case name == "tpm2-nv-v1.sealed" && (o.NV == nil || o.Public != nil):
			t.Errorf("%s does not read as an NV index", name)
		case o.NV != nil && (o.NV.Index != 0x013e5e00 || o.NV.Counter != 0x013e5e10 || o.NV.Value != 1 ||
			len(o.NV.IndexName) != 34 || len(o.NV.CounterName) != 34):
			t.Errorf("%s: NV index %v, counter %v at value %d; want 0x013e5e00, 0x013e5e10 at 1", name, o.NV.Index, o.NV.Counter, o.NV.Value)
		}
		back, err := o.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal((&Envelope{Version: EnvelopeVersion, Method: MethodTPM2, TPM2: back}).Marshal(), blob) {
			t.Errorf("%s does not encode back to the same bytes", name)
		}
	}
}
