// Command tokenbench measures token delivery inside a test device (it must run
// there: the provider identifies callers by their pid in the device). It prints
// one JSON object of figures. Run as a configured service's user for the socket
// figures, or as root with -direct for the floor: Vault's token-create called
// straight with the token-issuing token.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/secretstore"
	"github.com/edgeseal/edgeseal/tokenclient"
)

type figures struct {
	N            int     `json:"n"`
	SocketMedian float64 `json:"socket_median_ms"`
	SocketP99    float64 `json:"socket_p99_ms"`
	DirectMedian float64 `json:"direct_median_ms,omitempty"`
	DirectP99    float64 `json:"direct_p99_ms,omitempty"`
	Concurrency  int     `json:"concurrency"`
	Throughput   float64 `json:"throughput_per_s"`
	Burst        int     `json:"burst"`
	BurstErrors  int     `json:"burst_errors"`
	// Superseded: deliveries whose token a later delivery to the same
	// service had revoked by the time the client checked it with Vault
	// (tokenclient.ErrSuperseded): delivered, not errors, counted apart.
	Superseded int    `json:"superseded"`
	FirstError string `json:"first_error,omitempty"`
}

func main() {
	n := flag.Int("n", 100, "sequential deliveries to time")
	conc := flag.Int("c", 50, "concurrent clients for throughput")
	burst := flag.Int("burst", 200, "requests sent at once, all of which must succeed")
	direct := flag.String("direct", "", "time Vault's token-create at this address with the token-issuing token (root)")
	flag.Parse()
	if err := run(*n, *conc, *burst, *direct); err != nil {
		fmt.Fprintln(os.Stderr, "tokenbench:", err)
		os.Exit(1)
	}
}

func fetch() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := tokenclient.Fetch(ctx, tokenclient.Options{})
	return err
}

func run(n, conc, burst int, direct string) error {
	f := figures{N: n, Concurrency: conc, Burst: burst}
	if direct != "" {
		ds, err := timeDirect(n, direct)
		if err != nil {
			return err
		}
		f.DirectMedian, f.DirectP99 = pct(ds, 50), pct(ds, 99)
		// The floor only: the caller (root) is no service.
		return json.NewEncoder(os.Stdout).Encode(f)
	}
	var ds []time.Duration
	for range n {
		t0 := time.Now()
		if err := fetch(); err != nil {
			return err
		}
		ds = append(ds, time.Since(t0))
	}
	f.SocketMedian, f.SocketP99 = pct(ds, 50), pct(ds, 99)

	// Throughput: conc clients, each fetching n/conc*... for a fixed total.
	total := max(n, conc*4)
	var wg sync.WaitGroup
	work := make(chan struct{}, total)
	for range total {
		work <- struct{}{}
	}
	close(work)
	var mu sync.Mutex
	var firstErr error
	superseded := 0
	t0 := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				err := fetch()
				mu.Lock()
				switch {
				case errors.Is(err, tokenclient.ErrSuperseded):
					superseded++
				case err != nil && firstErr == nil:
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("throughput run: %w", firstErr)
	}
	f.Throughput = float64(total) / time.Since(t0).Seconds()
	f.Superseded = superseded

	// Burst: every request at once.
	start := make(chan struct{})
	errs := make(chan error, burst)
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- fetch()
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if errors.Is(err, tokenclient.ErrSuperseded) {
			f.Superseded++
			continue
		}
		if err != nil {
			f.BurstErrors++
			if f.FirstError == "" {
				f.FirstError = err.Error()
			}
		}
	}
	return json.NewEncoder(os.Stdout).Encode(f)
}

func timeDirect(n int, addr string) ([]time.Duration, error) {
	p := paths.New("/")
	pool, err := pki.LoadCAPool(p.CACert)
	if err != nil {
		return nil, err
	}
	c, err := secretstore.NewClient(addr, pool)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p.IssuingToken)
	if err != nil {
		return nil, err
	}
	var s api.Secret
	if err := json.Unmarshal(data, &s); err != nil || s.Auth == nil {
		return nil, fmt.Errorf("cannot read the token-issuing token: %v", err)
	}
	c.SetToken(s.Auth.ClientToken)
	var ds []time.Duration
	for range n {
		t0 := time.Now()
		sec, err := c.Auth().Token().CreateWithRole(&api.TokenCreateRequest{Policies: []string{secretstore.ServicePolicyPrefix + "collector"}}, secretstore.ServiceRole)
		if err != nil {
			return nil, err
		}
		ds = append(ds, time.Since(t0))
		c.Auth().Token().RevokeAccessor(sec.Auth.Accessor)
	}
	return ds, nil
}

func pct(ds []time.Duration, p int) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, len(s)*p/100)
	return float64(s[i].Microseconds()) / 1000
}
