package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/tokenclient"
)

const tokenUsage = `Usage: edgeseal token fetch [--out PATH] [--cert] [--renew] [--quiet] [--service NAME]
                           [--socket PATH] [--vault-addr URL] [--ca-cert PATH]

Get this service's own Vault token from edgeseal's token provider and write it
to a file. The provider knows who is asking from the kernel and systemd (the
unit, snap app, uid or gid of this process), so there is nothing to log in
with; a process that no service in /etc/edgeseal/edgeseal.yaml names is
refused, and told how it was seen.

The file is the JSON of Vault's auth response, {"auth":{"client_token":...}},
the format EdgeX services read from their secrets-token.json. It is written
atomically with mode 0600, by default to $XDG_RUNTIME_DIR/edgeseal/token.json,
or $RUNTIME_DIRECTORY/token.json in a unit with RuntimeDirectory=.

Whoever answers on the socket is not trusted with where Vault is: the token is
checked with the Vault this command pins (--vault-addr, --ca-cert), which must
say it was issued to this process in this boot, or it is refused as an
impostor's and nothing is written.

With --cert, the service's TLS certificate too (it needs tls: true in the
config): tls.pem (the certificate, then its private key) and tls-ca.pem (the
service CA, which verifies the other services' certificates), beside the token
file, 0600. The certificate names the service as spiffe://<trust domain>/<service>
(URI SAN) and <service> (DNS SAN), and is checked against the service CA of the
pinned Vault before anything is written.

Options:
  --out PATH       where to write the token
  --cert           also get the service's TLS certificate (see above)
  --renew          stay running and keep the token renewed (it is periodic),
                   and with --cert the certificate (at two thirds of its
                   lifetime, with the token); exit 1 when either cannot be
                   renewed any more (revoked), so that systemd's Restart=
                   fetches new ones
  --quiet          print nothing on success
  --service NAME   the service to ask for, when this process matches several
  --socket PATH    the provider's socket (default $EDGESEAL_TOKEN_SOCKET, or
                   /run/edgeseal/tokend.sock); --root does not move it
  --vault-addr URL the Vault to check and use the token at (default
                   $EDGESEAL_VAULT_ADDR, or vault.listen in
                   /etc/edgeseal/edgeseal.yaml; without either, as in a
                   consumer snap, the answer's address if it is on loopback)
  --ca-cert PATH   the CA certificate that verifies Vault (default
                   $EDGESEAL_VAULT_CACERT, or /run/edgeseal/pki/ca.crt); never
                   one in the socket's directory

Exit status: 0 the token is written; 1 refused, an impostor's or failed; 2 bad usage;
75 try again later (Vault sealed, provider overloaded, not started or stopped before it answered).
`

// temporaryError marks a failure that may go away by itself: exit status 75
// (EX_TEMPFAIL), so a script can retry.
type temporaryError struct{ error }

func (e temporaryError) Unwrap() error { return e.error }

// cmdToken runs as the service, not as root: it reads nothing under --root,
// and asks the provider wherever tokenclient would (--socket,
// $EDGESEAL_TOKEN_SOCKET, DefaultSocket), as a service written in Go does.
func cmdToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) == 0 {
			fmt.Fprint(stderr, tokenUsage)
			return fmt.Errorf("%w: token needs a subcommand: fetch", errUsage)
		}
		fmt.Fprint(stdout, tokenUsage)
		return nil
	}
	if args[0] != "fetch" {
		fmt.Fprint(stderr, tokenUsage)
		return fmt.Errorf("%w: unknown token subcommand %q", errUsage, args[0])
	}
	fs := flag.NewFlagSet("edgeseal token fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stdout, tokenUsage) }
	out := fs.String("out", "", "where to write the token")
	renew := fs.Bool("renew", false, "keep the token renewed")
	cert := fs.Bool("cert", false, "also get the service's TLS certificate")
	quiet := fs.Bool("quiet", false, "print nothing on success")
	service := fs.String("service", "", "the service to ask for")
	socket := fs.String("socket", "", "the provider's socket")
	vaultAddr := fs.String("vault-addr", "", "the Vault the token is checked at")
	caCert := fs.String("ca-cert", "", "the CA certificate that verifies Vault")
	if _, help, err := parseArgs(fs, args[1:]); help || err != nil {
		return err
	}
	path := *out
	if path == "" {
		var err error
		if path, err = tokenclient.DefaultTokenPath(); err != nil {
			return err
		}
	}
	if err := tokenclient.CheckFiles(path, *cert); err != nil {
		return unsafeOut(err)
	}
	tok, err := tokenclient.Fetch(ctx, tokenclient.Options{Socket: *socket, Service: *service, VaultAddr: *vaultAddr, CACert: *caCert, Cert: *cert})
	if err != nil {
		if tokenclient.Temporary(err) {
			return temporaryError{err}
		}
		return err
	}
	if err := tokenclient.WriteTokenFile(path, tok); err != nil {
		return unsafeOut(err)
	}
	if !*quiet {
		fmt.Fprintf(stdout, "wrote the token of service %s to %s (%s; renewable, period %v)\n",
			tok.Service, path, tok.Identity, tok.Period())
	}
	dir := filepath.Dir(path)
	if tok.Certificate != nil {
		if err := writeCertificate(dir, tok.Certificate, "wrote", *quiet, stdout); err != nil {
			return err
		}
	}
	if !*renew {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if tok.Certificate != nil {
		go func() {
			cancel(tok.KeepCertificateRenewed(ctx, func(c *tokenclient.Certificate) error {
				return writeCertificate(dir, c, "renewed", *quiet, stderr)
			}))
		}()
	}
	err = tok.KeepRenewed(ctx, func(s *api.Secret) {
		if !*quiet && s != nil && s.Auth != nil {
			fmt.Fprintf(stderr, "renewed the token of service %s; valid for %v\n",
				tok.Service, time.Duration(s.Auth.LeaseDuration)*time.Second)
		}
	})
	if cerr := context.Cause(ctx); err == nil && cerr != nil && !errors.Is(cerr, context.Canceled) {
		return cerr
	}
	return err
}

// unsafeOut says what to do about a file edgeseal would not write.
func unsafeOut(err error) error {
	if errors.Is(err, fsutil.ErrUnsafePath) {
		// Typically root with a user's $XDG_RUNTIME_DIR, which su keeps.
		return fmt.Errorf("%w; pass --out with a path in a directory of your own", err)
	}
	return err
}

// writeCertificate writes c's files into dir and says so.
func writeCertificate(dir string, c *tokenclient.Certificate, did string, quiet bool, w io.Writer) error {
	if err := tokenclient.WriteCertificateFiles(dir, c); err != nil {
		return unsafeOut(err)
	}
	if quiet {
		return nil
	}
	id, _ := c.SPIFFEID()
	var until string
	if leaf, err := c.Leaf(); err == nil {
		until = leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "%s the certificate of %s to %s, valid until %s\n", did, id, filepath.Join(dir, tokenclient.CertificateFile), until)
	return nil
}
