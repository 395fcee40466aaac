// Command edgeseal is the operator's tool: what state the secret store is in, is a
// config valid, a short-lived root token for maintenance; and a service's tool to
// fetch its own Vault token.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeseal/edgeseal/internal/cmdline"
	"github.com/edgeseal/edgeseal/internal/paths"
)

const usage = `Usage: edgeseal [--root DIR] COMMAND [ARGS]

Commands:
  status [--json]             what the secret store is doing: units, Vault, sealed key
  config check [FILE]         validate a config file (default /etc/edgeseal/edgeseal.yaml)
  config default              print the default config, with every field documented
  root-token [--ttl 15m]      print a new root token that expires (root only)
  tpm reseal [--pcr N=HEX]    approve new PCR values for the TPM-sealed key (root only)
  recover --recovery-key F    seal the key again from its recovery copy (root only)
  token fetch [--out F] [--renew]   get this service's Vault token from the provider
  attest quote --nonce HEX    answer a controller's challenge with a TPM quote (root only)
  attest verify --ak F --nonce HEX [--pcr N=HEX]   check a quote (no TPM needed)
  vault list|apply|unlock|lock|delete|recover   encrypted file vaults (fscrypt)
  controller enrol|status|attest   enrolment with a controller that releases vault keys

Run "edgeseal COMMAND --help" for the options of one command.
`

// errUsage marks bad command-line use: exit status 2.
var errUsage = cmdline.ErrUsage

// errNotReady: status found the secret store not ready (exit status 3, as
// systemctl's is-active uses for "not active").
var errNotReady = errors.New("not ready")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errNotReady):
		os.Exit(3)
	case errors.As(err, new(temporaryError)):
		fmt.Fprintf(os.Stderr, "edgeseal: %v\n", err)
		os.Exit(75)
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "edgeseal: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "edgeseal: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := "/"
	if len(args) >= 2 && args[0] == "--root" {
		root, args = args[1], args[2:]
	}
	p := paths.Detect(root)
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "status":
		return cmdStatus(ctx, p, args[1:], stdout)
	case "config":
		return cmdConfig(p, args[1:], stdout)
	case "root-token":
		return cmdRootToken(ctx, p, args[1:], stdout, stderr)
	case "tpm":
		return cmdTPM(p, args[1:], stdout, stderr)
	case "recover":
		return cmdRecover(ctx, p, args[1:], stdout, stderr)
	case "attest":
		return cmdAttest(p, args[1:], stdout, stderr)
	case "token":
		return cmdToken(ctx, args[1:], stdout, stderr)
	case "vault":
		return cmdVault(ctx, p, args[1:], stdout, stderr)
	case "controller":
		return cmdController(ctx, p, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}
