package tokend

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeseal/edgeseal/tokenclient"
)

// A provider that cannot serve answers the callers already waiting before it
// exits: a caller left in the socket's queue has systemd start the provider
// again at once, and a provider that fails every start that way trips the
// socket's trigger limit (20 starts in 2 s), which fails the socket until
// `systemctl reset-failed`. With the queue empty, the next start waits for the
// next caller. It answers for at most drainFor, waiting drainWait for each.
const (
	drainFor  = time.Second
	drainWait = 50 * time.Millisecond
)

// AnswerWaiting tells every caller waiting on each of lns why the provider
// cannot serve (sealed if why is ErrSealed: try again later; else an error),
// and returns when none is left or after drainFor, the sockets drained at
// once. It returns how many it answered.
func AnswerWaiting(why error, lns ...*net.UnixListener) int {
	var n atomic.Int64
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Add(int64(answerWaiting(ln, why)))
		}()
	}
	wg.Wait()
	return int(n.Load())
}

func answerWaiting(ln *net.UnixListener, why error) int {
	r := tokenclient.Response{Status: statusOf(why), Error: "the token provider cannot serve: " + why.Error()}
	n := 0
	for end := time.Now().Add(drainFor); time.Now().Before(end); n++ {
		ln.SetDeadline(time.Now().Add(drainWait))
		c, err := ln.AcceptUnix()
		if err != nil {
			return n
		}
		c.SetWriteDeadline(time.Now().Add(drainWait))
		respond(c, r)
		c.Close()
	}
	return n
}
