//go:build integration

package refctl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// A fleet: controller replicas (edgeseal-controller processes) on one
// OpenBao store, and simulated devices that attest with software keys,
// fail over among the replicas, and remember what they were told.

// buildController builds edgeseal-controller for the test.
func buildController(t testing.TB) string { return testbed.Build(t, "./cmd/edgeseal-controller") }

// replica is an edgeseal-controller serve process.
type replica struct {
	url string
	p   *testbed.Process
}

func startReplica(t testing.TB, bin, storeFile string, i int) *replica {
	return startReplicaArgs(t, bin, []string{"--openbao", storeFile}, i)
}

// startReplicaArgs starts a replica on the store storeArgs name (--dir DIR
// or --openbao FILE).
func startReplicaArgs(t testing.TB, bin string, storeArgs []string, i int) *replica {
	t.Helper()
	port := testbed.FreeLoopbackPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"serve", "--listen", addr}, storeArgs...)
	p := testbed.StartProcess(t, fmt.Sprintf("replica-%d", i), exec.Command(bin, args...))
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("replica %d did not listen: %v\n%s", i, err, p.LogTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &replica{url: "https://" + addr, p: p}
}

// softDevice is a simulated device: a software attestation key, a client
// certificate from the controller's CA, and one vault it escrows.
type softDevice struct {
	name   string
	ak     *softAK
	srk    []byte
	client *http.Client
	signer *ecdsa.PublicKey
	vault  string

	// What it was told, and what it told.
	keyVersion int    // the current key version it was given
	escrow     []byte // the escrow it last reported, answered 200
	acked      int    // the version it last reported, answered 200
	replays    int    // spent quotes sent again, each refused
}

// enrolSoftDevices adds n devices to ctl and enrols them by hand, as
// enrolment would (trust on first use: the record is the enrolment's).
func enrolSoftDevices(t testing.TB, ctl *Controller, prefix string, n int) []*softDevice {
	t.Helper()
	ctx := context.Background()
	k, err := ctl.st.identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(k.ca)
	var devs []*softDevice
	for i := range n {
		d := &softDevice{name: fmt.Sprintf("%s-%d", prefix, i), ak: newSoftAK(t), srk: fakeSRK(t), signer: k.signingPublic(),
			vault: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)}
		if _, err := ctl.AddDevice(ctx, d.name, []int{7}, nil); err != nil {
			t.Fatal(err)
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := issueClientCert(k.caKey, k.ca, d.name, &key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		err = ctl.st.update(ctx, d.name, func(r *device) (bool, error) {
			r.Token.Used = true
			r.Enrolled, r.AKPublic, r.SRKPublic = time.Now(), d.ak.pem, d.srk
			r.CertSerial = cert.SerialNumber.Text(16)
			r.Expected = map[int]string{7: strings.Repeat("00", 32)}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		d.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool,
				Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}}}
		devs = append(devs, d)
	}
	return devs
}

// errRefused is an answer a device must not take to another replica.
var errRefused = errors.New("refused")

// post sends msg to the replicas in turn, from the one at *at, moving on
// when one cannot be reached or answers 503, within a bound; a 4xx is
// errRefused. It returns the body of a 200.
func (d *softDevice) post(urls []string, at *int, path string, msg any) ([]byte, error) {
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	var last error
	for try := range 40 {
		u := urls[(*at)%len(urls)]
		r, err := d.client.Post(u+path, "application/json", bytes.NewReader(body))
		if err == nil {
			out, _ := io.ReadAll(r.Body)
			r.Body.Close()
			switch {
			case r.StatusCode == http.StatusOK:
				return out, nil
			case r.StatusCode < 500:
				return nil, fmt.Errorf("%w: %s: %d %s", errRefused, path, r.StatusCode, out)
			}
			err = fmt.Errorf("%s: %d %s", u, r.StatusCode, out)
		}
		last = err
		*at = (*at + 1) % len(urls)
		time.Sleep(time.Duration(min(50*(try+1), 500)) * time.Millisecond)
	}
	return nil, fmt.Errorf("no replica answered %s: %w", path, last)
}

// attest asks for a challenge and quotes over its nonce.
func (d *softDevice) attest(urls []string, at *int) (*ctlproto.Quote, error) {
	out, err := d.post(urls, at, ctlproto.PathChallenge, &ctlproto.ChallengeRequest{})
	if err != nil {
		return nil, err
	}
	var ch ctlproto.Challenge
	if err := ctlproto.Unmarshal(out, &ch); err != nil {
		return nil, err
	}
	return d.ak.quote(ch.Nonce, nil, map[int][]byte{7: make([]byte, 32)})
}

// round is one unlock: a challenge, a quote with a keys request (the keys
// and the escrowed key), and a report acking the version and escrowing a
// new key. Each step may land on another replica.
func (d *softDevice) round(urls []string, at *int) error {
	q, err := d.attest(urls, at)
	if err != nil {
		return err
	}
	reqNonce := make([]byte, ctlproto.NonceSize)
	rand.Read(reqNonce)
	vr := ctlproto.VaultRequest{UUID: d.vault, Name: "data", Keys: true, KeyVersion: d.acked, Escrow: d.escrow != nil}
	out, err := d.post(urls, at, ctlproto.PathKeys, &ctlproto.KeysRequest{RequestNonce: reqNonce, Quote: q, Vaults: []ctlproto.VaultRequest{vr}})
	if err != nil {
		return err
	}
	var sb ctlproto.SignedBundle
	if err := ctlproto.Unmarshal(out, &sb); err != nil {
		return err
	}
	b, err := ctlproto.OpenBundle(&sb, d.signer, d.name, reqNonce)
	if err != nil {
		return err
	}
	if b.Attestation.Status != ctlproto.AttestVerified {
		return fmt.Errorf("attestation %+v", b.Attestation)
	}
	// The same quote again, in another request, to the other replica
	// first: refused, whichever answers.
	other := (*at + 1) % len(urls)
	again := make([]byte, ctlproto.NonceSize)
	rand.Read(again)
	_, err = d.post(urls, &other, ctlproto.PathKeys, &ctlproto.KeysRequest{RequestNonce: again, Quote: q, Vaults: []ctlproto.VaultRequest{vr}})
	if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), " 409 ") {
		return fmt.Errorf("a spent quote sent again: %v, want 409 nonce already used", err)
	}
	d.replays++
	rel := b.Vaults[0]
	if rel.Status != ctlproto.Released || rel.Current == nil {
		return fmt.Errorf("vault %+v", rel)
	}
	if d.escrow != nil && !bytes.Equal(rel.Escrow, d.escrow) {
		return errors.New("the escrowed key given back is not the one escrowed last")
	}
	d.keyVersion = rel.Current.Version
	srk, err := unmarshalSRK(d.srk)
	if err != nil {
		return err
	}
	imp, err := tpm.SealToTPM(srk, []byte(fmt.Sprintf("%032x", time.Now().UnixNano()))[:32])
	if err != nil {
		return err
	}
	esc, err := imp.MarshalBinary()
	if err != nil {
		return err
	}
	rep := &ctlproto.Report{Vaults: []ctlproto.VaultReport{{UUID: d.vault, Name: "data", KeyVersion: d.keyVersion, Escrow: esc, Unlocked: "controller-key"}}}
	if _, err := d.post(urls, at, ctlproto.PathReport, rep); err != nil {
		return err
	}
	d.escrow, d.acked = esc, d.keyVersion
	return nil
}

func TestTwoReplicasLoseNothingWhenTheLeaderAndAReplicaAreKilled(t *testing.T) {
	cl := StartCluster(t)
	ctl, file, _ := OnBao(t, cl)
	bin := buildController(t)
	devs := enrolSoftDevices(t, ctl, "fleet", 24)
	reps := []*replica{startReplica(t, bin, file, 0), startReplica(t, bin, file, 1)}
	urls := []string{reps[0].url, reps[1].url}

	t.Log("Given 24 devices unlocking in rounds against two replicas")
	var mu sync.Mutex
	rounds, after := map[string]int{}, map[string]int{}
	killed := make(chan struct{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var errs []error
	for i, d := range devs {
		wg.Go(func() {
			at := i % 2
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := d.round(urls, &at); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", d.name, err))
					mu.Unlock()
					return
				}
				mu.Lock()
				rounds[d.name]++
				select {
				case <-killed:
					after[d.name]++
				default:
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(3 * time.Second)

	t.Log("When the Raft leader and one replica are killed (SIGKILL) in the middle of the run")
	leader, err := cl.Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	cl.Kill(t, leader)
	reps[0].p.Kill(t)
	close(killed)
	newLeader, err := cl.WaitForLeader(context.Background(), leader)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d was the leader; node %d leads %v after the kill", leader, newLeader, time.Since(killedAt).Round(time.Millisecond))
	// Until every device has unlocked twice since, or a bound.
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		mu.Lock()
		done := len(errs) > 0
		if !done {
			done = true
			for _, d := range devs {
				done = done && after[d.name] >= 2
			}
		}
		mu.Unlock()
		if done {
			break
		}
	}
	close(stop)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	total := 0
	for _, d := range devs {
		total += rounds[d.name]
		if after[d.name] < 2 {
			t.Errorf("%s: %d unlocks after the kills, want 2 or more", d.name, after[d.name])
		}
	}
	t.Logf("%d unlocks in all (%d requests), each spent quote sent again and refused", total, 4*total)

	t.Log("Then the store holds what every device was last told and last told it: key version, ack, escrow")
	ctx := context.Background()
	for _, d := range devs {
		rec, err := ctl.st.get(ctx, d.name)
		if err != nil {
			t.Fatal(err)
		}
		v := rec.Vaults[d.vault]
		switch {
		case v == nil:
			t.Errorf("%s: no vault", d.name)
		case v.current().Version != d.keyVersion || v.Acked != d.acked:
			t.Errorf("%s: store at version %d acked %d; the device was told %d and acked %d", d.name, v.current().Version, v.Acked, d.keyVersion, d.acked)
		case !bytes.Equal(v.Escrow, d.escrow):
			t.Errorf("%s: the escrowed key in the store is not the one the device reported last", d.name)
		}
		used := 0
		for _, c := range rec.Challenges {
			if c.Used {
				used++
			}
		}
		if used == 0 {
			t.Errorf("%s: no spent challenge in the store", d.name)
		}
	}

	t.Log("And no nonce is accepted twice: each spent quote, sent again to the replica alive, is refused")
	for _, d := range devs[:4] {
		out, err := d.post(urls[1:], new(int), ctlproto.PathChallenge, &ctlproto.ChallengeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var ch ctlproto.Challenge
		ctlproto.Unmarshal(out, &ch)
		q, _ := d.ak.quote(ch.Nonce, nil, map[int][]byte{7: make([]byte, 32)})
		for i := range 2 {
			rn := make([]byte, ctlproto.NonceSize)
			rand.Read(rn)
			_, err := d.post(urls[1:], new(int), ctlproto.PathKeys, &ctlproto.KeysRequest{RequestNonce: rn, Quote: q,
				Vaults: []ctlproto.VaultRequest{{UUID: d.vault, Name: "data", Keys: true}}})
			switch {
			case i == 0 && err != nil:
				t.Errorf("%s: the first use: %v", d.name, err)
			case i == 1 && (!errors.Is(err, errRefused) || !strings.Contains(err.Error(), "409")):
				t.Errorf("%s: the second use: %v, want 409", d.name, err)
			}
		}
	}
	if t.Failed() {
		t.Logf("replica 1:\n%s", reps[1].p.LogTail(40))
	}
}
