package exeid

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// BenchmarkDigest: what a pinned service's request adds, the provider's
// question to the helper: for a 16 MiB executable (about edgeseal's CLI), the
// first answer (the file hashed) and a later one (its digest kept), each
// iteration one of each, on a file of its own. Reports min, median and max
// (ms).
func BenchmarkDigest(b *testing.B) {
	sock := serve(b, uint32(os.Getuid()))
	src, _ := copyOf(b, "")
	data, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	if pad := 16<<20 - len(data); pad > 0 {
		data = append(data, make([]byte, pad)...)
	}
	// One file per iteration, each run by a process of its own, all older
	// than the helper's racy window (a file changed within 2 s is hashed
	// every time), so each iteration's first answer hashes and its second is
	// the kept digest.
	dir := b.TempDir()
	fds := make([]int, b.N)
	for i := range b.N {
		path := fmt.Sprintf("%s/exe-%d", dir, i)
		if err := os.WriteFile(path, append(data, byte(i), byte(i>>8)), 0o755); err != nil {
			b.Fatal(err)
		}
		_, fds[i] = child(b, path)
	}
	time.Sleep(racyWindow + 100*time.Millisecond)
	b.ResetTimer()
	var first, kept []time.Duration
	for i := range b.N {
		t0 := time.Now()
		if _, err := Digest(sock, fds[i], 10*time.Second); err != nil {
			b.Fatal(err)
		}
		first = append(first, time.Since(t0))
		t0 = time.Now()
		if _, err := Digest(sock, fds[i], 10*time.Second); err != nil {
			b.Fatal(err)
		}
		kept = append(kept, time.Since(t0))
	}
	for _, s := range []struct {
		name string
		ds   []time.Duration
	}{{"first", first}, {"kept", kept}} {
		slices.Sort(s.ds)
		for _, q := range []struct {
			what string
			d    time.Duration
		}{{"min", s.ds[0]}, {"median", s.ds[len(s.ds)/2]}, {"max", s.ds[len(s.ds)-1]}} {
			b.ReportMetric(float64(q.d.Microseconds())/1000, fmt.Sprintf("%s-ms/%s", q.what, s.name))
		}
	}
}
