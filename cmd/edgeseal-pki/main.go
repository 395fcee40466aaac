// Command edgeseal-pki is edgeseal-pki.service, a oneshot run at every boot: it
// makes this boot's CA and the Vault listener's certificate in /run/edgeseal/pki,
// and renders Vault's server config to /run/edgeseal/vault/. It reads its flags
// and calls pkistep.Run, which does the step. The CA private key never leaves
// this process (see package pki).
//
// Exit status (as for edgeseal-unseal; the unit has no Restart=): 0 done; 1 an
// error; 2 bad usage or a bad config, which a retry cannot cure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/journal"
	"github.com/edgeseal/edgeseal/internal/pkistep"
	"github.com/edgeseal/edgeseal/internal/vaultconf"
)

const (
	exitFailure = 1
	exitUsage   = 2 // bad usage or config
)

const usage = `Usage: edgeseal-pki [--config FILE] [--server BIN] [--vault-key-path PATH]

Runs as edgeseal-pki.service (oneshot) at every boot, before Vault. Makes a new
CA (ECDSA P-384; with pki.intermediate, an issuing CA below it) whose private
key exists only in this process's memory and is never written anywhere, and
Vault's TLS certificate for 127.0.0.1, ::1, localhost and pki.extra_names.
Writes, in tmpfs (gone at power-off):

  /run/edgeseal/pki/ca.crt        this boot's CA certificate: clients verify Vault with it
  /run/edgeseal/pki/vault.crt     Vault's certificate chain
  /run/edgeseal/pki/vault.key     Vault's private key (0600, this step's user; Vault gets a copy
                                  through LoadCredential= in edgeseal-vault.service)
  /run/edgeseal/vault/vault.json  Vault's server config (storage, the admin socket)
  /run/edgeseal/vault/listener-tcp.json
                                  Vault's TLS listener for the services; until edgeseal
                                  has sealed Vault's unseal key (first boot), written as
                                  listener-tcp.json.held, which Vault does not read

Options:
  --config FILE          edgeseal's config (default /etc/edgeseal/edgeseal.yaml)
  --server BIN           the server binary edgeseal-vault.service runs (the units
                         pass it): its config is written for what BIN says it is
                         (` + "`BIN version`" + `); a BIN that is not a supported release of
                         OpenBao or HashiCorp Vault is refused (exit status 2).
                         The answer is kept in $STATE_DIRECTORY (the unit's
                         StateDirectory=) for the same file, so that the next
                         boot does not run BIN again unless BIN was replaced.
                         Without it, a config both servers read
  --vault-key-path PATH  the TLS key path Vault's config names (default
                         ` + vaultconf.CredentialKeyPath + `;
                         in the snap, the key itself: the snap has no credentials)

Exit status: 0 done, 1 an error, 2 bad usage or a bad config.
`

func main() {
	opts, err := parseArgs(os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	code := exitUsage // a command line that does not parse
	if err == nil {
		// The CA keys live in this process: no core dump of it, no ptrace by
		// other processes of its user.
		if perr := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); perr != nil {
			fmt.Fprintf(os.Stderr, "edgeseal-pki: cannot make the process non-dumpable: %v\n", perr)
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		err = pkistep.Run(ctx, journal.New(os.Stderr).Logger, opts)
		stop()
		code = exitCode(err)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgeseal-pki: %v\n", err)
		os.Exit(code)
	}
}

// parseArgs reads the command line (--root, the prefix of every path, is for
// tests and not in --help) and the unit's $STATE_DIRECTORY; --help prints the
// usage to help. Every error but flag.ErrHelp is bad usage.
func parseArgs(args []string, help io.Writer) (pkistep.Options, error) {
	var o pkistep.Options
	fs := flag.NewFlagSet("edgeseal-pki", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.Root, "root", "/", "")
	fs.StringVar(&o.ConfigFile, "config", "", "")
	fs.StringVar(&o.VaultKeyPath, "vault-key-path", "", "")
	fs.StringVar(&o.Server, "server", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(help, usage)
			return o, err
		}
		return o, fmt.Errorf("%w (see --help)", err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	// One directory is all the unit names; of a list, the first.
	o.StateDir, _, _ = strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")
	return o, nil
}

// exitCode is the exit status of an error of pkistep.Run: 2 for what a retry
// cannot cure (a bad config, an unsupported server), else 1.
func exitCode(err error) int {
	if errors.Is(err, pkistep.ErrUsage) {
		return exitUsage
	}
	return exitFailure
}
