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
// iteration one of each (a rewrite of the file in between makes the next
// answer a first one again). Reports min, median and max (ms).
func BenchmarkDigest(b *testing.B) {
	sock := serve(b, uint32(os.Getuid()))
	path, _ := copyOf(b, "")
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	if pad := 16<<20 - len(data); pad > 0 {
		data = append(data, make([]byte, pad)...)
	}
	if err := os.WriteFile(path, data, 0o755); err != nil {
		b.Fatal(err)
	}
	_, fd := child(b, path)
	var first, kept []time.Duration
	for i := range b.N {
		// A new change time: the kept digest no longer applies.
		now := time.Now().Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(path, now, now); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := Digest(sock, fd, 10*time.Second); err != nil {
			b.Fatal(err)
		}
		first = append(first, time.Since(t0))
		t0 = time.Now()
		if _, err := Digest(sock, fd, 10*time.Second); err != nil {
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
