//go:build integration

package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/refctl"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// startRefctl runs the reference controller in-process on a loopback port
// until the test ends: its directory and https://ADDR.
func startRefctl(t *testing.T) (dir, url string) {
	t.Helper()
	dir = t.TempDir()
	if err := refctl.Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	var log bytes.Buffer
	go func() {
		done <- refctl.OpenDir(dir).Serve(ctx, "127.0.0.1:0", refctl.Options{Log: &log, Ready: func(addr string) { ready <- addr }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("the controller: %v", err)
		}
		if t.Failed() {
			t.Logf("the controller's log:\n%s", log.String())
		}
	})
	select {
	case addr := <-ready:
		return dir, "https://" + addr
	case err := <-done:
		t.Fatalf("the controller did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the controller did not start in 10s")
	}
	return "", ""
}

// Given the reference controller on loopback with a device added, when the
// device enrols with its token and then asks for a vault's keys, then it
// gets its enrolment and a 32-byte controller key, the same as the previous
// (no rotation yet); the token does not enrol twice.
func TestEnrolAndKeysWithTheReferenceController(t *testing.T) {
	dir, url := startRefctl(t)
	token, err := refctl.OpenDir(dir).AddDevice(context.Background(), "gw-1", []int{7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(refctl.CACertPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	tp := startTPM(t)
	p := paths.New(t.TempDir())

	tc, err := tpm.Open(tp.spec)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Enrol(t.Context(), p, tc, []string{url + "/"}, ca, token, 10*time.Second)
	tc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if e.DeviceID != "gw-1" || e.URLs[0] != url {
		t.Errorf("enrolment %+v", e)
	}
	if got, err := LoadEnrolment(p); err != nil || !reflect.DeepEqual(got, e) {
		t.Errorf("LoadEnrolment = %+v, %v", got, err)
	}
	if fi, err := os.Stat(p.ClientKey); err != nil || fi.Mode() != 0o600 {
		t.Errorf("client key: %v, %v", fi, err)
	}

	d := &Device{Paths: p, OpenTPM: tp.open, Config: config.Controller{Timeout: config.Duration(10 * time.Second)}}
	r, err := d.Keys(t.Context(), []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Keys: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Clear()
	v := r.Vaults[uuidA]
	if v.Status != ctlproto.Released || v.Err != nil || v.Current == nil || len(v.Current.Secret) != ctlproto.KeySize ||
		v.Previous == nil || v.Previous.Version != v.Current.Version || !bytes.Equal(v.Current.Secret, v.Previous.Secret) {
		t.Fatalf("vault: %+v (attestation %+v)", v, r.Attestation)
	}
	if bytes.Equal(v.Current.Secret, make([]byte, ctlproto.KeySize)) {
		t.Error("the key is all zeros")
	}

	// With attestation: a quote of PCR 7 with the device's claims passes.
	d.Config.Claims = map[string]string{"site": "plant-7"}
	d.Config.LocationFile = writeFile(t, filepath.Join(t.TempDir(), "location"), "48.85,2.35\n")
	ch, q, err := d.Quote(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.PCRs, []int{7}) || len(q.PCRValues) != 1 || q.PCRValues[0].Index != 7 ||
		!maps.Equal(q.Claims, map[string]string{"site": "plant-7", "device_id": "gw-1", "location": "48.85,2.35"}) {
		t.Errorf("Quote: challenge %+v, quote %+v", ch, q)
	}
	r2, err := d.Keys(t.Context(), []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Keys: true, Attestation: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Clear()
	if r2.Attestation.Status != ctlproto.AttestVerified || !bytes.Equal(r2.Vaults[uuidA].Current.Secret, v.Current.Secret) {
		t.Errorf("with attestation: %+v, vault %+v", r2.Attestation, r2.Vaults[uuidA])
	}

	// The vault key escrowed, sealed to this TPM, comes back when asked for.
	vaultKey := randomBytes(EscrowKeySize)
	sealed, err := d.SealForEscrow(vaultKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Report(t.Context(), &ctlproto.Report{Vaults: []ctlproto.VaultReport{
		{UUID: uuidA, KeyVersion: v.Current.Version, Escrow: sealed, Unlocked: "controller-key"}}}); err != nil {
		t.Fatal(err)
	}
	r3, err := d.Keys(t.Context(), []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Escrow: true, KeyVersion: v.Current.Version}})
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Clear()
	if got := r3.Vaults[uuidA]; got.Err != nil || !bytes.Equal(got.Escrow, vaultKey) {
		t.Errorf("the escrowed key: %+v (attestation %+v)", got, r3.Attestation)
	}

	// The token was spent: enrolling again with it (forced) is refused.
	if err := os.Remove(p.Enrolment); err != nil {
		t.Fatal(err)
	}
	tc, err = tpm.Open(tp.spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_, err = Enrol(t.Context(), p, tc, []string{url}, ca, token, 10*time.Second)
	if !errors.Is(err, ErrRefused) {
		t.Errorf("Enrol with a spent token: %v; want ErrRefused", err)
	}
	t.Log(err)
	if _, err := os.Stat(p.Enrolment); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an enrolment was written: %v", err)
	}
}

// Enrolling with a controller whose TLS certificate is not from the CA given
// is refused as such, before the token is sent.
func TestEnrolWithTheWrongCAIsRefused(t *testing.T) {
	dir, url := startRefctl(t)
	token, err := refctl.OpenDir(dir).AddDevice(context.Background(), "gw-1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tp := startTPM(t)
	tc, err := tpm.Open(tp.spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	p := paths.New(t.TempDir())
	_, err = Enrol(t.Context(), p, tc, []string{url}, newTestCA(t, "another CA").PEM, token, 10*time.Second)
	if !errors.Is(err, ErrServerCertificate) || errors.Is(err, ErrUnreachable) {
		t.Errorf("Enrol: %v; want ErrServerCertificate", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(p.Enrolment)); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
	// The token still works.
	if _, err := Enrol(t.Context(), p, tc, []string{url}, mustRead(t, refctl.CACertPath(dir)), token, 10*time.Second); err != nil {
		t.Errorf("Enrol with the right CA afterwards: %v", err)
	}
}

// startReplica runs `edgeseal-controller serve --openbao FILE` on a free
// loopback port as a process of the test's own, and waits until it listens.
func startReplica(t *testing.T, bin, storeFile, name string) (string, *testbed.Process) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(testbed.FreeLoopbackPort(t)))
	p := testbed.StartProcess(t, name, exec.Command(bin, "serve", "--listen", addr, "--openbao", storeFile))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return "https://" + addr, p
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s did not listen at %s:\n%s", name, addr, p.LogTail(20))
		}
	}
}

// Given a controller fleet (two edgeseal-controller replicas on a
// three-node OpenBao Raft cluster) and a device with a TPM enrolled with
// both replicas' URLs, when the replica it talks to and the Raft leader are
// killed, then its next unlock, attested, is answered by the other replica
// within the exchange's timeout, and its escrow report lands; when no
// replica is left, the device is told the controller is unreachable (the
// one failure that may use an offline copy).
func TestADeviceUnlocksThroughAFleetWhenItsReplicaAndTheRaftLeaderAreKilled(t *testing.T) {
	srv, err := testbed.ServerNamed("openbao")
	if err != nil {
		t.Fatal(err)
	}
	cl := testbed.StartRaftCluster(t, srv, 3)
	storeFile := filepath.Join(t.TempDir(), "openbao.json")
	cfg, err := refctl.InitOpenBao(t.Context(), refctl.BaoInit{Addresses: cl.Addrs(), CAFile: cl.CAFile(), AdminToken: cl.RootToken(), Out: storeFile})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := refctl.OpenOpenBao(cfg)
	if err != nil {
		t.Fatal(err)
	}
	token, err := ctl.AddDevice(t.Context(), "gw-1", []int{7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bin := testbed.Build(t, "./cmd/edgeseal-controller")
	url0, rep0 := startReplica(t, bin, storeFile, "replica-0")
	url1, rep1 := startReplica(t, bin, storeFile, "replica-1")

	t.Log("Given a device enrolled with both replicas")
	tp := startTPM(t)
	p := paths.New(t.TempDir())
	tc, err := tpm.Open(tp.spec)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Enrol(t.Context(), p, tc, []string{url0, url1}, mustRead(t, refctl.BaoCACertPath(storeFile)), token, 10*time.Second)
	tc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.URLs, []string{url0, url1}) {
		t.Fatalf("enrolled with %v", e.URLs)
	}
	const timeout = 10 * time.Second
	d := &Device{Paths: p, OpenTPM: tp.open, Config: config.Controller{Timeout: config.Duration(timeout)}}
	ask := []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Keys: true, Attestation: true}}
	r, err := d.Keys(t.Context(), ask)
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Clone(r.Vaults[uuidA].Current.Secret)
	version := r.Vaults[uuidA].Current.Version
	r.Clear()

	t.Log("When its replica and the Raft leader are killed (SIGKILL)")
	leader, err := cl.Leader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rep0.Kill(t)
	cl.Kill(t, leader)

	t.Log("Then its next attested unlock is answered by the other replica, within the timeout")
	t0 := time.Now()
	r, err = d.Keys(t.Context(), ask)
	took := time.Since(t0)
	if err != nil {
		t.Fatalf("after %v: %v\nreplica-1:\n%s", took, err, rep1.LogTail(20))
	}
	t.Logf("answered after %v", took.Round(time.Millisecond))
	if took > timeout {
		t.Errorf("the unlock took %v, more than controller.timeout %v", took, timeout)
	}
	got := r.Vaults[uuidA]
	if r.Attestation.Status != ctlproto.AttestVerified || got.Status != ctlproto.Released || !bytes.Equal(got.Current.Secret, first) {
		t.Errorf("after the kills: attestation %+v, vault %+v; want the same key, released after a verified quote", r.Attestation, got)
	}
	r.Clear()

	t.Log("And its escrow report lands, and comes back")
	vaultKey := randomBytes(EscrowKeySize)
	sealed, err := d.SealForEscrow(vaultKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Report(t.Context(), &ctlproto.Report{Vaults: []ctlproto.VaultReport{
		{UUID: uuidA, KeyVersion: version, Escrow: sealed, Unlocked: "controller-key"}}}); err != nil {
		t.Fatal(err)
	}
	r, err = d.Keys(t.Context(), []ctlproto.VaultRequest{{UUID: uuidA, Name: "config", Escrow: true, KeyVersion: version}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Vaults[uuidA]; got.Err != nil || !bytes.Equal(got.Escrow, vaultKey) {
		t.Errorf("the escrowed key: %+v", got)
	}
	r.Clear()

	t.Log("When no replica is left, Then the controller is unreachable, naming both")
	rep1.Kill(t)
	d.Config.Timeout = config.Duration(2 * time.Second)
	_, err = d.Keys(t.Context(), ask)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(fmt.Sprint(err), url0) || !strings.Contains(fmt.Sprint(err), url1) {
		t.Errorf("with no replica: %v; want ErrUnreachable naming both", err)
	}
	t.Log(err)
}
