package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/canonical/go-tpm2"

	"github.com/edgeseal/edgeseal/internal/cmdline"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/controller"
	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// Limits on what the controller commands read.
const (
	maxCAFile    = 32 << 10 // the controller's CA bundle (--ca)
	maxTokenFile = 1 << 10  // the enrolment token (--token-file)
)

const controllerUsage = `Usage: edgeseal controller COMMAND [OPTIONS]

A controller releases file vault keys (key_source controller or
tpm+controller) sealed to this device's TPM, after checking, if a vault asks
for it, a TPM quote of the device's PCRs and claims. docs/controller.md has
the protocol.

Commands:
  enrol --url https://HOST:PORT[,URL...] --ca FILE --token-file FILE|- [--force]
                 enrol with the controller (or the replicas of a controller
                 fleet), with the one-time token its operator gave (read
                 from a file or stdin, never argv)
  status [--json]
                 is the device enrolled: device id, controller URL, when,
                 and when its TLS client certificate expires
  attest [--json]
                 get a challenge from the controller and answer it with a
                 quote, without sending it: shows the claims and PCR values
                 the controller would get

enrol and attest use the TPM and must run as root; status reads root's state
directory. Run "edgeseal controller COMMAND --help" for a command's options.
`

func cmdController(ctx context.Context, p paths.Paths, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, controllerUsage)
		return fmt.Errorf("%w: controller needs a command: enrol, status or attest", errUsage)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, controllerUsage)
		return nil
	case "enrol":
		return controllerEnrol(ctx, p, args, stdout, stderr)
	case "status":
		return controllerStatus(p, args, stdout, stderr)
	case "attest":
		return controllerAttest(ctx, p, args, stdout, stderr)
	}
	fmt.Fprint(stderr, controllerUsage)
	return fmt.Errorf("%w: unknown controller command %q (enrol, status or attest)", errUsage, cmd)
}

// parseArgs parses args with fs, flags anywhere among the positional
// arguments (package cmdline, as every edgeseal command), and checks the
// positional ones are exactly names: --help is (nil, true); a bad flag or a
// wrong count of arguments is errUsage naming it.
func parseArgs(fs *flag.FlagSet, args []string, names ...string) (pos []string, help bool, err error) {
	pos, err = cmdline.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	return pos, false, cmdline.Exactly(fs.Name(), pos, names...)
}

func controllerEnrol(ctx context.Context, p paths.Paths, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("edgeseal controller enrol", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "the controller, https://HOST:PORT, or its replicas, comma-separated, tried in turn (required)")
	caFile := fs.String("ca", "", "the controller's CA certificate(s), PEM: the only roots its TLS certificate may chain to (required)")
	tokenFile := fs.String("token-file", "", "a file holding the one-time enrolment token, or - for stdin (required)")
	force := fs.Bool("force", false, "replace an existing enrolment (put back if this one fails)")
	cfgPath := fs.String("config", p.ConfigFile, "config file (seal.tpm2.device, controller.timeout)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: edgeseal controller enrol --url https://HOST:PORT[,URL...] --ca FILE --token-file FILE|- [--force]

Enrols this device with a controller, with the one-time token its operator
gave (it is read from a file or stdin, so it is never in argv or ps):

  1. asks the controller for a nonce, over TLS checked against --ca only;
  2. has the TPM certify its storage root key with its attestation key over
     the nonce, and quote the PCRs the controller names (the values it will
     expect from now on);
  3. makes a TLS client key (kept in the state directory, 0600) and sends its
     public key with the rest;
  4. keeps what the controller answers: the device id, the client
     certificate, and the key that signs the controller's key bundles.

A controller run as replicas sharing one store (a fleet) is given as their
URLs, comma-separated, at most 16: every exchange starts with the replica
that answered last and moves to the next when one is unreachable or
answers 502, 503 or 504, within controller.timeout in all; a refusal is
never asked of another replica.

An existing enrolment is kept unless --force: then it is set aside, and put
back if the new enrolment fails. Must run as root.

`)
		fs.PrintDefaults()
	}
	if _, help, err := parseArgs(fs, args); help || err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{{"--url", *url}, {"--ca", *caFile}, {"--token-file", *tokenFile}} {
		if f.value == "" {
			return fmt.Errorf("%w: %s is required (see edgeseal controller enrol --help)", errUsage, f.name)
		}
	}
	ca, err := fsutil.ReadBounded(*caFile, maxCAFile)
	if err != nil {
		return fmt.Errorf("cannot read the controller's CA (--ca): %w", err)
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	// An enrolment a replacement cut short set aside is the device's
	// enrolment: put back first, so that it is not replaced without --force.
	if err := controller.RecoverReplacement(p); errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("cannot enrol (run as root): %w", err)
	} else if err != nil {
		return err
	}
	if _, err := os.Lstat(p.Enrolment); err == nil && !*force {
		return fmt.Errorf("cannot enrol: this device is already enrolled (%s): to enrol again, replacing it, run edgeseal controller enrol --force", p.Enrolment)
	}
	if *force {
		r, serr := controller.SetAside(p)
		if errors.Is(serr, os.ErrPermission) {
			return fmt.Errorf("%w (run as root)", serr)
		}
		if serr != nil {
			return serr
		}
		defer func() { err = errors.Join(err, r.Finish(err == nil)) }() // err: the named result
	}
	t, err := tpm.Open(cfg.Seal.TPM2.Device)
	if err != nil {
		return err
	}
	defer t.Close()
	e, err := controller.Enrol(ctx, p, t, strings.Split(*url, ","), ca, token, cfg.Controller.Timeout.D())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled with %s as %s\n", strings.Join(e.URLs, ", "), e.DeviceID)
	if c, cerr := e.ClientCertificate(); cerr == nil {
		fmt.Fprintf(stdout, "client certificate valid until %s\n", c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// readToken reads the enrolment token from a file or stdin ("-"): the first
// line, trimmed.
func readToken(path string) (string, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, maxTokenFile+1))
		if err == nil && len(data) > maxTokenFile {
			err = fmt.Errorf("more than %d bytes", maxTokenFile)
		}
	} else {
		data, err = fsutil.ReadBounded(path, maxTokenFile)
	}
	defer clear(data)
	if err != nil {
		return "", fmt.Errorf("cannot read the enrolment token (--token-file): %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	token := strings.TrimSpace(line)
	if token == "" {
		return "", fmt.Errorf("%w: --token-file %s holds no token", errUsage, path)
	}
	return token, nil
}

// statusView is `controller status --json`.
type statusView struct {
	Enrolled          bool       `json:"enrolled"`
	DeviceID          string     `json:"device_id,omitempty"`
	URL               string     `json:"url,omitempty"`  // the first of URLs
	URLs              []string   `json:"urls,omitempty"` // every replica, in the order tried
	EnrolledAt        *time.Time `json:"enrolled_at,omitempty"`
	ClientCertExpires *time.Time `json:"client_cert_expires,omitempty"`
}

func controllerStatus(p paths.Paths, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgeseal controller status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: edgeseal controller status [--json]

Says whether this device is enrolled with a controller, and if so its device
id, the controller's URL, when it enrolled, and when its TLS client
certificate expires. Not enrolled is an answer, not an error (exit status 0).
Reads root's state directory.

`)
		fs.PrintDefaults()
	}
	if _, help, err := parseArgs(fs, args); help || err != nil {
		return err
	}
	e, err := controller.LoadEnrolment(p)
	var v statusView
	switch {
	case errors.Is(err, controller.ErrNotEnrolled):
	case err != nil:
		return err
	default:
		v = statusView{Enrolled: true, DeviceID: e.DeviceID, URL: e.URLs[0], URLs: e.URLs, EnrolledAt: &e.Enrolled}
		if c, err := e.ClientCertificate(); err == nil {
			exp := c.NotAfter.UTC()
			v.ClientCertExpires = &exp
		}
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(v)
	}
	if !v.Enrolled {
		fmt.Fprintln(stdout, "not enrolled with a controller (enrol with: edgeseal controller enrol --url URL --ca FILE --token-file FILE)")
		return nil
	}
	fmt.Fprintf(stdout, "enrolled:            yes\ndevice id:           %s\ncontroller:          %s\nenrolled at:         %s\n",
		v.DeviceID, strings.Join(v.URLs, ", "), v.EnrolledAt.UTC().Format(time.RFC3339))
	if v.ClientCertExpires != nil {
		note := ""
		if v.ClientCertExpires.Before(time.Now()) {
			note = " (expired: enrol again with --force)"
		}
		fmt.Fprintf(stdout, "client cert expires: %s%s\n", v.ClientCertExpires.Format(time.RFC3339), note)
	}
	return nil
}

// attestView is `controller attest --json`.
type attestView struct {
	URL       string              `json:"url"`  // the first of URLs
	URLs      []string            `json:"urls"` // every replica`
	DeviceID  string              `json:"device_id"`
	Challenge *ctlproto.Challenge `json:"challenge"`
	Quote     *ctlproto.Quote     `json:"quote"`
	Missing   []string            `json:"missing_claims,omitempty"`
}

func controllerAttest(ctx context.Context, p paths.Paths, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgeseal controller attest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON: the challenge and the quote, as they are on the wire")
	cfgPath := fs.String("config", p.ConfigFile, "config file (seal.tpm2.device and the controller section)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: edgeseal controller attest [--json]

Asks the controller for an attestation challenge and answers it with a TPM
quote, as the device does before it asks for a vault's keys, but does not
send the quote: it prints the PCRs the controller asked for and their values,
and the claims the device would send (the config's controller.claims,
device_id, location and addresses), noting any claim the controller asked
for that the device does not send. Use it to check the claims and PCR values
before a controller relies on them. The controller sees only a request for a
challenge; no key is asked for. Must run as root.

`)
		fs.PrintDefaults()
	}
	if _, help, err := parseArgs(fs, args); help || err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	d := &controller.Device{Paths: p, Config: cfg.Controller,
		OpenTPM: func() (*tpm2.TPMContext, error) { return tpm.Open(cfg.Seal.TPM2.Device) }}
	e, err := d.Enrolment()
	if err != nil {
		return err
	}
	ch, q, err := d.Quote(ctx)
	if err != nil {
		return err
	}
	v := attestView{URL: e.URLs[0], URLs: e.URLs, DeviceID: e.DeviceID, Challenge: ch, Quote: q}
	for _, c := range ch.Claims {
		if _, ok := q.Claims[c]; !ok {
			v.Missing = append(v.Missing, c)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	fmt.Fprintf(stdout, "challenge from %s (device %s), not answered:\n", strings.Join(v.URLs, " or "), v.DeviceID)
	fmt.Fprintln(stdout, "PCRs (sha256):")
	for _, pv := range q.PCRValues {
		fmt.Fprintf(stdout, "  %2d: %s\n", pv.Index, hex.EncodeToString(pv.Value))
	}
	fmt.Fprintln(stdout, "claims:")
	for _, k := range slices.Sorted(maps.Keys(q.Claims)) {
		fmt.Fprintf(stdout, "  %s: %q\n", k, q.Claims[k])
	}
	if len(v.Missing) > 0 {
		fmt.Fprintf(stdout, "asked for, not sent: %s (see the controller section of the config)\n", strings.Join(v.Missing, ", "))
	}
	return nil
}
