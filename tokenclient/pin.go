package tokenclient

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Where the client finds the Vault it trusts. The provider's answer names a
// Vault address and CA certificate too, but whoever answers on the socket
// wrote them: in a snap, every consumer connected to the tokend slot may write
// the socket's directory, so another consumer can answer in the provider's
// place. The client takes both from its own side instead (Options, its
// environment, the device's config), and checks with that Vault that the token
// was issued to it (verify.go).
const (
	// DefaultCACert is the per-boot CA certificate on a device installed from
	// units: root's, world-readable, written by edgeseal-pki.service.
	DefaultCACert = "/run/edgeseal/pki/ca.crt"
	// DefaultConfigFile is the device's config (root's, mode 0644), whose
	// vault.listen says where Vault is.
	DefaultConfigFile = "/etc/edgeseal/edgeseal.yaml"
	// defaultListen is vault.listen when the config does not set it.
	defaultListen = "127.0.0.1:8200"
	// maxConfigSize bounds how much of the config file the client reads.
	maxConfigSize = 1 << 20
)

// pin is the Vault a client trusts: its address, the CA certificate that
// verifies it, and where the address came from (for messages).
type pin struct {
	addr, from string
	fromAnswer bool // the answer's loopback address: see vaultPin
	caCert     string
}

// caCert is the CA certificate file the client verifies Vault with:
// o.CACert, $EDGESEAL_VAULT_CACERT, or DefaultCACert. A file in or below the
// socket's directory pins nothing where that directory is a snap's content
// share (whoever can replace the socket can replace it) and is refused; the
// units' /run/edgeseal, which holds DefaultSocket and DefaultCACert, is
// root's and the exception.
func (o Options) caCert(socket string) (string, error) {
	ca := o.CACert
	if ca == "" {
		ca = os.Getenv("EDGESEAL_VAULT_CACERT")
	}
	if ca == "" {
		ca = DefaultCACert
	}
	if filepath.Clean(socket) != DefaultSocket && within(ca, filepath.Dir(socket)) {
		return "", fmt.Errorf("cannot trust the CA certificate %s: it is in the directory of the token socket, "+
			"which other snaps connected to edgeseal's tokend slot may write; name one outside it "+
			"(EDGESEAL_VAULT_CACERT)", ca)
	}
	return ca, nil
}

// within tells whether path is dir or below it, after resolving symbolic
// links, dangling ones included (their target may appear later).
func within(path, dir string) bool {
	rel, err := filepath.Rel(resolve(dir, 0), resolve(path, 0))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// maxLinks bounds the symbolic links resolve follows.
const maxLinks = 16

func resolve(p string, depth int) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	if target, err := os.Readlink(p); err == nil && depth < maxLinks {
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		return resolve(target, depth+1)
	}
	if r, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
		return filepath.Join(r, filepath.Base(p))
	}
	return filepath.Clean(p)
}

// vaultPin is the Vault address the client trusts, in this order:
//   - o.VaultAddr, or $EDGESEAL_VAULT_ADDR: the caller's own pin;
//   - vault.listen in o.ConfigFile (DefaultConfigFile): a device installed
//     from units, where the config is root's and readable by all;
//   - when neither exists or may be read (a consumer snap sees no
//     /etc/edgeseal, or its AppArmor profile refuses the host's), the address
//     the answer names, if it is https on a loopback IP. That is safe only
//     because the CA certificate is the caller's own: only Vault holds a
//     certificate of this boot's CA, and lookup-self on it tells who the token
//     was issued to. Setting EDGESEAL_VAULT_ADDR removes this case.
func (o Options) vaultPin(answered string) (pin, error) {
	if o.VaultAddr != "" {
		return pin{addr: o.VaultAddr, from: "Options.VaultAddr"}, nil
	}
	if a := os.Getenv("EDGESEAL_VAULT_ADDR"); a != "" {
		return pin{addr: a, from: "$EDGESEAL_VAULT_ADDR"}, nil
	}
	file := o.ConfigFile
	if file == "" {
		file = DefaultConfigFile
	}
	var addr string
	var err error
	if o.ConfigFile == "" && os.Getenv("SNAP") != "" {
		// A snap's client: the host's /etc/edgeseal is not its to read (its
		// AppArmor profile refuses it, with a DENIED line in the journal).
		err = os.ErrNotExist
	} else {
		addr, err = addrFromConfig(file)
	}
	switch {
	case err == nil:
		return pin{addr: addr, from: file}, nil
	case !os.IsNotExist(err) && !os.IsPermission(err):
		return pin{}, err
	}
	if !isLoopbackHTTPS(answered) {
		return pin{}, fmt.Errorf("%w: it names Vault at %q, not https on a loopback address, and this client has no "+
			"address of its own (%s does not exist or may not be read): set EDGESEAL_VAULT_ADDR", ErrImpostor, answered, file)
	}
	return pin{addr: answered, from: "the answer (a loopback address; set EDGESEAL_VAULT_ADDR to pin it)", fromAnswer: true}, nil
}

// addrFromConfig reads vault.listen from the device's config, leniently (a
// newer config's keys are not this client's business), and returns the
// address services reach Vault at, as the provider computes it.
func addrFromConfig(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize))
	if err != nil {
		return "", fmt.Errorf("cannot read Vault's address from %s: %w", file, err)
	}
	var doc struct {
		Vault struct {
			Listen string `yaml:"listen"`
		} `yaml:"vault"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("cannot read Vault's address from %s: %w", file, err)
	}
	listen := doc.Vault.Listen
	if listen == "" {
		listen = defaultListen
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("cannot read Vault's address from %s: vault.listen %q: %w", file, listen, err)
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

func isLoopbackHTTPS(addr string) bool {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "https" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return false
	}
	a, err := netip.ParseAddr(u.Hostname())
	return err == nil && a.IsLoopback()
}
