//go:build integration

package tpm_test

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// countingDevice counts the TPM commands sent through it, by their headers (a
// command may arrive in several writes).
type countingDevice struct {
	tpm2.TPMDevice
	commands *int
}

func (d countingDevice) Open() (tpm2.Transport, error) {
	t, err := d.TPMDevice.Open()
	return &countingTransport{Transport: t, commands: d.commands}, err
}

type countingTransport struct {
	tpm2.Transport
	commands  *int
	header    []byte // the current command's first bytes, until its size is known
	remaining int    // bytes of the current command still to come
}

func (t *countingTransport) Write(p []byte) (int, error) {
	for rest := p; len(rest) > 0; {
		if t.remaining == 0 {
			// Collect tag (2 bytes) and commandSize (4 bytes) of a new command.
			n := min(6-len(t.header), len(rest))
			t.header, rest = append(t.header, rest[:n]...), rest[n:]
			if len(t.header) == 6 {
				*t.commands++
				t.remaining = int(binary.BigEndian.Uint32(t.header[2:6])) - 6
				t.header = t.header[:0]
			}
			continue
		}
		n := min(t.remaining, len(rest))
		t.remaining, rest = t.remaining-n, rest[n:]
	}
	return t.Transport.Write(p)
}

func benchTPM(b *testing.B) (*tpm2.TPMContext, *int) {
	s := testbed.StartSWTPM(b)
	dev, err := tpm.Device(fmt.Sprintf("swtpm:127.0.0.1:%d", s.Port))
	if err != nil {
		b.Fatal(err)
	}
	n := new(int)
	ctx, err := tpm2.OpenTPMDevice(countingDevice{dev, n})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ctx.Close() })
	return ctx, n
}

func reportMedian(b *testing.B, name string, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "median-ms/"+name)
}

// BenchmarkSeal: sealing the unseal key to PCR 7 on swtpm (the SRK exists).
func BenchmarkSeal(b *testing.B) {
	ctx, n := benchTPM(b)
	if _, _, err := tpm.EnsureSRK(ctx); err != nil {
		b.Fatal(err)
	}
	*n = 0
	var ds []time.Duration
	for range b.N {
		t0 := time.Now()
		if _, err := tpm.Seal(ctx, unsealKey, []int{7}, nil); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	reportMedian(b, "seal", ds)
	b.ReportMetric(float64(*n)/float64(b.N), "tpm-commands/seal")
}

// BenchmarkUnseal: one boot's unseal on swtpm, and how many TPM commands it sends.
func BenchmarkUnseal(b *testing.B) {
	ctx, n := benchTPM(b)
	o, err := tpm.Seal(ctx, unsealKey, []int{7}, nil)
	if err != nil {
		b.Fatal(err)
	}
	*n = 0
	var ds []time.Duration
	for range b.N {
		t0 := time.Now()
		if _, err := tpm.Unseal(ctx, o, nil); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	reportMedian(b, "unseal", ds)
	b.ReportMetric(float64(*n)/float64(b.N), "tpm-commands/unseal")
}

// BenchmarkQuote: answering a challenge (the AK exists), and its TPM commands.
func BenchmarkQuote(b *testing.B) {
	ctx, n := benchTPM(b)
	nonce := []byte("0123456789abcdef")
	if _, err := tpm.MakeQuote(ctx, nonce, nil, []int{0, 7}); err != nil {
		b.Fatal(err)
	}
	*n = 0
	var ds []time.Duration
	for range b.N {
		t0 := time.Now()
		if _, err := tpm.MakeQuote(ctx, nonce, nil, []int{0, 7}); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	reportMedian(b, "quote", ds)
	b.ReportMetric(float64(*n)/float64(b.N), "tpm-commands/quote")
}

// BenchmarkPerBootPKI: what pki.ca_key tpm costs edgeseal-pki: one boot's PKI
// (the CA and Vault's certificate, pki.Issue) with the CA key in memory and
// with it made in the TPM (swtpm over loopback TCP), interleaved, each
// iteration one of each. Reports min, median and max of each (ms), the ratio
// of the medians, and the TPM commands of one issue.
func BenchmarkPerBootPKI(b *testing.B) {
	ctx, n := benchTPM(b)
	inTPM := func() (pki.CAKey, error) { return tpm.NewCAKey(ctx) }
	var mem, tp []time.Duration
	*n = 0
	for range b.N {
		t0 := time.Now()
		if _, err := pki.Issue(pki.Options{Validity: time.Hour}); err != nil {
			b.Fatal(err)
		}
		mem = append(mem, time.Since(t0))
		t0 = time.Now()
		if _, err := pki.Issue(pki.Options{Validity: time.Hour, NewCAKey: inTPM}); err != nil {
			b.Fatal(err)
		}
		tp = append(tp, time.Since(t0))
	}
	for _, s := range []struct {
		name string
		ds   []time.Duration
	}{{"memory", mem}, {"tpm", tp}} {
		slices.Sort(s.ds)
		b.ReportMetric(float64(s.ds[0].Microseconds())/1000, "min-ms/issue-"+s.name)
		b.ReportMetric(float64(s.ds[len(s.ds)/2].Microseconds())/1000, "median-ms/issue-"+s.name)
		b.ReportMetric(float64(s.ds[len(s.ds)-1].Microseconds())/1000, "max-ms/issue-"+s.name)
	}
	b.ReportMetric(float64(tp[len(tp)/2])/float64(mem[len(mem)/2]), "tpm/memory")
	b.ReportMetric(float64(*n)/float64(b.N), "tpm-commands/issue")
}

// BenchmarkUnsealByStorage: one boot's unseal with seal.tpm2.storage file (a
// sealed object loaded under the SRK) and nv (the NV index read through its
// policy, with the counter's checks and PolicyNV), interleaved on one swtpm,
// each iteration one of each. Prints N, min/median/max of each (ms), the
// ratio of the medians and the TPM commands of each.
func BenchmarkUnsealByStorage(b *testing.B) {
	ctx, n := benchTPM(b)
	file, err := tpm.Seal(ctx, unsealKey, []int{7}, nil)
	if err != nil {
		b.Fatal(err)
	}
	nv, err := tpm.SealNV(ctx, unsealKey, []int{7}, nil, testNV, nil)
	if err != nil {
		b.Fatal(err)
	}
	series := map[string]*testbed.Series{"file": testbed.NewSeries("unseal-file", "ms"), "nv": testbed.NewSeries("unseal-nv", "ms")}
	commands := map[string]int{}
	for range b.N {
		for _, s := range []struct {
			name string
			o    *tpm.SealedObject
		}{{"file", file}, {"nv", nv}} {
			before := *n
			t0 := time.Now()
			if _, err := tpm.Unseal(ctx, s.o, nil); err != nil {
				b.Fatal(err)
			}
			series[s.name].AddDur(time.Since(t0))
			commands[s.name] += *n - before
		}
	}
	var rows [][]string
	for _, name := range []string{"file", "nv"} {
		s := series[name]
		s.Report(b)
		lo, med, hi := s.Stats()
		rows = append(rows, []string{name, fmt.Sprint(b.N), testbed.Num(lo), testbed.Num(med), testbed.Num(hi),
			fmt.Sprint(commands[name] / b.N)})
	}
	ratio := series["nv"].Median() / series["file"].Median()
	b.ReportMetric(ratio, "nv/file")
	testbed.Table(b, fmt.Sprintf("unseal time by seal.tpm2.storage (swtpm over loopback; nv/file %.2f)", ratio),
		[]string{"storage", "N", "min ms", "median ms", "max ms", "TPM commands"}, rows)
}
