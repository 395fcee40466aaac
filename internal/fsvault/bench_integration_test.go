//go:build integration

package fsvault

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

func benchManager(b *testing.B, size string) (*Manager, *testbed.EncryptFS) {
	fs := testbed.NewEncryptFS(b, size)
	sw := testbed.StartSWTPM(b)
	cfg := config.Default()
	cfg.Seal.TPM2.Device = fmt.Sprintf("swtpm:127.0.0.1:%d", sw.Port)
	cfg.FileVaults.Dir = filepath.Join(fs.Mount, "vaults")
	cfg.FileVaults.Defaults = false
	cfg.FileVaults.Vaults = []config.FileVault{{Schema: 1, UUID: newUUID(), Name: "bench"}}
	m := &Manager{Paths: paths.New(fs.Mount), Config: cfg, TPM: seal.NewTPM2(cfg.Seal.TPM2)}
	if _, _, err := m.Apply(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Lock(context.Background(), "bench", 0) })
	return m, fs
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// BenchmarkUnlock: unlocking a locked vault, as edgeseal-fsvault@NAME.service
// does at boot: the key unsealed by the TPM (swtpm), added to the kernel and
// checked against the directory's policy.
func BenchmarkUnlock(b *testing.B) {
	m, _ := benchManager(b, "32M")
	ctx := context.Background()
	var ds []time.Duration
	for range b.N {
		if _, err := m.Lock(ctx, "bench", 0); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := m.Unlock(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	b.ReportMetric(float64(median(ds).Microseconds())/1000, "median-ms/unlock")
}

// BenchmarkUnlockWithController: the same unlock for a vault whose key
// source is tpm+controller with attestation, against the reference
// controller on loopback: the TPM's share unsealed, a challenge, a quote, the
// keys request (its bundle checked, the key imported into the TPM and
// unsealed), the key added, and the report with the key escrowed.
func BenchmarkUnlockWithController(b *testing.B) {
	cb := newCtlBed(b, source{"tpm+controller with attestation", config.KeySourceTPMController, true}, nil)
	cb.apply()
	m := cb.manager()
	ctx := context.Background()
	var ds []time.Duration
	for range b.N {
		if _, err := m.Lock(ctx, dataVault, 0); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := m.Unlock(ctx, dataVault); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	m.Lock(ctx, dataVault, 0)
	b.ReportMetric(float64(median(ds).Microseconds())/1000, "median-ms/unlock")
}

// throughput writes a file of size in dir (fsync'd), drops it from the page
// cache, and reads it back: MB/s each way.
func throughput(b *testing.B, dir string, data []byte) (write, read float64) {
	p := filepath.Join(dir, "bench.bin")
	t0 := time.Now()
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	w := time.Since(t0)
	// The page cache holds plaintext: evict the file so the read decrypts.
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
	buf := make([]byte, 1<<20)
	t0 = time.Now()
	f, err = os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	for {
		n, err := f.Read(buf)
		if n == 0 || err != nil {
			break
		}
	}
	r := time.Since(t0)
	f.Close()
	os.Remove(p)
	mb := float64(len(data)) / 1e6
	return mb / w.Seconds(), mb / r.Seconds()
}

// BenchmarkThroughput: writing and reading 64 MB in an unlocked vault, against
// a plain directory on the same filesystem; the ratios are the cost of
// encryption (AES-256-XTS in the kernel).
func BenchmarkThroughput(b *testing.B) {
	_, fs := benchManager(b, "256M")
	plain := filepath.Join(fs.Mount, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		b.Fatal(err)
	}
	vault := filepath.Join(fs.Mount, "vaults", "bench")
	data := make([]byte, 64<<20)
	rand.Read(data)
	var vw, vr, pw, pr []float64
	for range b.N {
		w, r := throughput(b, vault, data)
		vw, vr = append(vw, w), append(vr, r)
		w, r = throughput(b, plain, data)
		pw, pr = append(pw, w), append(pr, r)
	}
	med := func(xs []float64) float64 { slices.Sort(xs); return xs[len(xs)/2] }
	b.ReportMetric(med(vw), "vault-write-MB/s")
	b.ReportMetric(med(vr), "vault-read-MB/s")
	b.ReportMetric(med(pw), "plain-write-MB/s")
	b.ReportMetric(med(pr), "plain-read-MB/s")
	b.ReportMetric(med(vw)/med(pw), "write-ratio")
	b.ReportMetric(med(vr)/med(pr), "read-ratio")
}
