//go:build integration

package refctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/tpm"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// The OpenBao store on a three-node OpenBao cluster with integrated storage
// (Raft), TLS on loopback, from the test bed's pinned build.

// StartCluster starts a three-node cluster for one test (the package's
// external tests use it too).
func StartCluster(t testing.TB) *testbed.RaftCluster {
	t.Helper()
	srv, err := testbed.DefaultServer()
	if err != nil {
		t.Fatal(err)
	}
	if srv.Kind.Name() != "OpenBao" {
		// The store is OpenBao's (the server the snap ships); the
		// server matrix's Vault run leaves it to the OpenBao run.
		srv, err = testbed.ServerNamed("openbao")
		if err != nil {
			t.Fatal(err)
		}
	}
	return testbed.StartRaftCluster(t, srv, 3)
}

var mountSeq atomic.Int32

// OnBao initialises a controller in mounts of its own on cl, and returns
// it, its store's file, and the CA its devices trust.
func OnBao(t testing.TB, cl *testbed.RaftCluster) (*Controller, string, string) {
	t.Helper()
	n := mountSeq.Add(1)
	out := filepath.Join(t.TempDir(), "openbao.json")
	cfg, err := InitOpenBao(context.Background(), BaoInit{Addresses: cl.Addrs(), CAFile: cl.CAFile(), AdminToken: cl.RootToken(),
		KVMount: fmt.Sprintf("ctl%d", n), TransitMount: fmt.Sprintf("ctl%d-transit", n), Out: out})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := OpenOpenBao(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ctl, out, BaoCACertPath(out)
}

func TestTheOpenBaoStoreAnswersAsTheDirectoryDoes(t *testing.T) {
	cl := StartCluster(t)
	for name, test := range serverSuite {
		t.Run(name, func(t *testing.T) {
			test(t, func(t *testing.T, opts Options) *ctl {
				ctl, _, _ := OnBao(t, cl)
				return newCtlOn(t, ctl, opts)
			})
		})
	}
}

func TestTheOpenBaoStoreKeepsTheSigningKeyInTransitAndWritesOnlyWithCheckAndSet(t *testing.T) {
	cl := StartCluster(t)
	ctl, file, _ := OnBao(t, cl)
	cfg, err := LoadBaoConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the store's file: %v %v, want 0600", fi.Mode(), err)
	}
	root := cl.RootClient(t, 0)
	key, err := root.Logical().Read(cfg.TransitMount + "/keys/" + signingKeyName)
	if err != nil || key == nil {
		t.Fatal(err)
	}
	if key.Data["exportable"] != false || key.Data["allow_plaintext_backup"] != false {
		t.Errorf("the signing key: exportable %v, plaintext backup %v", key.Data["exportable"], key.Data["allow_plaintext_backup"])
	}
	if _, err := root.Logical().Read(cfg.TransitMount + "/export/signing-key/" + signingKeyName); err == nil {
		t.Error("the signing key can be exported")
	}
	kvc, err := root.Logical().Read(cfg.KVMount + "/config")
	if err != nil || kvc == nil || kvc.Data["cas_required"] != true {
		t.Fatalf("the KV mount's config: %v %v, want cas_required", kvc, err)
	}

	t.Log("When the controller's own token tries what its policy does not allow, Then OpenBao refuses")
	bs := ctl.st.(*baoStore)
	tok, err := bs.login(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := cl.Client(t, 0)
	c.SetToken(tok)
	for _, try := range []struct {
		what string
		do   func() error
	}{
		{"read another mount", func() error { _, err := c.Logical().Read("sys/mounts"); return err }},
		{"delete a device", func() error { _, err := c.Logical().Delete(cfg.KVMount + "/metadata/devices/" + "edge-1"); return err }},
		{"export the signing key", func() error {
			_, err := c.Logical().Read(cfg.TransitMount + "/export/signing-key/" + signingKeyName)
			return err
		}},
		{"rotate the signing key", func() error {
			_, err := c.Logical().Write(cfg.TransitMount+"/keys/"+signingKeyName+"/rotate", nil)
			return err
		}},
		{"rewrite the identity", func() error {
			_, err := c.Logical().Write(cfg.KVMount+"/data/identity", map[string]any{"data": map[string]any{}})
			return err
		}},
	} {
		if err := try.do(); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s: %v, want permission denied", try.what, err)
		}
	}
}

func TestAReplicaDoesNotServeHalfReadyWhenItsStoreCannotServe(t *testing.T) {
	cl := StartCluster(t)
	_, file, _ := OnBao(t, cl)
	good, err := LoadBaoConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(t *testing.T, cfg BaoConfig) error {
		t.Helper()
		ctl, err := OpenOpenBao(&cfg)
		if err != nil {
			return err
		}
		ready := false
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		err = ctl.Serve(ctx, "127.0.0.1:0", Options{Log: &lockedBuffer{}, Ready: func(string) { ready = true; cancel() }})
		if ready {
			t.Errorf("it served (err %v)", err)
		}
		return err
	}

	t.Run("store unreachable", func(t *testing.T) {
		cfg := *good
		cfg.Addresses = []string{fmt.Sprintf("https://127.0.0.1:%d", testbed.FreeLoopbackPort(t))}
		if err := serve(t, cfg); !errors.Is(err, ErrStoreUnavailable) {
			t.Errorf("%v, want ErrStoreUnavailable", err)
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other-ca.pem")
		dir := filepath.Join(t.TempDir(), "ctl")
		if err := Init(dir, nil); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(CACertPath(dir))
		os.WriteFile(other, data, 0o600)
		cfg := *good
		cfg.CAFile = other
		err := serve(t, cfg)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%v, want a certificate error", err)
		}
	})
	t.Run("policy missing a capability", func(t *testing.T) {
		cfg := *good
		root := cl.RootClient(t, 0)
		policy := strings.ReplaceAll(good.BaoPolicy(), `path "`+good.TransitMount+`/sign/`+signingKeyName+`" { capabilities = ["update"] }`, "")
		if _, err := root.Logical().Write("sys/policies/acl/"+good.KVMount, map[string]any{"policy": policy}); err != nil {
			t.Fatal(err)
		}
		defer root.Logical().Write("sys/policies/acl/"+good.KVMount, map[string]any{"policy": good.BaoPolicy()})
		err := serve(t, cfg)
		if !errors.Is(err, ErrStoreMisconfigured) || !strings.Contains(err.Error(), "update on "+good.TransitMount+"/sign/"+signingKeyName) {
			t.Errorf("%v, want the missing capability named", err)
		}
	})
	t.Run("no quorum", func(t *testing.T) {
		// Two of three nodes gone: no leader can be elected.
		leader, err := cl.Leader(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var killed []int
		for i := range 3 {
			if i != leader && len(killed) < 1 {
				killed = append(killed, i)
			}
		}
		killed = append(killed, leader)
		for _, i := range killed {
			cl.Kill(t, i)
		}
		defer func() {
			for _, i := range killed {
				cl.Restart(t, i)
			}
		}()
		start := time.Now()
		err = serve(t, *good)
		if !errors.Is(err, ErrStoreUnavailable) {
			t.Errorf("%v, want ErrStoreUnavailable", err)
		}
		t.Logf("refused after %v", time.Since(start).Round(time.Millisecond))
	})
}

func TestADirectoryControllerMovesToOpenBaoAndItsDevicesGoOn(t *testing.T) {
	cl := StartCluster(t)
	old := newCtl(t, Options{})
	ctx := context.Background()
	t.Log("Given a device with a vault at key version 2 of 2 and an escrowed key, and a device waiting to enrol")
	vr := ctlproto.VaultRequest{UUID: "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910", Name: "data", Keys: true}
	b := old.keys(vr)
	if b.Vaults[0].Status != ctlproto.Released {
		t.Fatalf("%+v", b.Vaults[0])
	}
	old.report(ctlproto.VaultReport{UUID: vr.UUID, KeyVersion: 1, Escrow: old.fakeEscrow()})
	if _, err := old.ctl.Rotate(ctx, testDevice, "data"); err != nil {
		t.Fatal(err)
	}
	vr.KeyVersion = 1
	old.keys(vr)
	waiting, err := old.ctl.AddDevice(ctx, "edge-8", nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Log("When an OpenBao store is set up from the directory and the devices migrated, twice")
	out := filepath.Join(t.TempDir(), "openbao.json")
	cfg, err := InitOpenBao(ctx, BaoInit{Addresses: cl.Addrs(), CAFile: cl.CAFile(), AdminToken: cl.RootToken(), Out: out, FromDir: old.dir})
	if err != nil {
		t.Fatal(err)
	}
	bao, err := OpenOpenBao(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Migrate(ctx, old.dir, bao)
	if err != nil {
		t.Fatal(err)
	}
	if m.Devices != 2 || m.Copied != 2 || m.KeyVersions != 2 || m.Escrows != 1 {
		t.Errorf("first run: %+v", m)
	}
	if m, err = Migrate(ctx, old.dir, bao); err != nil || m.Copied != 0 || m.Already != 2 {
		t.Errorf("second run: %+v %v, want nothing copied, 2 there already", m, err)
	}

	t.Log("Then the device, with its old certificate and pinned key, gets both key versions from the new store")
	newer := &ctl{t: t, ctl: bao, log: &lockedBuffer{}, clock: old.clock, client: old.client, signer: old.signer}
	newer.serve(Options{})
	b = newer.keys(vr)
	if r := b.Vaults[0]; r.Status != ctlproto.Released || r.Current.Version != 2 || r.Previous.Version != 1 {
		t.Errorf("from the new store: %+v", r)
	}
	if d := newer.device(); len(d.Vaults[vr.UUID].Escrow) == 0 {
		t.Error("the escrowed key did not move")
	}
	t.Log("And the waiting device's token enrols it there")
	if name, err := bao.st.byToken(ctx, hashToken(waiting)); err != nil || name != "edge-8" {
		t.Errorf("the waiting token finds %q %v", name, err)
	}

	t.Log("When a store holds another controller's identity, Then migrate refuses")
	other, _, _ := OnBao(t, cl)
	if _, err := Migrate(ctx, old.dir, other); !errors.Is(err, ErrDiffers) {
		t.Errorf("%v, want ErrDiffers", err)
	}
}

// serverSuite are the server tests (server_test.go, on the directory
// store), run here on the OpenBao store.
var serverSuite = map[string]func(*testing.T, mkCtl){
	"TheServerAnswersOnlyPOSTsOfWellFormedMessages":      testTheServerAnswersOnlyPOSTsOfWellFormedMessages,
	"KeysAreReleasedSealedAndFollowTheDevicesReports":    testKeysAreReleasedSealedAndFollowTheDevicesReports,
	"RotationByAgeNeverGoesTwoVersionsAheadOfTheDevice":  testRotationByAgeNeverGoesTwoVersionsAheadOfTheDevice,
	"AStolenDeviceIsToldWhyAndOnlyItsUnlocksAreRecorded": testAStolenDeviceIsToldWhyAndOnlyItsUnlocksAreRecorded,
	"TheLargestRequestFitsInOneAnswer":                   testTheLargestRequestFitsInOneAnswer,
	"ChallengesAreBoundedAndExpire":                      testChallengesAreBoundedAndExpire,
	"TheLogNamesDevicesAndVerdictsNeverSecrets":          testTheLogNamesDevicesAndVerdictsNeverSecrets,
}

// fakeEscrow is a vault key escrowed by testDevice: sealed to its SRK.
func (c *ctl) fakeEscrow() []byte {
	c.t.Helper()
	srk, err := unmarshalSRK(c.device().SRKPublic)
	if err != nil {
		c.t.Fatal(err)
	}
	imp, err := tpm.SealToTPM(srk, make([]byte, 32))
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := imp.MarshalBinary()
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}
