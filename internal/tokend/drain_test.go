package tokend

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/tokenclient"
)

func TestAProviderThatCannotServeAnswersEveryCallerWaiting(t *testing.T) {
	dir, err := os.MkdirTemp("", "tokend")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	addr := &net.UnixAddr{Name: filepath.Join(dir, "tokend.sock"), Net: "unix"}
	ln, err := net.ListenUnix("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Given three callers waiting in the socket's queue
	var waiting []*net.UnixConn
	for range 3 {
		c, err := net.DialUnix("unix", nil, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		waiting = append(waiting, c)
	}
	// When the provider cannot serve because Vault is not set up yet
	t0 := time.Now()
	n := AnswerWaiting(fmt.Errorf("%w: no token-issuing token", ErrSealed), ln)
	// Then it answers all three "sealed" (try again later), and returns once
	// none is left
	if n != 3 {
		t.Errorf("answered %d callers, want 3", n)
	}
	if took := time.Since(t0); took >= drainFor {
		t.Errorf("returned after %v, want as soon as the queue is empty", took)
	}
	for i, c := range waiting {
		r, err := exchange(c, "")
		if err != nil || r.Status != tokenclient.StatusSealed {
			t.Errorf("caller %d: %+v, %v; want sealed", i, r, err)
		}
	}
}
