package seal

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// addSeeds adds the golden blobs, the envelope tests' canonical blobs and a few
// near misses to the corpus of f.
func addSeeds(f *testing.F) {
	for _, name := range []string{"ikm-hook-v1.sealed", "none-v1.sealed", "pkcs11-v1.sealed", "tpm2-nv-v1.sealed", "tpm2-v1.sealed"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	for _, s := range []string{validIKM, validNone, "", "{}", "[]", "null", `{"version":2}`, `{"version":1,"method":"tpm2"}`} {
		f.Add([]byte(s))
	}
}

func FuzzParseEnvelope(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEnvelope(data)
		if err != nil {
			if !isAny(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		// Whatever parses has one spelling: the one Marshal writes.
		if !bytes.Equal(e.Marshal(), data) {
			t.Fatalf("%q parses but marshals back as %q", data, e.Marshal())
		}
	})
}

func FuzzUnsealIKMHook(f *testing.F) {
	h, _ := memSealer(goldenIKM)
	fuzzOnlyGoldenUnseals(f, "ikm-hook-v1.sealed", func() Sealer { return h })
}

// fuzzOnlyGoldenUnseals fuzzes the Unseal of the sealer newSealer makes,
// which holds the golden key: every error is one a caller acts on, and
// nothing but the golden blob fixture opens.
func fuzzOnlyGoldenUnseals(f *testing.F, fixture string, newSealer func() Sealer) {
	addSeeds(f)
	golden, err := os.ReadFile(filepath.Join("testdata", fixture))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		got, err := newSealer().Unseal(t.Context(), blob)
		if err != nil {
			if !isAny(err, ErrCorrupt, ErrWrongDevice, ErrWrongMethod) {
				t.Fatalf("error %v wraps none of ErrCorrupt, ErrWrongDevice, ErrWrongMethod", err)
			}
			return
		}
		if !bytes.Equal(blob, golden) || string(got) != goldenSecret {
			t.Fatalf("%q unsealed to %q", blob, got)
		}
	})
}

func FuzzUnsealNone(f *testing.F) {
	addSeeds(f)
	s, err := NewNone(true, func(string) {})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		got, err := s.Unseal(t.Context(), blob)
		if err != nil {
			if !isAny(err, ErrCorrupt, ErrWrongMethod) {
				t.Fatalf("error %v wraps neither ErrCorrupt nor ErrWrongMethod", err)
			}
			return
		}
		back, err := s.Seal(t.Context(), got)
		if err != nil {
			t.Fatalf("%q unseals but its secret does not seal: %v", blob, err)
		}
		if !bytes.Equal(back, blob) {
			t.Fatalf("%q unseals to a secret that seals as %q", blob, back)
		}
	})
}

func FuzzUnsealPKCS11(f *testing.F) {
	fuzzOnlyGoldenUnseals(f, "pkcs11-v1.sealed", func() Sealer {
		s, _ := memPKCS11(testPKCS11Config, "0123456789abcdef", 7)
		return s
	})
}
