//go:build integration

package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/edgeseal/edgeseal/internal/vaultbin"
)

// ServerVar names the server every test that runs on one server runs on
// (DefaultServer): "openbao", the default, or "vault". The boot stories of the
// server matrix run on both (Servers) whatever it says.
const ServerVar = "EDGESEAL_SERVER"

// Server is a Vault-compatible server of the test bed: a pinned release, built
// from its source into a cache outside the repository by its script in
// tests/lib (`make deps`).
type Server struct {
	Name        string        // "openbao" or "vault": a value of ServerVar, and the name of a subtest or sub-benchmark
	Kind        vaultbin.Kind // the server vaultconf.Render writes the config for
	Version     string        // the pinned release, without "v": "2.4.1"
	Bin         string        // the cached build on this machine
	InstallPath string        // where the units expect it inside a device (make install VAULT=...)
}

// String is the release as its binary says it: "OpenBao v2.4.1".
func (s Server) String() string { return s.Kind.Name() + " v" + s.Version }

// pin is a server's release and where it goes.
type pin struct {
	kind        vaultbin.Kind
	version     string
	script      string // builds it; with --path, prints where the build is
	installPath string
}

// pins are the test bed's servers, the default first: OpenBao, which `make
// install` and the snap ship, then HashiCorp Vault. The versions are those of
// the scripts; a build that says another is refused with what to run.
var pins = []pin{
	{vaultbin.OpenBao, "2.4.1", "tests/lib/build-openbao.sh", "/usr/bin/bao"},
	{vaultbin.Vault, "1.21.0", "tests/lib/build-vault.sh", "/usr/bin/vault"},
}

// serverNames is the accepted values of ServerVar, for messages: "openbao (the
// default) or vault".
func serverNames() string {
	var names []string
	for i, p := range pins {
		n := string(p.kind)
		if i == 0 {
			n += " (the default)"
		}
		names = append(names, n)
	}
	return strings.Join(names, " or ")
}

// DefaultServer is the server ServerVar names, OpenBao when it is unset, or an
// error naming the accepted values, or saying what to run when its build is
// missing.
func DefaultServer() (Server, error) {
	if err := checkStaleEnv(); err != nil {
		return Server{}, err
	}
	name, set := os.LookupEnv(ServerVar)
	if !set || name == "" {
		name = string(pins[0].kind)
	}
	for _, p := range pins {
		if string(p.kind) == name {
			return p.server()
		}
	}
	return Server{}, fmt.Errorf("%s=%q: the test bed runs %s", ServerVar, name, serverNames())
}

// Servers is every server of the test bed, the default first (OpenBao, then
// HashiCorp Vault): the server matrix. A missing build is an error saying what
// to run.
func Servers() ([]Server, error) {
	if err := checkStaleEnv(); err != nil {
		return nil, err
	}
	var out []Server
	for _, p := range pins {
		s, err := p.server()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// ServerNamed is the server of that name ("openbao" or "vault"), whatever
// ServerVar says: for what ships one server only (the snap: OpenBao).
func ServerNamed(name string) (Server, error) {
	for _, p := range pins {
		if string(p.kind) == name {
			return p.server()
		}
	}
	return Server{}, fmt.Errorf("the test bed has no server %q: it runs %s", name, serverNames())
}

// checkStaleEnv refuses EDGESEAL_VAULT, which named a Vault binary before the
// test bed had two servers: a run that still sets it would otherwise test
// another binary than it says.
func checkStaleEnv() error {
	if v := os.Getenv("EDGESEAL_VAULT"); v != "" {
		return fmt.Errorf("EDGESEAL_VAULT=%s is no longer read: the test bed runs its own builds of OpenBao and Vault; "+
			"unset it, and pick the server with %s=openbao or %s=vault", v, ServerVar, ServerVar)
	}
	return nil
}

// identified memoises server() per pin: `BIN version` of a binary of some
// hundred megabytes is worth running once per test binary.
var identified sync.Map // pin.kind -> func() (Server, error)

// server finds the pin's build (its script's --path) and checks that it is the
// pinned release (`BIN version`).
func (p pin) server() (Server, error) {
	f, _ := identified.LoadOrStore(p.kind, sync.OnceValues(p.identify))
	return f.(func() (Server, error))()
}

func (p pin) identify() (Server, error) {
	s := Server{Name: string(p.kind), Kind: p.kind, Version: p.version, InstallPath: p.installPath}
	script := filepath.Join(repoRoot(), p.script)
	out, err := exec.Command(script, "--path").Output()
	if err != nil {
		return s, fmt.Errorf("cannot find where %s builds %s: %v", p.script, s, err)
	}
	s.Bin = strings.TrimSpace(string(out))
	if _, err := os.Stat(s.Bin); err != nil {
		return s, fmt.Errorf("no %s build at %s: run `make deps` (or %s) first", s, s.Bin, p.script)
	}
	info, err := vaultbin.Identify(context.Background(), s.Bin)
	if err != nil {
		return s, fmt.Errorf("the %s build: %w; rebuild it with %s", s, err, p.script)
	}
	if info.Kind != p.kind || info.Version != p.version {
		return s, fmt.Errorf("the build at %s is %s, not the pinned %s: rebuild it with %s (make deps)", s.Bin, info, s, p.script)
	}
	return s, nil
}

// repoRoot is the repository this package is in.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
