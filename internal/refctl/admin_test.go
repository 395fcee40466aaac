package refctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func initDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ctl")
	if err := Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestInitMakesPrivateKeysAndRefusesToRunTwice(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ctl")
	if err := Init(dir, []string{"10.1.2.3", "Controller.Example", "::1"}); err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{"": 0o700, "ca.key": 0o600, "server.key": 0o600, "signing.key": 0o600, "state.json": 0o600,
		"ca.crt": 0o644, "server.crt": 0o644}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	srv, err := readCert(filepath.Join(dir, "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := readCert(CACertPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.CheckSignatureFrom(ca); err != nil {
		t.Errorf("the server certificate is not the CA's: %v", err)
	}
	if len(srv.IPAddresses) != 2 || !slices.Equal(srv.DNSNames, []string{"controller.example"}) {
		t.Errorf("server certificate for %v %v", srv.IPAddresses, srv.DNSNames)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err := Init(dir, nil); !errors.Is(err, ErrInitialised) {
		t.Errorf("init twice: %v, want ErrInitialised", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.key")); string(after) != string(before) {
		t.Error("init twice overwrote the CA key")
	}
	if err := Init(filepath.Join(t.TempDir(), "x"), []string{"not a host!"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a bad host: %v, want ErrInvalid", err)
	}
}

func TestCommandsOnADirectoryWithNoControllerSaySo(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenDir(dir).AddDevice(context.Background(), "edge-7", nil, nil); !errors.Is(err, ErrNotInitialised) {
		t.Errorf("add: %v", err)
	}
	if _, err := OpenDir(dir).Show(context.Background(), "edge-7"); !errors.Is(err, ErrNotInitialised) {
		t.Errorf("show: %v", err)
	}
}

func TestAddDeviceKeepsOnlyTheTokensHash(t *testing.T) {
	dir := initDir(t)
	tok, err := OpenDir(dir).AddDevice(context.Background(), "edge-7", nil, map[string]string{"location": "hall-3"})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(tok) {
		t.Errorf("token %q is not 32 bytes of base64url", tok)
	}
	state, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	if strings.Contains(string(state), tok) || !strings.Contains(string(state), hashToken(tok)) {
		t.Error("state.json holds the token, or not its hash")
	}
	d, err := OpenDir(dir).Show(context.Background(), "edge-7")
	if err != nil {
		t.Fatal(err)
	}
	if d.Enrolled || !slices.Equal(d.PCRs, DefaultPCRs) || d.Claims["location"] != "hall-3" || time.Until(d.TokenExpires) < 23*time.Hour {
		t.Errorf("show: %+v", d)
	}

	cases := []struct {
		name   string
		dev    string
		pcrs   []int
		claims map[string]string
		want   error
	}{
		{"the same name again", "edge-7", nil, nil, ErrExists},
		{"a name with upper case", "Edge-8", nil, nil, ErrInvalid},
		{"a PCR out of range", "edge-8", []int{24}, nil, ErrInvalid},
		{"a PCR twice", "edge-8", []int{7, 7}, nil, ErrInvalid},
		{"no PCR", "edge-8", []int{}, nil, ErrInvalid},
		{"a bad claim name", "edge-8", nil, map[string]string{"Loc": "x"}, ErrInvalid},
	}
	for _, tc := range cases {
		if _, err := OpenDir(dir).AddDevice(context.Background(), tc.dev, tc.pcrs, tc.claims); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if tok2, err := OpenDir(dir).Reenrol(context.Background(), "edge-7"); err != nil || tok2 == tok {
		t.Errorf("reenrol: %v", err)
	}
	if _, err := OpenDir(dir).Reenrol(context.Background(), "edge-9"); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("reenrol an unknown device: %v", err)
	}
}

func TestCommandsRunningTogetherLoseNothing(t *testing.T) {
	dir := initDir(t)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if _, err := OpenDir(dir).AddDevice(context.Background(), fmt.Sprintf("edge-%d", i), nil, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Listed by pages of 5: 5, 5, 5, 1, and then no next page.
	var all []*DeviceView
	after := ""
	for range 5 {
		p, err := OpenDir(dir).List(context.Background(), after, 5)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Devices...)
		if after = p.Next; after == "" {
			break
		}
	}
	if len(all) != 16 || after != "" {
		t.Errorf("%d devices listed, next %q; want 16, and no next page", len(all), after)
	}
}

func TestOperatorCommandsOnADevice(t *testing.T) {
	dir := initDir(t)
	if _, err := OpenDir(dir).AddDevice(context.Background(), "edge-7", []int{7, 16}, nil); err != nil {
		t.Fatal(err)
	}
	if err := OpenDir(dir).Expect(context.Background(), "edge-7", map[string]string{"location": "hall-4"}); err != nil {
		t.Fatal(err)
	}
	if err := OpenDir(dir).Revoke(context.Background(), "edge-7", true); err != nil {
		t.Fatal(err)
	}
	d, _ := OpenDir(dir).Show(context.Background(), "edge-7")
	if !d.Revoked || d.Claims["location"] != "hall-4" {
		t.Errorf("after revoke and expect: %+v", d)
	}
	if err := OpenDir(dir).Revoke(context.Background(), "edge-7", false); err != nil {
		t.Fatal(err)
	}
	if err := OpenDir(dir).Expect(context.Background(), "edge-7", nil); err != nil {
		t.Fatal(err)
	}
	if d, _ := OpenDir(dir).Show(context.Background(), "edge-7"); d.Revoked || d.Claims != nil {
		t.Errorf("after restore and clear: %+v", d)
	}
	if _, err := OpenDir(dir).Approve(context.Background(), "edge-7"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no refused quote") {
		t.Errorf("approve with nothing refused: %v", err)
	}
	if err := OpenDir(dir).Revoke(context.Background(), "edge-9", true); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("revoke an unknown device: %v", err)
	}
	if _, err := OpenDir(dir).Rotate(context.Background(), "edge-7", "alpha"); !errors.Is(err, ErrUnknownVault) {
		t.Errorf("rotate an unknown vault: %v", err)
	}

	// Approve makes the refused values the expected ones, once.
	err := newPaths(dir).update(func(st *state) (bool, error) {
		d := st.Devices["edge-7"]
		d.Expected = map[int]string{7: strings.Repeat("00", 32), 16: strings.Repeat("00", 32)}
		d.Refused = &refusal{Changed: []int{16}, PCRs: map[int]string{7: strings.Repeat("00", 32), 16: strings.Repeat("16", 32)}}
		now := time.Now()
		d.Vaults = map[string]*vault{}
		for _, id := range []string{"0b5e2a3c-1d4f-4a6b-8c9d-0e1f2a3b4c5d", "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910"} {
			d.Vaults[id], _ = newVault("data", false, now)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := OpenDir(dir).Approve(context.Background(), "edge-7")
	if err != nil || !slices.Equal(changed, []int{16}) {
		t.Fatalf("approve: %v %v", changed, err)
	}
	if d, _ := OpenDir(dir).Show(context.Background(), "edge-7"); d.Expected[16] != strings.Repeat("16", 32) || d.Refused != nil {
		t.Errorf("after approve: %+v", d)
	}

	// Two vaults of one name: the UUID says which.
	if _, err := OpenDir(dir).Rotate(context.Background(), "edge-7", "data"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "give the UUID") {
		t.Errorf("rotate an ambiguous name: %v", err)
	}
	r, err := OpenDir(dir).Rotate(context.Background(), "edge-7", "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910")
	if err != nil {
		t.Fatal(err)
	}
	// It says what it did: which vault, and that the device has not yet
	// reported holding version 1, so version 2 waits for it.
	if want := (Rotation{Device: "edge-7", Vault: "data", UUID: "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910", Newest: 1, Acked: 0}); r != want || !r.Waiting() {
		t.Errorf("rotate by UUID said %+v (waiting %v), want %+v", r, r.Waiting(), want)
	}
	d, _ = OpenDir(dir).Show(context.Background(), "edge-7")
	if len(d.Vaults) != 2 || d.Vaults[0].RotatePending || !d.Vaults[1].RotatePending {
		t.Errorf("rotate by UUID: %+v", d.Vaults)
	}
}
