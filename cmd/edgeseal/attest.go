package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/edgeseal/edgeseal/internal/cmdline"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
	"github.com/edgeseal/edgeseal/internal/strictjson"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// maxQuoteSize bounds a quote file read by verify.
const maxQuoteSize = 64 << 10

// claims collects --claim KEY=VALUE flags.
type claims map[string]string

func (c claims) String() string { return fmt.Sprint(map[string]string(c)) }

func (c claims) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || len(k) > 64 || len(v) > 1024 {
		return errors.New("want KEY=VALUE (key up to 64 bytes, value up to 1024)")
	}
	c[k] = v
	return nil
}

func parseNonce(s string) ([]byte, error) {
	n, err := hex.DecodeString(s)
	if err != nil || len(n) < 8 || len(n) > 32 {
		return nil, fmt.Errorf("%w: --nonce must be 16 to 64 hex digits (8 to 32 bytes)", errUsage)
	}
	return n, nil
}

func cmdAttest(p paths.Paths, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: attest needs a subcommand: quote or verify", errUsage)
	}
	switch args[0] {
	case "quote":
		return attestQuote(p, args[1:], stdout, stderr)
	case "verify":
		return attestVerify(args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown attest subcommand %q", errUsage, args[0])
}

func attestQuote(p paths.Paths, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgeseal attest quote", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nonceHex := fs.String("nonce", "", "the controller's challenge, hex (required)")
	pcrs := &cmdline.PCRList{List: []int{0, 7}}
	fs.Var(pcrs, "pcrs", "PCRs to quote (SHA-256 bank), comma-separated")
	cl := claims{}
	fs.Var(cl, "claim", "a claim bound into the quote, KEY=VALUE (repeat)")
	cfgPath := fs.String("config", p.ConfigFile, "config file (for seal.tpm2.device)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: edgeseal attest quote --nonce HEX [--pcrs 0,7] [--claim KEY=VALUE ...]

Answers a controller's challenge: the TPM's attestation key (created once, in the
endorsement hierarchy) signs the current values of --pcrs together with
SHA-256("edgeseal attest v1\0" || nonce || claims as JSON). Prints the quote as
JSON (docs/attestation.md), including the raw TPMS_ATTEST and TPMT_SIGNATURE.
Must run as root.

`)
		fs.PrintDefaults()
	}
	if _, help, err := parseArgs(fs, args); help || err != nil {
		return err
	}
	nonce, err := parseNonce(*nonceHex)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	t, err := tpm.Open(cfg.Seal.TPM2.Device)
	if err != nil {
		return err
	}
	defer t.Close()
	var c map[string]string
	if len(cl) > 0 {
		c = cl
	}
	q, err := tpm.MakeQuote(t, nonce, c, pcrs.List)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(q)
}

func attestVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgeseal attest verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quoteFile := fs.String("quote", "-", "the quote JSON (- for stdin)")
	akFile := fs.String("ak", "", "the device's attestation key you trust, PEM (required)")
	nonceHex := fs.String("nonce", "", "the challenge you sent, hex (required)")
	expected := cmdline.PCRValues{}
	fs.Var(expected, "pcr", "an expected PCR value, N=HEX (repeat)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: edgeseal attest verify --ak AK.pem --nonce HEX [--pcr N=HEX ...] [--quote FILE]

Checks a quote from "edgeseal attest quote": signed by the attestation key in
--ak (not the one the quote carries), for this nonce and the quote's claims, and
with the expected PCR values. Says exactly what did not match; exit status 1.
Needs no TPM.

`)
		fs.PrintDefaults()
	}
	if _, help, err := parseArgs(fs, args); help || err != nil {
		return err
	}
	nonce, err := parseNonce(*nonceHex)
	if err != nil {
		return err
	}
	if *akFile == "" {
		return fmt.Errorf("%w: --ak is required: the attestation key you trust for this device", errUsage)
	}
	akPEM, err := os.ReadFile(*akFile)
	if err != nil {
		return fmt.Errorf("cannot read the attestation key: %w", err)
	}
	ak, err := tpm.ParseAKPublic(akPEM)
	if err != nil {
		return err
	}
	var r io.Reader = os.Stdin
	if *quoteFile != "-" {
		f, err := os.Open(*quoteFile)
		if err != nil {
			return fmt.Errorf("cannot read the quote: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxQuoteSize+1))
	if err != nil {
		return fmt.Errorf("cannot read the quote: %w", err)
	}
	var q tpm.Quote
	if err := strictjson.Decode(data, maxQuoteSize, &q); err != nil {
		return fmt.Errorf("cannot read the quote: %w", err)
	}
	var want map[int][]byte
	if len(expected) > 0 {
		want = expected
	}
	if err := tpm.Verify(&q, ak, nonce, want); err != nil {
		return fmt.Errorf("quote refused: %w", err)
	}
	fmt.Fprintf(stdout, "quote verified: signed by the attestation key, for this nonce and claims %v, PCRs %v\n", q.Claims, pcrKeys(q.PCRs))
	return nil
}

func pcrKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
