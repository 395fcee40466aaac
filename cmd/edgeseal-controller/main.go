// Command edgeseal-controller is edgeseal's reference controller: it enrols
// devices, verifies their TPM quotes, and releases their file vault keys
// sealed to their TPMs (package refctl, docs/controller.md). Its state is a
// directory (one box) or an OpenBao cluster shared by stateless replicas.
//
// Exit status: 0 done; 1 an error; 2 bad usage (a unit running "serve" has
// nothing to retry on 2: RestartPreventExitStatus=2).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/edgeseal/edgeseal/internal/cmdline"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/refctl"
)

const usage = `Usage: edgeseal-controller COMMAND [ARGS] [--dir DIR | --openbao FILE]

The reference controller: devices enrol with it, answer its challenges with
TPM quotes, and get their file vault keys from it, sealed to their own TPM.

Commands:
  init [--host LIST]                  make the controller (CA, server certificate, keys)
  init --openbao FILE --openbao-addr LIST --openbao-ca FILE --admin-token-file FILE [--host LIST]
                                      set up an OpenBao cluster as the controller's store
                                      (--from-dir DIR: with DIR's CA and keys, to migrate it)
  migrate --from-dir DIR --openbao FILE
                                      copy a directory's devices to an OpenBao store and check them
  serve [--listen ADDR] [--rotate-every DURATION]
                                      answer devices over HTTPS
  device add NAME [--pcrs LIST] [--claim K=V]... [--reenrol]
                                      print a one-time enrolment token for a device
  device list [--after NAME] [--limit N]
                                      the devices, a page at a time
  device show NAME [--json]           a device: enrolment, PCRs, claims, vaults
  device revoke NAME                  theft reported: withhold every vault
  device restore NAME                 undo revoke
  device approve NAME                 expect the PCR values of its last refused quote
  device expect NAME (--claim K=V... | --clear-claims)
                                      the claims its quotes must carry
  vault rotate DEVICE VAULT           a new key version for a vault (name or UUID)

Every command takes the controller's state: --dir DIR, a directory (default
` + refctl.DefaultDir + `), or --openbao FILE, an OpenBao cluster as init described
it in FILE (replicas share it; docs/controller.md).
Run "edgeseal-controller COMMAND --help" for one command.

Exit status: 0 done, 1 an error, 2 bad usage.
`

// errUsage marks bad command-line use: exit status 2.
var errUsage = cmdline.ErrUsage

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgeseal-controller: %v\n", err)
		if errors.Is(err, errUsage) || errors.Is(err, refctl.ErrInvalid) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// cli is one run's output streams.
type cli struct {
	ctx            context.Context
	stdout, stderr io.Writer
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := &cli{ctx, stdout, stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "init":
		err = c.init(rest)
	case "serve":
		err = c.serve(ctx, rest)
	case "migrate":
		err = c.migrate(rest)
	case "device", "vault":
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "--help") {
				fmt.Fprint(stdout, usage)
				return nil
			}
			return fmt.Errorf("%w: %s needs a subcommand (see --help)", errUsage, cmd)
		}
		sub, ok := subcommands[cmd+" "+rest[0]]
		if !ok {
			return fmt.Errorf("%w: unknown command %q (see --help)", errUsage, cmd+" "+rest[0])
		}
		err = sub(c, rest[1:])
	default:
		return fmt.Errorf("%w: unknown command %q (see --help)", errUsage, cmd)
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

var subcommands = map[string]func(*cli, []string) error{
	"device add":     (*cli).deviceAdd,
	"device list":    (*cli).deviceList,
	"device show":    (*cli).deviceShow,
	"device revoke":  func(c *cli, args []string) error { return c.deviceRevoke(args, true) },
	"device restore": func(c *cli, args []string) error { return c.deviceRevoke(args, false) },
	"device approve": (*cli).deviceApprove,
	"device expect":  (*cli).deviceExpect,
	"vault rotate":   (*cli).vaultRotate,
}

// flags makes a command's flag set, with --dir and --openbao.
func (c *cli) flags(name string) (*flag.FlagSet, *storeFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sf := &storeFlags{}
	fs.StringVar(&sf.dir, "dir", refctl.DefaultDir, "")
	fs.StringVar(&sf.openbao, "openbao", "", "")
	return fs, sf
}

// storeFlags are where the controller's state is.
type storeFlags struct {
	dir, openbao string
}

// open is the controller the flags name.
func (sf *storeFlags) open() (*refctl.Controller, error) {
	if sf.openbao == "" {
		return refctl.OpenDir(sf.dir), nil
	}
	if sf.dir != refctl.DefaultDir {
		return nil, fmt.Errorf("%w: --dir and --openbao name two stores: give one", errUsage)
	}
	cfg, err := refctl.LoadBaoConfig(sf.openbao)
	if err != nil {
		return nil, err
	}
	return refctl.OpenOpenBao(cfg)
}

// parse reads flags anywhere among the arguments (device add NAME --pcrs 7
// as well as device add --pcrs 7 NAME: package cmdline, as every edgeseal
// command) and checks the positional ones are exactly names; --help prints
// help.
func (c *cli) parse(fs *flag.FlagSet, help string, args []string, names ...string) ([]string, error) {
	pos, err := cmdline.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(c.stdout, help)
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w (see edgeseal-controller %s --help)", err, fs.Name())
	}
	if err := cmdline.Exactly("edgeseal-controller "+fs.Name(), pos, names...); err != nil {
		return nil, err
	}
	return pos, nil
}

const initUsage = `Usage: edgeseal-controller init [--dir DIR] [--host LIST]
       edgeseal-controller init --openbao FILE --openbao-addr LIST --openbao-ca FILE
                                --admin-token-file FILE [--host LIST]

Makes a controller in DIR (made 0700): an ECDSA P-256 CA (ca.crt, ca.key)
that certifies devices' TLS client keys, the server certificate signed by it
(server.crt, server.key), the key that signs key bundles (signing.key), and
an empty state.json. Private keys and state are 0600. Devices trust DIR/ca.crt.
A directory that holds a controller already is refused.

With --openbao, sets up an OpenBao cluster (integrated storage) as the store
of stateless replicas instead: a KV v2 mount of device records that takes
only check-and-set writes, the bundle signing key as a transit key (ECDSA
P-256, never exported), the controller's least-privilege policy and an
AppRole role bound to it, and the CA and server certificate. It writes FILE
(0600: it holds the AppRole secret ID; every replica and command is given
it) and, beside it, ca.crt for devices. The admin token is used for this
only, and written nowhere. A store that holds a controller already is refused.

Options:
  --dir DIR                the controller's state (default ` + refctl.DefaultDir + `)
  --host LIST              comma-separated IP addresses and DNS names devices reach
                           the controller by, for the server certificate
                           (default 127.0.0.1,localhost; every replica's, with --openbao)
  --openbao FILE           the store's file to write
  --openbao-addr LIST      comma-separated https URLs of the cluster's nodes
  --openbao-ca FILE        the CA the nodes' certificates chain to (PEM)
  --admin-token-file FILE  a token that may enable mounts and write policies
  --from-dir DIR           take the CA, server certificate and signing key of the
                           controller in DIR (imported into transit, not exportable
                           there), so that its devices go on trusting it after
                           migrate; --host does not go with it
`

func (c *cli) init(args []string) error {
	fs, st := c.flags("init")
	hosts := fs.String("host", strings.Join(refctl.DefaultHosts, ","), "")
	addrs := fs.String("openbao-addr", "", "")
	ca := fs.String("openbao-ca", "", "")
	adminFile := fs.String("admin-token-file", "", "")
	fromDir := fs.String("from-dir", "", "")
	if _, err := c.parse(fs, initUsage, args); err != nil {
		return err
	}
	list := splitList(*hosts)
	if len(list) == 0 {
		return fmt.Errorf("%w: --host: no host given", errUsage)
	}
	if st.openbao == "" {
		if *addrs != "" || *ca != "" || *adminFile != "" || *fromDir != "" {
			return fmt.Errorf("%w: --openbao-addr, --openbao-ca, --admin-token-file and --from-dir go with --openbao", errUsage)
		}
		if err := refctl.Init(st.dir, list); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "initialised the controller in %s; devices trust %s\n", st.dir, refctl.CACertPath(st.dir))
		return nil
	}
	if *addrs == "" || *ca == "" || *adminFile == "" {
		return fmt.Errorf("%w: init --openbao needs --openbao-addr, --openbao-ca and --admin-token-file", errUsage)
	}
	if *fromDir != "" && flagSet(fs, "host") {
		return fmt.Errorf("%w: --host does not go with --from-dir: the server certificate is the directory's, with its hosts", errUsage)
	}
	caAbs, err := filepath.Abs(*ca)
	if err != nil {
		return err
	}
	tok, err := readTokenFile(*adminFile)
	if err != nil {
		return err
	}
	_, err = refctl.InitOpenBao(c.ctx, refctl.BaoInit{Addresses: splitList(*addrs), CAFile: caAbs, AdminToken: tok,
		Hosts: list, Out: st.openbao, FromDir: *fromDir})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "initialised the controller in OpenBao at %s; replicas and commands take --openbao %s; devices trust %s\n",
		*addrs, st.openbao, refctl.BaoCACertPath(st.openbao))
	return nil
}

// splitList is a comma-separated list, blanks dropped.
func splitList(s string) []string {
	var list []string
	for h := range strings.SplitSeq(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			list = append(list, h)
		}
	}
	return list
}

// readTokenFile reads a token from a file: one line, bounded.
func readTokenFile(path string) (string, error) {
	data, err := fsutil.ReadRegular(path, 4096)
	if err != nil {
		return "", fmt.Errorf("cannot read the admin token: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" || strings.ContainsAny(tok, " \t\n\r") {
		return "", fmt.Errorf("cannot read the admin token: %s holds no token (one line)", path)
	}
	return tok, nil
}

const serveUsage = `Usage: edgeseal-controller serve [--dir DIR | --openbao FILE] [--listen ADDR] [--rotate-every DURATION]

Answers devices over HTTPS (TLS 1.3; devices authenticate with the client
certificate they got at enrolment) until SIGTERM or SIGINT. Logs one line per
request on stderr (device, path, verdict; never a key, token or nonce). Tells
systemd it is ready (Type=notify) once listening, and only once the store
answered and, with OpenBao, the controller's policy was found to hold every
capability it needs: a replica whose store is down or misconfigured fails at
start, naming what is wrong. Replicas of one OpenBao store may serve side by
side; a device may ask any of them.

Options:
  --dir DIR                the controller's state (default ` + refctl.DefaultDir + `)
  --openbao FILE           the OpenBao store, as init --openbao wrote it
  --listen ADDR            address to listen on (default 127.0.0.1:8443)
  --rotate-every DURATION  make a new key version of each vault once its newest is
                           this old, e.g. 720h (default 0: only on vault rotate)
`

func (c *cli) serve(ctx context.Context, args []string) error {
	fs, st := c.flags("serve")
	listen := fs.String("listen", "127.0.0.1:8443", "")
	every := fs.Duration("rotate-every", 0, "")
	if _, err := c.parse(fs, serveUsage, args); err != nil {
		return err
	}
	if *every < 0 {
		return fmt.Errorf("%w: --rotate-every: %v is negative", errUsage, *every)
	}
	ctl, err := st.open()
	if err != nil {
		return err
	}
	return ctl.Serve(ctx, *listen, refctl.Options{RotateEvery: *every, Log: c.stderr})
}

const migrateUsage = `Usage: edgeseal-controller migrate --from-dir DIR --openbao FILE

Copies every device of the controller directory DIR (enrolment, PCRs and
claims, vault key versions, rotation acks, escrowed keys) into the OpenBao
store of FILE, which init --openbao --from-dir DIR set up (so devices go on
trusting its CA and signing key), then reads every device back and checks
that each device, key version and escrowed key arrived. It may be run again,
after a cut or to check: a device copied already is not written twice. A
device the store has otherwise (served by a replica since) is kept as the
store has it, and named. Stop the directory's controller first.
`

func (c *cli) migrate(args []string) error {
	fs, st := c.flags("migrate")
	from := fs.String("from-dir", "", "")
	if _, err := c.parse(fs, migrateUsage, args); err != nil {
		return err
	}
	if *from == "" || st.openbao == "" {
		return fmt.Errorf("%w: migrate needs --from-dir and --openbao", errUsage)
	}
	ctl, err := st.open()
	if err != nil {
		return err
	}
	m, err := refctl.Migrate(c.ctx, *from, ctl)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%d devices: %d copied, %d there already; checked: every device, %d key versions and %d escrowed keys are in the store\n",
		m.Devices, m.Copied, m.Already, m.KeyVersions, m.Escrows)
	if len(m.Kept) > 0 {
		fmt.Fprintf(c.stdout, "kept as the store has them (changed since): %s\n", strings.Join(m.Kept, ", "))
	}
	return nil
}

const deviceAddUsage = `Usage: edgeseal-controller device add NAME [--dir DIR] [--pcrs LIST] [--claim K=V]... [--reenrol]

Adds a device and prints its one-time enrolment token, alone, on stdout
(TOKEN=$(edgeseal-controller device add edge-7)). The token is valid for 24
hours; only its SHA-256 is kept. NAME is the device's id: 1 to 64 of a-z 0-9
. _ - starting with a letter or digit.

Options:
  --dir DIR      the controller's state (default ` + refctl.DefaultDir + `)
  --pcrs LIST    comma-separated PCRs its quotes must cover, SHA-256 bank
                 (default 0,2,4,7); their values at enrolment become the expected ones
  --claim K=V    a claim its quotes must carry with this value (repeatable),
                 e.g. --claim location=hall-3
  --reenrol      a new token for a device that exists (its TPM or disk was
                 replaced): enrolling replaces its keys and certificate, keeps
                 its vaults; --pcrs and --claim do not go with it
`

func (c *cli) deviceAdd(args []string) error {
	fs, st := c.flags("device add")
	var pcrs cmdline.PCRList
	claims := claimFlag{}
	fs.Var(&pcrs, "pcrs", "")
	fs.Var(claims, "claim", "")
	reenrol := fs.Bool("reenrol", false, "")
	pos, err := c.parse(fs, deviceAddUsage, args, "NAME")
	if err != nil {
		return err
	}
	ctl, err := st.open()
	if err != nil {
		return err
	}
	var tok string
	if *reenrol {
		if pcrs.Given || len(claims) > 0 {
			return fmt.Errorf("%w: device add --reenrol keeps the device's PCRs and claims; change claims with device expect", errUsage)
		}
		tok, err = ctl.Reenrol(c.ctx, pos[0])
	} else {
		tok, err = ctl.AddDevice(c.ctx, pos[0], pcrs.List, claims)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, tok)
	return nil
}

const deviceListUsage = `Usage: edgeseal-controller device list [--dir DIR | --openbao FILE] [--after NAME] [--limit N]

Lists the devices by name, a page at a time: enrolled or waiting for
enrolment, reported stolen, how many vaults, whether the last quote was
refused. When more follow, the last line says the --after that lists them.

Options:
  --after NAME   start after this device name (default: from the first)
  --limit N      at most N devices, 1 to 1000 (default 100)
`

func (c *cli) deviceList(args []string) error {
	fs, st := c.flags("device list")
	after := fs.String("after", "", "")
	limit := fs.Int("limit", 100, "")
	if _, err := c.parse(fs, deviceListUsage, args); err != nil {
		return err
	}
	ctl, err := st.open()
	if err != nil {
		return err
	}
	page, err := ctl.List(c.ctx, *after, *limit)
	if err != nil {
		return err
	}
	all := page.Devices
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tENROLLED\tSTOLEN\tVAULTS\tLAST QUOTE")
	for _, d := range all {
		enrolled := "no"
		switch {
		case d.Enrolled:
			enrolled = d.EnrolledAt.Local().Format(time.DateTime)
		case !d.TokenExpires.IsZero():
			enrolled = "token waiting"
		}
		quote := "-"
		if d.Refused != nil {
			quote = "refused"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", d.Name, enrolled, yesNo(d.Revoked), len(d.Vaults), quote)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(c.stdout, "(more: device list --after %s)\n", page.Next)
	}
	return nil
}

const deviceShowUsage = `Usage: edgeseal-controller device show NAME [--dir DIR] [--json]

Shows what the controller knows of a device: enrolment, whether it is
reported stolen, its PCRs and their expected values, the claims its quotes
must carry, its last refused quote, and its vaults (attestation needed, key
versions kept, the version the device is at, escrowed key, last unlock).

Options:
  --dir DIR   the controller's state (default ` + refctl.DefaultDir + `)
  --json      print it as JSON
`

func (c *cli) deviceShow(args []string) error {
	fs, st := c.flags("device show")
	asJSON := fs.Bool("json", false, "")
	pos, err := c.parse(fs, deviceShowUsage, args, "NAME")
	if err != nil {
		return err
	}
	ctl, err := st.open()
	if err != nil {
		return err
	}
	d, err := ctl.Show(c.ctx, pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		out, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.stdout, "%s\n", out)
		return err
	}
	printDevice(c.stdout, d)
	return nil
}

func printDevice(w io.Writer, d *refctl.DeviceView) {
	at := func(t time.Time) string { return t.Local().Format(time.DateTime) }
	fmt.Fprintf(w, "device:    %s\n", d.Name)
	switch {
	case d.Enrolled && !d.TokenExpires.IsZero():
		fmt.Fprintf(w, "enrolled:  yes, %s (a token to enrol it again waits until %s)\n", at(d.EnrolledAt), at(d.TokenExpires))
	case d.Enrolled:
		fmt.Fprintf(w, "enrolled:  yes, %s\n", at(d.EnrolledAt))
	case !d.TokenExpires.IsZero():
		fmt.Fprintf(w, "enrolled:  no (its token is valid until %s)\n", at(d.TokenExpires))
	default:
		fmt.Fprintf(w, "enrolled:  no (its token expired: device add --reenrol)\n")
	}
	fmt.Fprintf(w, "stolen:    %s\n", yesNo(d.Revoked))
	fmt.Fprintf(w, "pcrs:      %s\n", ints(d.PCRs))
	for _, p := range d.PCRs {
		if v, ok := d.Expected[p]; ok {
			fmt.Fprintf(w, "  PCR %-2d   %s\n", p, v)
		}
	}
	if len(d.Claims) == 0 {
		fmt.Fprintf(w, "claims:    none expected\n")
	} else {
		fmt.Fprintf(w, "claims:\n")
		for _, k := range slices.Sorted(maps.Keys(d.Claims)) {
			fmt.Fprintf(w, "  %s = %q\n", k, d.Claims[k])
		}
	}
	if r := d.Refused; r != nil {
		fmt.Fprintf(w, "refused:   %s: %s (device approve %s expects its values)\n", at(r.At), r.Reason, d.Name)
		for _, p := range r.Changed {
			fmt.Fprintf(w, "  PCR %-2d   %s\n", p, r.PCRs[p])
		}
	} else {
		fmt.Fprintf(w, "refused:   none\n")
	}
	if len(d.Vaults) == 0 {
		fmt.Fprintf(w, "vaults:    none yet\n")
		return
	}
	fmt.Fprintf(w, "vaults:\n")
	for _, v := range d.Vaults {
		fmt.Fprintf(w, "  %s (%s)\n", v.Name, v.UUID)
		fmt.Fprintf(w, "    attestation:   %s\n", yesNo(v.Attestation))
		keys := fmt.Sprintf("versions %s kept; the device is at %d", ints(v.Versions), v.Acked)
		if v.Acked == 0 {
			keys = fmt.Sprintf("versions %s kept; the device has reported none", ints(v.Versions))
		}
		if v.RotatePending {
			keys += "; a rotation is pending"
		}
		fmt.Fprintf(w, "    keys:          %s\n", keys)
		if v.Escrowed {
			fmt.Fprintf(w, "    escrowed:      yes, %s\n", at(v.EscrowUpdated))
		} else {
			fmt.Fprintf(w, "    escrowed:      no\n")
		}
		if v.LastUnlock != "" {
			fmt.Fprintf(w, "    last unlock:   %s, %s\n", v.LastUnlock, at(v.LastUnlockAt))
		} else {
			fmt.Fprintf(w, "    last unlock:   not reported\n")
		}
	}
}

const deviceRevokeUsage = `Usage: edgeseal-controller device revoke NAME [--dir DIR]

The device is reported stolen: from its next request on, every vault is
withheld, with the reason "the device is reported stolen: keys withheld",
which it can show. Its escrowed keys and key versions are kept; device
restore undoes this.
`

const deviceRestoreUsage = `Usage: edgeseal-controller device restore NAME [--dir DIR]

Undoes device revoke: the device gets its keys again (after attestation, for
the vaults that need it).
`

func (c *cli) deviceRevoke(args []string, revoked bool) error {
	name, help := "device revoke", deviceRevokeUsage
	if !revoked {
		name, help = "device restore", deviceRestoreUsage
	}
	fs, st := c.flags(name)
	pos, err := c.parse(fs, help, args, "NAME")
	if err != nil {
		return err
	}
	ctl, err := st.open()
	if err != nil {
		return err
	}
	if err := ctl.Revoke(c.ctx, pos[0], revoked); err != nil {
		return err
	}
	if revoked {
		fmt.Fprintf(c.stdout, "device %s is reported stolen: every vault is withheld from its next request on\n", pos[0])
	} else {
		fmt.Fprintf(c.stdout, "device %s is restored\n", pos[0])
	}
	return nil
}

const deviceApproveUsage = `Usage: edgeseal-controller device approve NAME [--dir DIR]

Makes the PCR values of the device's last refused quote the expected ones:
after an update you trust changed them (device show lists them first). Prints
which PCRs changed; the device is told too, with its next verified quote.
`

func (c *cli) deviceApprove(args []string) error {
	fs, st := c.flags("device approve")
	pos, err := c.parse(fs, deviceApproveUsage, args, "NAME")
	if err != nil {
		return err
	}
	ctl, err := st.open()
	if err != nil {
		return err
	}
	changed, err := ctl.Approve(c.ctx, pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "device %s: the new values of PCRs %s are expected from now on\n", pos[0], ints(changed))
	return nil
}

const deviceExpectUsage = `Usage: edgeseal-controller device expect NAME [--dir DIR] (--claim K=V... | --clear-claims)

Replaces the claims the device's quotes must carry (claims are bound into
the quote, so the TPM signs them). A quote lacking one, or with another
value, is refused, and vaults that need attestation are withheld.

Options:
  --dir DIR       the controller's state (default ` + refctl.DefaultDir + `)
  --claim K=V     a claim and its value (repeatable)
  --clear-claims  expect no claim
`

func (c *cli) deviceExpect(args []string) error {
	fs, st := c.flags("device expect")
	claims := claimFlag{}
	fs.Var(claims, "claim", "")
	clearAll := fs.Bool("clear-claims", false, "")
	pos, err := c.parse(fs, deviceExpectUsage, args, "NAME")
	if err != nil {
		return err
	}
	ctl, err := st.open()
	if err != nil {
		return err
	}
	if *clearAll == (len(claims) > 0) {
		return fmt.Errorf("%w: device expect takes --claim K=V (one or more) or --clear-claims, one of the two", errUsage)
	}
	if err := ctl.Expect(c.ctx, pos[0], claims); err != nil {
		return err
	}
	if *clearAll {
		fmt.Fprintf(c.stdout, "device %s: no claim expected\n", pos[0])
	} else {
		fmt.Fprintf(c.stdout, "device %s: claims %s expected\n", pos[0], strings.Join(slices.Sorted(maps.Keys(claims)), ", "))
	}
	return nil
}

const vaultRotateUsage = `Usage: edgeseal-controller vault rotate DEVICE VAULT [--dir DIR]

Asks for a new key version of a device's vault (VAULT: its name or UUID).
It is made at the device's next key request, if the device has moved its
vault to the current version; the device then gets both, re-wraps its vault
to the new one and reports it, and the old version is dropped.
`

func (c *cli) vaultRotate(args []string) error {
	fs, st := c.flags("vault rotate")
	pos, err := c.parse(fs, vaultRotateUsage, args, "DEVICE", "VAULT")
	if err != nil {
		return err
	}
	ctl, err := st.open()
	if err != nil {
		return err
	}
	r, err := ctl.Rotate(c.ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if r.Waiting() {
		fmt.Fprintf(c.stdout, "vault %s of device %s: rotation pending, but the device has not finished the last rotation "+
			"(it is at version %d, the newest is %d): the new version is made once it reports %d\n", r.Vault, r.Device, r.Acked, r.Newest, r.Newest)
	} else {
		fmt.Fprintf(c.stdout, "vault %s of device %s: key version %d will be made at the device's next key request\n", r.Vault, r.Device, r.Newest+1)
	}
	return nil
}

// claimFlag is --claim K=V, repeatable.
type claimFlag map[string]string

func (c claimFlag) String() string { return "" }

func (c claimFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want NAME=VALUE", s)
	}
	if _, dup := c[k]; dup {
		return fmt.Errorf("claim %s is given twice", k)
	}
	c[k] = v
	return nil
}

func ints(l []int) string {
	s := make([]string, len(l))
	for i, n := range l {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// flagSet reports whether the command line gave the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
