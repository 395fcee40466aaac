package tokenclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The client trusts neither the socket's answer nor the Vault it names: these
// tests cover the pins and the lookup-self check with fake Vaults (the logic);
// verify_integration_test.go runs the check against a real Vault.

// fakeVaultOfAnotherCA is fakeVault with a certificate of a CA of its own, as
// an impostor's Vault has.
func fakeVaultOfAnotherCA(t *testing.T, h http.HandlerFunc) (addr, caFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "impostor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

func thisBootID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// lookupSelf is Vault's lookup-self data for a token with this metadata.
func lookupSelf(meta map[string]string, created time.Time) map[string]any {
	m := map[string]any{}
	for k, v := range meta {
		m[k] = v
	}
	return map[string]any{"meta": m, "creation_time": json.Number(strconv.FormatInt(created.Unix(), 10))}
}

// ourMeta is the metadata the provider gives a token issued to this process.
func ourMeta(t *testing.T, service string) map[string]string {
	return map[string]string{metaService: service, metaPID: strconv.Itoa(os.Getpid()), metaBootID: thisBootID(t), "uid": "1001"}
}

// vouch answers a lookup-self as Vault does for a token the provider issued
// to this process for service, and tells whether the request was one.
func vouch(t *testing.T, w http.ResponseWriter, r *http.Request, service string) bool {
	if r.URL.Path != "/v1/auth/token/lookup-self" {
		return false
	}
	data, _ := json.Marshal(map[string]any{"data": lookupSelf(ourMeta(t, service), time.Now())})
	w.Write(data)
	return true
}

func TestATokenIssuedToAnotherProcessOrBootIsAnImpostors(t *testing.T) {
	me := self{pid: os.Getpid(), bootID: thisBootID(t), started: time.Now().Add(-time.Minute)}
	with := func(k, v string) map[string]string {
		m := ourMeta(t, "collector")
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, c := range []struct {
		name    string
		data    map[string]any
		service string
		says    string // "" : accepted
	}{
		{"issued to this process in this boot", lookupSelf(ourMeta(t, "collector"), time.Now()), "collector", ""},
		// The attacker's own token: the provider wrote the attacker's pid.
		{"another pid", lookupSelf(with(metaPID, "1"), time.Now()), "collector", "issued to pid 1, not to this process"},
		{"another boot", lookupSelf(with(metaBootID, "0000"), time.Now()), "collector", "issued in boot 0000"},
		// A token no edgeseal provider made (a root or admin token, say).
		{"no pid", lookupSelf(with(metaPID, ""), time.Now()), "collector", "no edgeseal metadata"},
		{"no boot id", lookupSelf(with(metaBootID, ""), time.Now()), "collector", "no edgeseal metadata"},
		{"no metadata", map[string]any{"meta": nil}, "collector", "no edgeseal metadata"},
		// The answer says one service, the token is another's.
		{"another service", lookupSelf(ourMeta(t, "billing"), time.Now()), "collector", `token is of service "billing"`},
		// An earlier process that had this pid got the token (pid reuse).
		{"issued before this process started", lookupSelf(ourMeta(t, "collector"), time.Now().Add(-time.Hour)), "collector", "before this process"},
		// Vault's creation_time is whole seconds: a token of the same second stands.
		{"issued in the second this process started", lookupSelf(ourMeta(t, "collector"), me.started.Truncate(time.Second)), "collector", ""},
	} {
		err := checkIssuedTo(c.data, me, c.service)
		if c.name == "another boot" {
			// In a container a boot id differs within a boot: the start
			// time decides.
			inside := me
			inside.inContainer = true
			if err := checkIssuedTo(c.data, inside, c.service); err != nil {
				t.Errorf("another boot id in a container, issued after the start: %v, want it accepted", err)
			}
			old := lookupSelf(with(metaBootID, "0000"), time.Now().Add(-time.Hour))
			if err := checkIssuedTo(old, inside, c.service); !errors.Is(err, ErrImpostor) {
				t.Errorf("another boot id in a container, issued before the start: %v, want ErrImpostor", err)
			}
		}
		switch {
		case c.says == "" && err != nil:
			t.Errorf("%s: %v, want it accepted", c.name, err)
		case c.says != "" && (!errors.Is(err, ErrImpostor) || !strings.Contains(err.Error(), c.says)):
			t.Errorf("%s: err = %v, want ErrImpostor saying %q", c.name, err, c.says)
		}
	}
}

func TestProcessStartIsWhenTheProcessStarted(t *testing.T) {
	// Given a process started now
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// When its start is read from /proc, Then it is now, to within a second
	got := processStartOf("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat")
	if d := time.Since(got); d < -time.Second || d > 2*time.Second {
		t.Errorf("process started %v ago by /proc, want about 0 (%v)", d, got)
	}
	if own := processStart(); own.IsZero() || own.After(got) {
		t.Errorf("this process started at %v, after its child (%v)", own, got)
	}
}

func TestFetchUsesThePinnedVaultNotTheOneTheAnswerNames(t *testing.T) {
	// Given an answer naming another Vault, and a CA file beside it
	var asked atomic.Int32
	other, otherCA := fakeVault(t, func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		vouch(t, w, r, "collector")
	})
	r := okResponse(t)
	r.VaultAddr, r.CACert = other, otherCA
	f := newFakeProvider(t, answer(t, r))
	// When the client, pinned to its own Vault, fetches
	var checked atomic.Int32
	addr, ca := fakeVault(t, func(w http.ResponseWriter, r *http.Request) {
		checked.Add(1)
		vouch(t, w, r, "collector")
	})
	tok, err := fetchAt(t, f.socket, addr, ca)
	// Then the token is checked at, and bound to, the pinned Vault only
	if err != nil {
		t.Fatal(err)
	}
	if tok.VaultAddr != addr || tok.CACert != ca {
		t.Errorf("token bound to %s (%s), want the pinned %s (%s)", tok.VaultAddr, tok.CACert, addr, ca)
	}
	if checked.Load() != 1 || asked.Load() != 0 {
		t.Errorf("the pinned Vault was asked %d times, the answer's %d; want 1 and 0", checked.Load(), asked.Load())
	}
}

func TestFetchRefusesAnAnswerWhoseTokenWasIssuedToAnotherProcess(t *testing.T) {
	// Given a socket answering with a valid token issued to another process
	// (an impostor's own), plain or wrapped, and a Vault that knows it
	meta := ourMeta(t, "collector")
	meta[metaPID] = "4711"
	addr, ca := fakeVault(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/auth/token/lookup-self":
			data, _ := json.Marshal(map[string]any{"data": lookupSelf(meta, time.Now())})
			w.Write(data)
		case "/v1/sys/wrapping/unwrap":
			w.Write([]byte(`{"auth":{"client_token":"hvs.impostor","accessor":"acc","lease_duration":3600,"renewable":true}}`))
		default:
			vaultError(w, http.StatusBadRequest, "unexpected "+r.URL.Path)
		}
	})
	for name, a := range map[string]string{"plain": answer(t, okResponse(t)), "wrapped": wrappedAnswer(t, addr, ca)} {
		// When the client fetches
		tok, err := fetchAt(t, newFakeProvider(t, a).socket, addr, ca)
		// Then it refuses the answer as an impostor's, saying so
		if !errors.Is(err, ErrImpostor) || !strings.Contains(err.Error(), "did not come from edgeseal") ||
			!strings.Contains(err.Error(), "issued to pid 4711") || tok != nil {
			t.Errorf("%s: token %v, err = %v; want ErrImpostor naming pid 4711", name, tok, err)
		}
		if Temporary(err) {
			t.Errorf("%s: an impostor is not temporary", name)
		}
	}
}

func TestFetchRefusesAnAnswerNamingAVaultWithoutTheDevicesCertificate(t *testing.T) {
	// Given a client with no address of its own (no config), pinned to the
	// device's CA, and an answer naming a loopback Vault of another CA
	_, deviceCA := fakeVault(t, func(w http.ResponseWriter, r *http.Request) { vouch(t, w, r, "collector") })
	other, otherCA := fakeVaultOfAnotherCA(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/sys/wrapping/unwrap" {
			w.Write([]byte(`{"auth":{"client_token":"hvs.impostor","accessor":"acc","lease_duration":3600,"renewable":true}}`))
			return
		}
		vouch(t, w, r, "collector")
	})
	t.Setenv("EDGESEAL_VAULT_ADDR", "")
	for name, a := range map[string]string{
		"plain": answer(t, func() Response { r := okResponse(t); r.VaultAddr, r.CACert = other, otherCA; return r }()),
		// The wrapping token would go to the impostor's Vault: refused before.
		"wrapped": wrappedAnswer(t, other, otherCA),
	} {
		f := newFakeProvider(t, a)
		// When the client fetches
		_, err := Fetch(t.Context(), Options{Socket: f.socket, CACert: deviceCA, ConfigFile: filepath.Join(t.TempDir(), "absent.yaml")})
		// Then it refuses it as an impostor's
		if !errors.Is(err, ErrImpostor) || !strings.Contains(err.Error(), "has no certificate of this device's CA") {
			t.Errorf("%s: err = %v, want ErrImpostor", name, err)
		}
	}
}

func TestFetchDoesNotTakeAVaultTokenItCannotCheck(t *testing.T) {
	f := newFakeProvider(t, answer(t, okResponse(t)))
	for _, c := range []struct {
		name  string
		vault http.HandlerFunc
		want  error  // nil: any error that is not ErrImpostor
		says  string // in the message
	}{
		// Vault does not know the token: revoked already, or not this Vault's.
		{"unknown to Vault", func(w http.ResponseWriter, r *http.Request) { vaultError(w, http.StatusForbidden, "permission denied") },
			ErrSuperseded, "Vault does not know the token"},
		{"Vault sealed", func(w http.ResponseWriter, r *http.Request) {
			vaultError(w, http.StatusServiceUnavailable, "Vault is sealed")
		},
			ErrSealed, "cannot check the token"},
	} {
		addr, ca := fakeVault(t, c.vault)
		tok, err := fetchAt(t, f.socket, addr, ca)
		if tok != nil || err == nil || (c.want != nil && !errors.Is(err, c.want)) || (c.want == nil && errors.Is(err, ErrImpostor)) ||
			!strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: token %v, err = %v; want %v saying %q", c.name, tok, err, c.want, c.says)
		}
	}
	// A pinned Vault whose certificate the pinned CA does not verify is a
	// misconfiguration of the client, not an impostor.
	addr, _ := fakeVault(t, func(w http.ResponseWriter, r *http.Request) { vouch(t, w, r, "collector") })
	_, otherCA := fakeVaultOfAnotherCA(t, func(w http.ResponseWriter, r *http.Request) {})
	if _, err := fetchAt(t, f.socket, addr, otherCA); err == nil || errors.Is(err, ErrImpostor) || !strings.Contains(err.Error(), otherCA) {
		t.Errorf("pinned Vault of another CA: err = %v, want an error naming %s", err, otherCA)
	}
}

func TestFetchRefusesACACertificateInTheSocketsDirectory(t *testing.T) {
	// Given a CA certificate in the directory other consumers may write (not
	// there yet: an impostor would write it later)
	f := newFakeProvider(t, answer(t, okResponse(t)))
	ca := filepath.Join(filepath.Dir(f.socket), "ca.crt")
	// When the client is pinned to it, directly or through a link
	link := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.Symlink(ca, link); err != nil {
		t.Fatal(err)
	}
	for _, pinned := range []string{ca, link} {
		_, err := Fetch(t.Context(), Options{Socket: f.socket, VaultAddr: "https://127.0.0.1:8200", CACert: pinned})
		// Then it does not even ask
		if err == nil || !strings.Contains(err.Error(), "in the directory of the token socket") {
			t.Errorf("CA %s: err = %v", pinned, err)
		}
	}
	if n := len(f.requests); n != 0 {
		t.Errorf("the provider was asked %d times", n)
	}
	// On units, /run/edgeseal is root's: the per-boot CA below it is the pin.
	if ca, err := (Options{Socket: DefaultSocket}).caCert(DefaultSocket); err != nil || ca != DefaultCACert {
		t.Errorf("the units' default CA beside the default socket: %q, %v", ca, err)
	}
}

func TestTheVaultAddressComesFromTheCallerThenTheConfigThenALoopbackAnswer(t *testing.T) {
	dir := t.TempDir()
	conf := func(body string) string {
		p := filepath.Join(dir, strconv.Itoa(len(body))+".yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	absent := filepath.Join(dir, "absent.yaml")
	t.Setenv("EDGESEAL_VAULT_ADDR", "")
	for _, c := range []struct {
		name     string
		o        Options
		env      string
		answered string
		want     string // "": refused as an impostor's
	}{
		{"the caller's option wins", Options{VaultAddr: "https://10.0.0.1:8200", ConfigFile: conf("vault: {listen: 127.0.0.1:9}\n")}, "https://127.0.0.1:1", "https://127.0.0.1:8200", "https://10.0.0.1:8200"},
		{"then the environment", Options{ConfigFile: conf("vault: {listen: 127.0.0.1:9}\n")}, "https://127.0.0.1:1", "https://127.0.0.1:8200", "https://127.0.0.1:1"},
		{"then the device's config", Options{ConfigFile: conf("vault:\n  listen: 127.0.0.1:8206\n")}, "", "https://127.0.0.1:9999", "https://127.0.0.1:8206"},
		{"a config listening on all addresses", Options{ConfigFile: conf("vault:\n  listen: 0.0.0.0:8207\n  mount: kv\n")}, "", "https://127.0.0.1:9999", "https://127.0.0.1:8207"},
		{"a config without vault.listen", Options{ConfigFile: conf("# defaults\n")}, "", "https://127.0.0.1:9999", "https://127.0.0.1:8200"},
		{"no config: the answer's loopback address", Options{ConfigFile: absent}, "", "https://127.0.0.1:8201", "https://127.0.0.1:8201"},
		{"no config: an answer's IPv6 loopback", Options{ConfigFile: absent}, "", "https://[::1]:8201", "https://[::1]:8201"},
		{"no config: an answer's remote address", Options{ConfigFile: absent}, "", "https://203.0.113.7:8200", ""},
		{"no config: an answer's host name", Options{ConfigFile: absent}, "", "https://localhost.attacker.example:8200", ""},
		{"no config: an answer's plain http", Options{ConfigFile: absent}, "", "http://127.0.0.1:8200", ""},
	} {
		t.Setenv("EDGESEAL_VAULT_ADDR", c.env)
		got, err := c.o.vaultPin(c.answered)
		switch {
		case c.want == "" && !errors.Is(err, ErrImpostor):
			t.Errorf("%s: %+v, %v; want ErrImpostor", c.name, got, err)
		case c.want != "" && (err != nil || got.addr != c.want):
			t.Errorf("%s: %+v, %v; want %s", c.name, got, err, c.want)
		}
	}
	// A config the client cannot parse is an error, not a reason to trust the answer.
	if _, err := (Options{ConfigFile: conf("vault: [\n")}).vaultPin("https://127.0.0.1:8200"); err == nil || errors.Is(err, ErrImpostor) {
		t.Errorf("a broken config: err = %v", err)
	}
}

func TestASnapsClientPinsTheAnswersLoopbackAddressWithoutReadingTheHostsConfig(t *testing.T) {
	t.Setenv("EDGESEAL_VAULT_ADDR", "")
	t.Setenv("SNAP", "/snap/es-consumer/x1")
	p, err := Options{}.vaultPin("https://127.0.0.1:8206")
	if err != nil || p.addr != "https://127.0.0.1:8206" || !p.fromAnswer {
		t.Fatalf("pin %+v, %v; want the answer's loopback address", p, err)
	}
	if _, err := (Options{}).vaultPin("https://vault.example.com:8200"); !errors.Is(err, ErrImpostor) {
		t.Errorf("a non-loopback address in the answer: %v, want ErrImpostor", err)
	}
	// A config file named by the caller is still read.
	cfg := filepath.Join(t.TempDir(), "edgeseal.yaml")
	if err := os.WriteFile(cfg, []byte("vault:\n  listen: 127.0.0.1:9200\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := (Options{ConfigFile: cfg}).vaultPin("https://127.0.0.1:8206"); err != nil || p.fromAnswer {
		t.Errorf("with a config named: pin %+v, %v; want the config's", p, err)
	}
}
