//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/tests/testbed"
)

// impostorSource is a consumer snap's program that takes edgeseal's place
// (issue 15, finding 5). The socket's directory is shared writable with every
// snap plugged into the same tokend slot, so it can: it fetches its own token from
// the provider, makes a CA and a TLS "Vault" of its own, removes the socket
// and listens at its path. Each answer holds its own, valid token; the first
// answer (and every other one after) names its own Vault and CA, which vouches
// for the token as issued to whoever connected (it reads the caller's pid from
// SO_PEERCRED); the second names the device's real Vault and its own CA.
const impostorSource = `package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	sock := os.Args[1]
	c, err := net.Dial("unix", sock)
	check(err)
	c.Write([]byte("{\"v\":1}\n"))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	check(err)
	c.Close()
	var resp map[string]any
	check(json.Unmarshal(line, &resp))
	if resp["status"] != "ok" {
		check(fmt.Errorf("no token of my own: %s", line))
	}
	realVault, _ := resp["vault_addr"].(string)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgeseal per-boot CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	check(err)
	caFile := filepath.Join(filepath.Dir(sock), "ca.crt")
	check(os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	check(err)
	var victim atomic.Int64
	tl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	check(err)
	go http.Serve(tl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"creation_time": time.Now().Unix(),
			"meta": map[string]string{"edgeseal_service": "consumer", "pid": strconv.FormatInt(victim.Load(), 10),
				"boot_id": strings.TrimSpace(string(boot))}}})
	}))
	ownVault := "https://" + tl.Addr().String()

	check(os.Remove(sock))
	ln, err := net.Listen("unix", sock)
	check(err)
	check(os.Chmod(sock, 0o666))
	fmt.Printf("impostor: replaced %s; my Vault %s, my CA %s\n", sock, ownVault, caFile)
	for n := 0; ; n++ {
		conn, err := ln.Accept()
		check(err)
		bufio.NewReader(conn).ReadBytes('\n')
		raw, _ := conn.(*net.UnixConn).SyscallConn()
		var cred *syscall.Ucred
		raw.Control(func(fd uintptr) { cred, _ = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED) })
		victim.Store(int64(cred.Pid))
		resp["vault_addr"], resp["ca_cert"] = ownVault, caFile
		if n%2 == 1 {
			resp["vault_addr"] = realVault
		}
		resp["service"], resp["identity"] = "consumer", fmt.Sprintf("snap app es-consumer.fetch (pid %d)", cred.Pid)
		out, _ := json.Marshal(resp)
		conn.Write(append(out, '\n'))
		conn.Close()
		fmt.Printf("impostor: answered pid %d naming Vault %s\n", cred.Pid, resp["vault_addr"])
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "impostor:", err)
		os.Exit(1)
	}
}
`

// impostorSnapYAML is the attacker: an ordinary consumer of the tokend slot,
// with a token of its own.
const impostorSnapYAML = `name: es-impostor
version: '1'
summary: A consumer snap that answers on edgeseal's token socket
description: Replaces the socket in the shared directory (issue 15, finding 5).
base: bare
confinement: strict
grade: devel
apps:
  impostor:
    command: bin/impostor $SNAP_DATA/edgeseal/tokend.sock
    daemon: simple
    install-mode: disable
    restart-condition: never
    plugs: [edgeseal-tokend, network, network-bind]
plugs:
  edgeseal-tokend:
    interface: content
    content: edgeseal-tokend
    target: $SNAP_DATA/edgeseal
`

// packImpostor builds the impostor statically and packs its snap into out.
func packImpostor(t *testing.T, out string) {
	t.Helper()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "go.mod"), []byte("module impostor\n\ngo 1.22\n"), 0o644)
	writeFile(t, filepath.Join(src, "main.go"), []byte(impostorSource), 0o644)
	dir := filepath.Join(t.TempDir(), "es-impostor")
	if err := os.MkdirAll(filepath.Join(dir, "meta"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "meta", "snap.yaml"), []byte(impostorSnapYAML), 0o644)
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", "impostor"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOFLAGS=-mod=mod")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build impostor: %v\n%s", err, b)
	}
	if b, err := exec.Command("snap", "pack", dir, out).CombinedOutput(); err != nil {
		t.Fatalf("snap pack es-impostor: %v\n%s", err, b)
	}
}

// A consumer snap replaces edgeseal's token socket in the directory a tokend
// slot shares writable, and answers another consumer with a token of its own
// (valid: from its own grant) and a Vault and CA of its own, then with the
// device's real Vault. The victim's `edgeseal token fetch` refuses both
// answers, naming the impostor, and writes no token; the provider notices its
// socket was replaced and says so in its journal.
//
// Each consumer has a slot of its own (tokend-1 to tokend-8), and AppArmor
// keeps a consumer out of the other slots' directories: the vm backend's
// spread task (tests/spread/snap/install) shows the kernel refusing that
// replacement. Here the two share one slot, as when an operator connects two
// consumers to the same one, and the container has no AppArmor: what is left
// is the client's own check, shown here.
func TestSnapConsumerRefusesAnotherConsumerThatReplacedTheTokenSocket(t *testing.T) {
	impostorDir := t.TempDir()
	packImpostor(t, impostorDir)
	tpm := testbed.StartSWTPM(t)
	m, sh := snapDevice(t, testbed.Bind{Host: impostorDir, Container: "/srv/impostor", ReadOnly: true})
	ctx := context.Background()

	t.Log("Given edgeseal's snap serving two consumer snaps connected to the same slot, es-consumer (the victim) and es-impostor, each with a token of its own")
	sh(t, "snap install --dangerous /srv/snaps/edgeseal_*.snap")
	// The plugs the chain waits for (docs/snap.md); tpm is not one with swtpm.
	sh(t, "snap connect edgeseal:daemon-notify && snap connect edgeseal:system-observe")
	apiPort := testbed.FreeLoopbackPort(t)
	services := `[{"name":"consumer","snap-apps":["es-consumer.fetch"]},{"name":"impostor","snap-apps":["es-impostor.impostor"]}]`
	sh(t, fmt.Sprintf("snap set edgeseal seal.tpm2.device=swtpm:127.0.0.1:%d vault.listen=127.0.0.1:%d services='%s'",
		tpm.Port, apiPort, services))
	deadline := time.Now().Add(90 * time.Second)
	for !serviceIs(sh(t, "snap services edgeseal.unseal"), "edgeseal.unseal", "enabled", "active") {
		if time.Now().After(deadline) {
			t.Fatalf("edgeseal.unseal not active:\n%s", m.Journal(t, "snap.edgeseal.unseal.service"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	sh(t, "snap install --dangerous /srv/snaps/es-consumer_*.snap && snap install --dangerous /srv/impostor/es-impostor_*.snap")
	sh(t, "snap connect es-consumer:edgeseal-tokend edgeseal:tokend-1 && snap connect es-consumer:edgeseal-ca edgeseal:tokend-ca && snap connect es-impostor:edgeseal-tokend edgeseal:tokend-1")
	if out := sh(t, "snap run es-consumer.fetch"); !strings.Contains(out, "service consumer") {
		t.Fatalf("before the attack, the victim's fetch said %q", out)
	}
	sh(t, "rm /var/snap/es-consumer/current/token.json")

	t.Log("When es-impostor fetches its own token, then replaces the socket with its own listener")
	sh(t, "snap start es-impostor.impostor")
	var impostorLog string
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(impostorLog, "impostor: replaced"); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the impostor did not replace the socket:\n%s", m.Journal(t, "snap.es-impostor.impostor.service"))
		}
		impostorLog = m.Journal(t, "snap.es-impostor.impostor.service")
	}
	impostorPID := strings.TrimSpace(sh(t, "systemctl show -P MainPID snap.es-impostor.impostor.service"))

	t.Run("the provider notices its socket was replaced", func(t *testing.T) {
		var journal string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			journal = m.Journal(t, "snap.edgeseal.tokend.service")
			if strings.Contains(journal, "the token socket was replaced") || time.Now().After(deadline) {
				break
			}
		}
		if !strings.Contains(journal, "the token socket was replaced") || !strings.Contains(journal, "another socket") {
			t.Errorf("the provider's journal does not say its socket was replaced:\n%s", journal)
		}
		t.Logf("provider's journal: %s", testbed.GrepLines(journal, "replaced"))
	})

	for _, round := range []struct {
		name, says string
	}{
		// Its own Vault, which vouches for the token as the victim's: only
		// the CA the victim pins tells it apart.
		{"an answer naming the impostor's own Vault and CA", "has no certificate of this device's CA"},
		// The device's Vault: lookup-self there names the impostor's process.
		{"an answer naming the device's Vault and the impostor's CA", "the token was issued to pid " + impostorPID + ", not to this process"},
	} {
		t.Run("the victim refuses "+round.name, func(t *testing.T) {
			t.Log("When the victim fetches its token")
			out, errOut, err := m.Run(ctx, "snap", "run", "es-consumer.fetch")
			t.Logf("victim: exit %v\nstdout: %s\nstderr: %s", err, out, errOut)
			t.Log("Then it refuses the answer as not edgeseal's, naming why, and writes no token")
			if err == nil {
				t.Errorf("the victim took the impostor's answer: %s", out)
			}
			if !strings.Contains(errOut, "did not come from edgeseal's token provider") || !strings.Contains(errOut, round.says) {
				t.Errorf("the victim's error does not name the impostor (%q):\n%s", round.says, errOut)
			}
			if _, _, err := m.Run(ctx, "test", "-e", "/var/snap/es-consumer/current/token.json"); err == nil {
				t.Error("the victim wrote the impostor's token")
			}
		})
	}
	if answered := regexp.MustCompile(`impostor: answered pid \d+`).FindAllString(m.Journal(t, "snap.es-impostor.impostor.service"), -1); len(answered) != 2 {
		t.Errorf("the impostor answered %d times, want 2 (the test would prove nothing): %v", len(answered), answered)
	}
}
