//go:build integration

package integration

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/pki"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
	"github.com/edgeseal/edgeseal/internal/vaultclient"
	"github.com/edgeseal/edgeseal/tests/testbed"
)

// builtSnaps is the directory buildSnaps packed the snaps into, once for all
// the tests that install them; TestMain removes it.
var builtSnaps struct {
	once sync.Once
	dir  string
	ok   bool
}

// snapDevice boots a container with snapd working offline, the snaps of
// buildSnaps at /srv/snaps and binds besides, and returns it with a shell
// runner that fails the test on an error, printing the journal.
func snapDevice(t *testing.T, binds ...testbed.Bind) (*testbed.Machine, func(*testing.T, string) string) {
	t.Helper()
	m := testbed.Boot(t, testbed.MachineOptions{CPU: "0", Binds: append(snapdBinds(t), binds...)})
	sh := func(t *testing.T, script string) string {
		t.Helper()
		out, errOut, err := m.Run(context.Background(), "bash", "-euo", "pipefail", "-c", script)
		if err != nil {
			t.Fatalf("%s: %v\n%s%s\njournal:\n%s", script, err, out, errOut, m.Journal(t, ""))
		}
		return out
	}
	sh(t, "/srv/lib/snapd-offline.sh >/dev/null")
	return m, sh
}

// snapdBinds are what a container needs to run snapd offline and install the
// snaps of buildSnaps: those at /srv/snaps, tests/lib (snapd-offline.sh) at
// /srv/lib.
func snapdBinds(t testing.TB) []testbed.Bind {
	t.Helper()
	return []testbed.Bind{
		{Host: buildSnaps(t), Container: "/srv/snaps", ReadOnly: true},
		{Host: filepath.Join(repoRoot(), "tests", "lib"), Container: "/srv/lib", ReadOnly: true},
	}
}

// buildSnaps packs the edgeseal snap (`make snap`, which ships the OpenBao
// build as bin/bao) and the consumer snap into a directory of their own, the first
// time it is called, and returns that directory.
func buildSnaps(t testing.TB) string {
	t.Helper()
	testbed.Require(t, "snap", "mksquashfs")
	builtSnaps.once.Do(func() {
		dir, err := os.MkdirTemp("", "edgeseal-snaps-")
		if err != nil {
			t.Fatal(err)
		}
		builtSnaps.dir = dir
		packSnaps(t, dir)
		builtSnaps.ok = true // not reached when packSnaps stops the test
	})
	if !builtSnaps.ok {
		t.Fatal("the snaps could not be packed (see the first test that needed them)")
	}
	return builtSnaps.dir
}

// packSnaps packs the snaps into out.
func packSnaps(t testing.TB, out string) {
	t.Helper()
	// make snap's own default for SNAP_BAO: the OpenBao build, whatever
	// EDGESEAL_SERVER says (the snap ships OpenBao only). Its absence is the
	// test bed's error, saying what to run.
	if _, err := testbed.ServerNamed(string(vaultbin.OpenBao)); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-s", "-C", repoRoot(), "snap",
		"SNAPDIR="+filepath.Join(out, "build"), "SNAP_OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make snap: %v\n%s", err, b)
	}
	// The snap needs nothing of its base: every executable in it must be static.
	prime := filepath.Join(out, "build", "prime")
	for _, dir := range []string{"bin", "meta/hooks"} {
		entries, err := os.ReadDir(filepath.Join(prime, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := staticELF(filepath.Join(prime, dir, e.Name())); err != nil {
				t.Errorf("%s/%s: %v", dir, e.Name(), err)
			}
		}
	}
	// The test snaps: es-consumer with edgeseal's CLI, and es-intruder.
	cmd = exec.Command("make", "-s", "-C", repoRoot(), "test-snaps",
		"TEST_SNAPS_WORK="+filepath.Join(out, "build", "test-snaps"), "SNAP_OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make test-snaps: %v\n%s", err, b)
	}
	if err := os.RemoveAll(filepath.Join(out, "build")); err != nil {
		t.Fatal(err)
	}
}

// The story of a snap install: snapd, offline, installs edgeseal; its daemons
// wait for a TPM; once one is configured they start in order and Vault is
// unsealed; a bad option is refused by name; a consumer snap connected to the
// tokend slot gets its own token; and `snap remove` leaves nothing running.
func TestSnapInstallsOfflineAndServesAConsumerSnap(t *testing.T) {
	tpm := testbed.StartSWTPM(t)
	m, sh := snapDevice(t)
	ctx := context.Background()

	t0 := time.Now()
	sh(t, "snap install --dangerous /srv/snaps/edgeseal_*.snap")
	t.Logf("snap install: %v", time.Since(t0).Round(time.Millisecond))
	// Its server is the OpenBao build, the release edgeseal pins.
	openbao, err := testbed.ServerNamed(string(vaultbin.OpenBao))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSpace(sh(t, "/snap/edgeseal/current/bin/bao version"))
	t.Logf("/snap/edgeseal/current/bin/bao version: %s", out)
	if !strings.HasPrefix(out, openbao.String()+" ") {
		t.Errorf("the snap's bin/bao says %q, want %s", out, openbao)
	}
	// None of the plugs the chain needs is connected automatically: it
	// waits, disabled, and snap info names the first missing, then the next.
	for _, plug := range []string{"daemon-notify", "system-observe"} {
		if out := sh(t, "snap info edgeseal"); !strings.Contains(out, "status:  blocked") ||
			!strings.Contains(out, "snap connect edgeseal:"+plug) || !strings.Contains(out, plug+"-not-connected") {
			t.Errorf("snap info does not say the %s plug must be connected:\n%s", plug, out)
		}
		if out := sh(t, "snap services edgeseal"); !serviceIs(out, "edgeseal.unseal", "disabled", "inactive") {
			t.Fatalf("the chain started without its %s plug:\n%s", plug, out)
		}
		sh(t, "snap connect edgeseal:"+plug)
	}
	// No TPM at /dev/tpmrm0 here: the chain waits, disabled, for one.
	if out := sh(t, "snap services edgeseal"); !serviceIs(out, "edgeseal.unseal", "disabled", "inactive") {
		t.Fatalf("without a TPM the chain should wait, disabled:\n%s", out)
	}
	// and says so where a person looks.
	if out := sh(t, "snap info edgeseal"); !strings.Contains(out, "status:  blocked") || !strings.Contains(out, "no TPM") {
		t.Errorf("snap info does not say the snap waits for a TPM:\n%s", out)
	}
	// A TPM device the snap may not open yet (its tpm plug is not connected
	// automatically): still blocked, and saying what to connect. (A node
	// standing in for the TPM: nothing opens it here.)
	sh(t, "mknod -m 0600 /dev/tpmrm0 c 10 224 && snap set edgeseal seal.tpm2.pcrs='[7]'")
	if out := sh(t, "snap info edgeseal"); !strings.Contains(out, "status:  blocked") || !strings.Contains(out, "snap connect edgeseal:tpm") ||
		!strings.Contains(out, "tpm-not-connected") {
		t.Errorf("snap info does not say the tpm plug must be connected:\n%s", out)
	}
	if !serviceIs(sh(t, "snap services edgeseal"), "edgeseal.unseal", "disabled", "inactive") {
		t.Error("the chain started without its tpm plug connected")
	}
	sh(t, "rm /dev/tpmrm0")
	if got := strings.TrimSpace(sh(t, "snap get edgeseal vault.storage-path")); got != "/var/snap/edgeseal/current/vault/data" {
		t.Errorf("snap get vault.storage-path = %q", got)
	}

	apiPort := testbed.FreeLoopbackPort(t)
	services := `[{"name":"consumer","snap-apps":["es-consumer.fetch"]}]`
	t0 = time.Now()
	sh(t, fmt.Sprintf("snap set edgeseal seal.tpm2.device=swtpm:127.0.0.1:%d vault.listen=127.0.0.1:%d services='%s'",
		tpm.Port, apiPort, services))
	t.Run("the daemons start in order and Vault is unsealed", func(t *testing.T) {
		deadline := time.Now().Add(90 * time.Second)
		for !serviceIs(sh(t, "snap services edgeseal.unseal"), "edgeseal.unseal", "enabled", "active") {
			if time.Now().After(deadline) {
				t.Fatalf("edgeseal.unseal not active:\n%s\n%s", sh(t, "snap services edgeseal"), m.Journal(t, "snap.edgeseal.unseal.service"))
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("snap set to unsealed: %v", time.Since(t0).Round(time.Millisecond))
		// The unseal step is ready after Vault's start: at a first boot it
		// starts before Vault's restart with its TCP listener, and is ready
		// only after it.
		var last uint64
		for _, app := range []string{"pki", "vault", "unseal"} {
			prop := "ExecMainStartTimestampMonotonic"
			if app == "unseal" {
				prop = "ActiveEnterTimestampMonotonic"
			}
			v := sh(t, "systemctl show -P "+prop+" snap.edgeseal."+app+".service")
			at, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil || at == 0 {
				t.Fatalf("%s has no start time (%q)", app, v)
			}
			if at < last {
				t.Errorf("%s started before the step before it", app)
			}
			last = at
		}
		ca := sh(t, "cat /run/snap.edgeseal/pki/ca.crt")
		c := snapVaultClient(t, apiPort, ca)
		st, err := c.Sys().SealStatus()
		if err != nil || st.Sealed || !st.Initialized {
			t.Fatalf("Vault seal status %+v, %v", st, err)
		}
		// Connecting the tpm plug runs connect-plug-tpm, which finds the
		// chain running and leaves it so.
		sh(t, "snap connect edgeseal:tpm")
		if !serviceIs(sh(t, "snap services edgeseal.unseal"), "edgeseal.unseal", "enabled", "active") {
			t.Error("connecting the tpm plug stopped the chain")
		}
		// The operator's view, from the snap's own command.
		if out := sh(t, "snap run edgeseal status"); !strings.Contains(out, "ready: Vault is unsealed") ||
			!strings.Contains(out, "snap.edgeseal.unseal.service") || !strings.Contains(out, "snap.edgeseal.tokend.tokend.socket") {
			t.Errorf("snap run edgeseal status:\n%s", out)
		}
		if out := sh(t, "snap list edgeseal"); strings.Contains(out, "blocked") {
			t.Errorf("snap list still says blocked:\n%s", out)
		}
		if out := sh(t, "ls /var/snap/edgeseal/current/state"); !strings.Contains(out, "unseal-key.sealed") {
			t.Errorf("no sealed key in the snap's state: %s", out)
		}
	})

	t.Run("a bad option is refused by name and changes nothing", func(t *testing.T) {
		before := sh(t, "sha256sum /var/snap/edgeseal/current/edgeseal.yaml")
		_, errOut, err := m.Run(ctx, "snap", "set", "edgeseal", "vault.kv-version=3")
		if err == nil || !strings.Contains(errOut, "vault.kv-version") {
			t.Fatalf("snap set vault.kv-version=3: %v, %q; want a refusal naming vault.kv-version", err, errOut)
		}
		if got := strings.TrimSpace(sh(t, "snap get edgeseal vault.kv-version")); got != "2" {
			t.Errorf("after the refusal, vault.kv-version = %q, want 2", got)
		}
		if after := sh(t, "sha256sum /var/snap/edgeseal/current/edgeseal.yaml"); after != before {
			t.Error("the refused option changed the config file")
		}
		if !serviceIs(sh(t, "snap services edgeseal.unseal"), "edgeseal.unseal", "enabled", "active") {
			t.Error("the refused option stopped the chain")
		}
	})

	t.Run("a consumer snap connected to the tokend slot gets its own token", func(t *testing.T) {
		sh(t, "snap install --dangerous /srv/snaps/es-consumer_*.snap")
		sh(t, "snap connect es-consumer:edgeseal-tokend edgeseal:tokend-1 && snap connect es-consumer:edgeseal-ca edgeseal:tokend-ca")
		out := sh(t, "snap run es-consumer.fetch")
		if !strings.Contains(out, "service consumer") {
			t.Errorf("fetch said %q", out)
		}
		var resp struct {
			Auth struct {
				ClientToken string `json:"client_token"`
			} `json:"auth"`
		}
		if err := json.Unmarshal([]byte(sh(t, "cat /var/snap/es-consumer/current/token.json")), &resp); err != nil {
			t.Fatal(err)
		}
		c := snapVaultClient(t, apiPort, sh(t, "cat /run/snap.edgeseal/pki/ca.crt"))
		c.SetToken(resp.Auth.ClientToken)
		self, err := c.Auth().Token().LookupSelf()
		if err != nil {
			t.Fatalf("the consumer's token does not work: %v", err)
		}
		if pol := fmt.Sprint(self.Data["policies"]); !strings.Contains(pol, "consumer") {
			t.Errorf("the consumer's token has policies %s", pol)
		}
		// Another process of the device, not the consumer snap, is refused.
		_, errOut, err := m.Run(ctx, "/snap/es-consumer/current/bin/edgeseal", "token", "fetch",
			"--socket", "/var/snap/edgeseal/current/tokend/tokend.sock", "--out", "/root/stolen.json")
		if err == nil || !strings.Contains(errOut, "refused") {
			t.Errorf("a process outside the consumer snap: %v, %q; want a refusal", err, errOut)
		}
	})

	t.Run("snap remove leaves no daemon running", func(t *testing.T) {
		if out := sh(t, "ps -eo args= | grep -E '^/snap/edgeseal/' || true"); strings.TrimSpace(out) == "" {
			t.Fatal("no /snap/edgeseal/ process before the removal: the check after it would prove nothing")
		}
		sh(t, "snap remove es-consumer")
		sh(t, "snap remove --purge edgeseal")
		if out := sh(t, "systemctl list-units --all --no-legend 'snap.edgeseal.*'"); strings.TrimSpace(out) != "" {
			t.Errorf("units left after snap remove:\n%s", out)
		}
		if out := sh(t, "ps -eo args= | grep -E '^/snap/edgeseal/' || true"); strings.TrimSpace(out) != "" {
			t.Errorf("processes left after snap remove:\n%s", out)
		}
	})
}

// snapVaultClient is a client of the snap's Vault on the host's loopback,
// trusting the device's per-boot CA.
func snapVaultClient(t *testing.T, port int, caPEM string) *api.Client {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.crt")
	writeFile(t, f, []byte(caPEM), 0o644)
	pool, err := pki.LoadCAPool(f)
	if err != nil {
		t.Fatal(err)
	}
	c, err := vaultclient.New(fmt.Sprintf("https://127.0.0.1:%d", port), pool)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serviceIs tells whether `snap services` output lists app with this startup
// and current state.
func serviceIs(out, app, startup, current string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == app {
			return f[1] == startup && f[2] == current
		}
	}
	return false
}

// staticELF fails for a file that is not an ELF executable, or that asks for a
// program interpreter or shared libraries.
func staticELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked: it has a program interpreter")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("needs shared libraries %v", libs)
	}
	return nil
}
