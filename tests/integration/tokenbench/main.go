// Command tokenbench measures token delivery inside a test device (it must run
// there: the provider identifies callers by their pid in the device). It sends
// n requests from c concurrent clients and prints one JSON object: the
// latency of each request (min, median, p99 when n is at least 1,000, max),
// the throughput, and the errors.
//
// Modes:
//
//   - socket (run as a configured service's user): a request on the
//     provider's socket to the token in hand: connect, one request line, the
//     answer read and decoded. This is what the provider does for a caller.
//   - checked (the same user): tokenclient.Fetch, the socket request and then
//     the client's own check of the token with the pinned server (a new TLS
//     connection and lookup-self), as a service calling the library does.
//   - socket-cert (the same user, a service with tls: true): the socket
//     request asking for the service's certificate too, which the provider
//     has the server issue before the token.
//   - direct (root: it reads the token-issuing token): the same token-create
//     the provider makes, called straight with the token-issuing token, with
//     the same role, policy, period and metadata: the floor.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
	"github.com/edgeseal/edgeseal/internal/vaultlayout"
	"github.com/edgeseal/edgeseal/tokenclient"
)

type figures struct {
	Mode        string  `json:"mode"`
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	MinMS       float64 `json:"min_ms"`
	MedianMS    float64 `json:"median_ms"`
	P99MS       float64 `json:"p99_ms,omitempty"`
	MaxMS       float64 `json:"max_ms"`
	PerSecond   float64 `json:"per_s"`
	Errors      int     `json:"errors"`
	// Superseded (checked mode): deliveries whose token a later delivery to
	// the same service had revoked by the time the client checked it
	// (tokenclient.ErrSuperseded): delivered, not errors, counted apart.
	Superseded int    `json:"superseded,omitempty"`
	FirstError string `json:"first_error,omitempty"`
}

func main() {
	mode := flag.String("mode", "socket", "socket, socket-cert, checked or direct")
	n := flag.Int("n", 200, "requests")
	conc := flag.Int("c", 1, "concurrent clients; n/c requests each (all n at once when c equals n)")
	service := flag.String("service", "collector", "the service whose token the direct mode creates")
	at := flag.Int64("at", 0, "start at this time (Unix milliseconds), so that several tokenbench processes start together")
	flag.Parse()
	if *n < 1 || *conc < 1 || *conc > *n {
		fmt.Fprintln(os.Stderr, "tokenbench: want 1 <= -c <= -n")
		os.Exit(2)
	}
	call, err := caller(*mode, *service)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenbench:", err)
		os.Exit(1)
	}
	if *at > 0 {
		time.Sleep(time.Until(time.UnixMilli(*at)))
	}
	f := measure(*mode, *n, *conc, call)
	if err := json.NewEncoder(os.Stdout).Encode(f); err != nil {
		os.Exit(1)
	}
}

// caller returns the request of mode.
func caller(mode, service string) (func(context.Context) error, error) {
	switch mode {
	case "socket":
		socket := os.Getenv("EDGESEAL_TOKEN_SOCKET")
		if socket == "" {
			socket = tokenclient.DefaultSocket
		}
		return func(ctx context.Context) error { return deliver(ctx, socket, false) }, nil
	case "socket-cert":
		return func(ctx context.Context) error { return deliver(ctx, tokenclient.DefaultSocket, true) }, nil
	case "checked":
		return func(ctx context.Context) error { _, err := tokenclient.Fetch(ctx, tokenclient.Options{}); return err }, nil
	case "direct":
		return direct(service)
	}
	return nil, fmt.Errorf("unknown mode %q", mode)
}

func measure(mode string, n, conc int, call func(context.Context) error) figures {
	f := figures{Mode: mode, N: n, Concurrency: conc}
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := w; i < n; i += conc {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				t := time.Now()
				errs[i] = call(ctx)
				lat[i] = time.Since(t)
				cancel()
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	f.PerSecond = float64(n) / time.Since(t0).Seconds()
	for _, err := range errs {
		switch {
		case errors.Is(err, tokenclient.ErrSuperseded):
			f.Superseded++
		case err != nil:
			f.Errors++
			if f.FirstError == "" {
				f.FirstError = err.Error()
			}
		}
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	f.MinMS, f.MedianMS, f.MaxMS = ms(lat[0]), ms(lat[n/2]), ms(lat[n-1])
	if n >= 1000 { // a 99th percentile that is not simply the maximum
		f.P99MS = ms(lat[n*99/100])
	}
	return f
}

// deliver is one request on the provider's socket, the wire protocol of
// tokenclient (one request line, one answer line), without the client's check.
func deliver(ctx context.Context, socket string, cert bool) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	line, _ := json.Marshal(tokenclient.Request{V: tokenclient.ProtocolVersion, Cert: cert})
	if _, err := c.Write(append(line, '\n')); err != nil {
		return err
	}
	data, err := bufio.NewReaderSize(c, 8192).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("cannot read the answer: %w", err)
	}
	var r tokenclient.Response
	if err := json.Unmarshal(data, &r); err != nil {
		return err
	}
	if r.Status != tokenclient.StatusOK {
		return fmt.Errorf("%s: %s", r.Status, r.Error)
	}
	sec, err := r.Secret()
	if err != nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return fmt.Errorf("the answer holds no token")
	}
	if cert && (r.TLS == nil || r.TLS.Certificate == "") {
		return fmt.Errorf("the answer holds no certificate")
	}
	return nil
}

// direct is the provider's token-create, made straight: the same role,
// policy, period and metadata, with the token-issuing token, over one client
// whose connections are reused (as the provider's are).
func direct(service string) (func(context.Context) error, error) {
	p := paths.New("/")
	pool, err := pki.LoadCAPool(p.CACert)
	if err != nil {
		return nil, err
	}
	c, err := vaultclient.New(os.Getenv("VAULT_ADDR"), pool)
	if err != nil {
		return nil, err
	}
	auth, err := vaultlayout.ReadIssuingToken(p.IssuingToken)
	if err != nil {
		return nil, err
	}
	c.SetToken(auth.ClientToken)
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return nil, err
	}
	period := os.Getenv("EDGESEAL_SERVICE_PERIOD")
	if period == "" {
		return nil, errors.New("EDGESEAL_SERVICE_PERIOD is not set (the period the provider puts on tokens)")
	}
	req := &api.TokenCreateRequest{
		Policies:    []string{vaultlayout.ServicePolicyPrefix + service},
		DisplayName: service,
		Metadata: map[string]string{"edgeseal_service": service, "uid": "1001", "pid": strconv.Itoa(os.Getpid()),
			"unit": "tokenbench.service", "boot_id": strings.TrimSpace(string(bootID))},
		Period: period,
	}
	return func(ctx context.Context) error {
		sec, err := c.Auth().Token().CreateWithRoleWithContext(ctx, req, vaultlayout.ServiceRole)
		if err == nil && (sec == nil || sec.Auth == nil || sec.Auth.Accessor == "") {
			err = errors.New("token-create answered no token")
		}
		return err
	}, nil
}
