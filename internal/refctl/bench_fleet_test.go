//go:build integration

package refctl

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// BenchmarkControllerFleet measures the controller at fleet sizes, the
// directory store and the OpenBao store (a three-node Raft cluster on this
// machine) side by side in one run: challenge+keys round trips (a challenge,
// then a quote answering it with a keys request) from activeDevices devices
// at once, their latency (median and p99 over every round trip of every
// run) and throughput; how throughput goes from one replica to two; and how
// long the loss of the Raft leader stalls requests.
//
// Every store is filled first; then each run measures every store in turn
// (interleaved, so that what drifts on this machine, and the cluster's own
// growth as runs write to it, weighs on every size alike), then one replica
// against two, then a leader loss. Everything runs on one machine: the
// cluster's nodes, the replicas and the devices share its cores, so the
// figures are ratios of one run, not capacities. b.Loop runs the set-up
// once.
func BenchmarkControllerFleet(b *testing.B) {
	cl := StartCluster(b)
	bin := buildController(b)
	type bed struct {
		kind   string
		size   int
		rounds int
		args   []string // the store, as serve takes it
		devs   []*softDevice
		reps   []*replica
		lat    *testbed.Series
		rate   *testbed.Series
		pooled []float64
	}
	var beds []*bed
	for _, size := range []int{100, 1000, 10000} {
		for _, kind := range []string{"directory", "openbao"} {
			ctl, storeArgs := benchStore(b, cl, kind, size)
			name := fmt.Sprintf("%s-%d", kind, size)
			e := &bed{kind: kind, size: size, rounds: roundsPerRun, args: storeArgs, devs: enrolSoftDevices(b, ctl, "active", activeDevices),
				reps: []*replica{startReplicaArgs(b, bin, storeArgs, len(beds))},
				lat:  testbed.NewSeries(name+"-round-trip", "ms"), rate: testbed.NewSeries(name+"-rounds", "/s")}
			if kind == "directory" && size > 100 {
				// Each request reads and rewrites the whole
				// fleet's file: fewer rounds, or 10,000 devices
				// take an hour.
				e.rounds = max(dirRoundsMin, roundsPerRun*100/size)
			}
			beds = append(beds, e)
		}
	}
	// One replica against two, and the leader's loss, on the OpenBao
	// store of the smallest fleet.
	scale := beds[1]
	scale.reps = append(scale.reps, startReplicaArgs(b, bin, scale.args, len(beds)))
	one, two := testbed.NewSeries("one-replica", "/s"), testbed.NewSeries("two-replicas", "/s")
	stall := testbed.NewSeries("leader-loss-stall", "ms")
	urls := []string{scale.reps[0].url, scale.reps[1].url}

	for b.Loop() {
		for _, e := range beds {
			r := fleetLoad(b, e.devs, []string{e.reps[0].url}, e.rounds, nil)
			e.pooled = append(e.pooled, r.lat...)
			e.lat.Add(median(r.lat))
			e.rate.Add(r.rate)
		}
		one.Add(fleetLoad(b, scale.devs, urls[:1], roundsPerRun, nil).rate)
		two.Add(fleetLoad(b, scale.devs, urls, roundsPerRun, nil).rate)
		stall.Add(leaderLossStall(b, cl, scale.devs, urls))
	}

	var rows [][]string
	for _, e := range beds {
		e.lat.Report(b)
		rows = append(rows, []string{e.kind, strconv.Itoa(e.size), fmt.Sprint(len(e.pooled)),
			testbed.Num(median(e.pooled)), testbed.Num(percentile(e.pooled, 99)), e.lat.String(), e.rate.String()})
	}
	stall.Report(b)
	testbed.Table(b, fmt.Sprintf("challenge+keys round trips by fleet size, %d devices at once, one replica, the stores measured in turn in each run", activeDevices),
		[]string{"store", "devices enrolled", "round trips", "median ms (all)", "p99 ms (all)", "median ms per run", "round trips/s per run"}, rows)
	testbed.Table(b, fmt.Sprintf("the OpenBao store with %d devices: one replica, two, and the Raft leader lost mid-run", scale.size),
		[]string{"what", "figure"}, [][]string{
			{"one replica", one.String()},
			{"two replicas", two.String()},
			{"two/one (medians)", testbed.Num(two.Median() / one.Median())},
			{"leader lost: the longest wait for an answer, kill to after", stall.String()},
		})
}

const (
	activeDevices = 8
	roundsPerRun  = 400 // per run, on the OpenBao store, and the directory's at 100 devices
	dirRoundsMin  = 40  // per run, the directory store's at 1,000 and 10,000
)

// benchStore is a store holding size enrolled devices, each with a vault,
// and the serve arguments naming it.
func benchStore(b testing.TB, cl *testbed.RaftCluster, kind string, size int) (*Controller, []string) {
	b.Helper()
	ctx := context.Background()
	filler := func(i int) (string, *device) {
		v, err := newVault("data", false, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		return fmt.Sprintf("filler-%d", i), &device{PCRs: []int{7}, Enrolled: time.Now(), AKPublic: fakeAK(b), SRKPublic: fakeSRK(b),
			CertSerial: "1", Expected: map[int]string{7: strings.Repeat("00", 32)},
			Vaults: map[string]*vault{fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i): v}}
	}
	if kind == "directory" {
		dir := filepath.Join(b.TempDir(), "ctl")
		if err := Init(dir, nil); err != nil {
			b.Fatal(err)
		}
		err := newPaths(dir).update(func(st *state) (bool, error) {
			for i := range size - activeDevices {
				name, d := filler(i)
				st.Devices[name] = d
			}
			return true, nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return OpenDir(dir), []string{"--dir", dir}
	}
	ctl, file, _ := OnBao(b, cl)
	work := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				name, d := filler(i)
				if err := ctl.st.create(ctx, name, d); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range size - activeDevices {
		work <- i
	}
	close(work)
	wg.Wait()
	return ctl, []string{"--openbao", file}
}

// load is one run's round trips.
type load struct {
	lat  []float64 // ms, each round trip
	rate float64   // round trips per second
}

// fleetLoad runs n challenge+keys round trips from devs at once, spread
// over urls, or fewer if stop is closed first.
func fleetLoad(b testing.TB, devs []*softDevice, urls []string, n int, stop <-chan struct{}) load {
	b.Helper()
	var mu sync.Mutex
	var out load
	var left atomic.Int64
	left.Store(int64(n))
	next := func() bool {
		select {
		case <-stop:
			return false
		default:
			return left.Add(-1) >= 0
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Go(func() {
			at := i % len(urls)
			for next() {
				t0 := time.Now()
				if err := d.unlock(urls, &at); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				out.lat = append(out.lat, float64(time.Since(t0).Microseconds())/1000)
				mu.Unlock()
				at = (at + 1) % len(urls)
			}
		})
	}
	wg.Wait()
	out.rate = float64(len(out.lat)) / time.Since(start).Seconds()
	return out
}

// unlock is a challenge and a keys request answering it with a quote.
func (d *softDevice) unlock(urls []string, at *int) error {
	q, err := d.attest(urls, at)
	if err != nil {
		return err
	}
	rn := make([]byte, ctlproto.NonceSize)
	rand.Read(rn)
	out, err := d.post(urls, at, ctlproto.PathKeys, &ctlproto.KeysRequest{RequestNonce: rn, Quote: q,
		Vaults: []ctlproto.VaultRequest{{UUID: d.vault, Name: "data", Keys: true}}})
	if err != nil {
		return err
	}
	var sb ctlproto.SignedBundle
	if err := ctlproto.Unmarshal(out, &sb); err != nil {
		return err
	}
	bd, err := ctlproto.OpenBundle(&sb, d.signer, d.name, rn)
	if err != nil {
		return err
	}
	if bd.Attestation.Status != ctlproto.AttestVerified || bd.Vaults[0].Status != ctlproto.Released {
		return fmt.Errorf("%s: attestation %s, vault %s", d.name, bd.Attestation.Status, bd.Vaults[0].Status)
	}
	return nil
}

// leaderLossStall kills the Raft leader while devs unlock, from a second
// into the run until two seconds after a new leader serves, and returns the
// longest round trip of the run, in ms: how long the loss stalled a device.
// The node is started again, and has rejoined, before it returns.
func leaderLossStall(b *testing.B, cl *testbed.RaftCluster, devs []*softDevice, urls []string) float64 {
	b.Helper()
	leader, err := cl.Leader(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	done, stop := make(chan load), make(chan struct{})
	go func() { done <- fleetLoad(b, devs, urls, math.MaxInt32, stop) }()
	time.Sleep(time.Second)
	cl.Kill(b, leader)
	if _, err := cl.WaitForLeader(context.Background(), leader); err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	r := <-done
	cl.Restart(b, leader)
	return slices.Max(r.lat)
}

func median(v []float64) float64 { return percentile(v, 50) }

// percentile is the p-th percentile of v (nearest rank).
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}
