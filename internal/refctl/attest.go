package refctl

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/mu"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/tpm"
)

// Verifying a quote, in two steps. First is it genuine: signed by the
// device's enrolled attestation key, over the nonce it answers and the claims
// it carries, quoting the device's whole PCR selection with the values it
// reports (checkGenuine). Only then are its values the TPM's word, and
// compared with the expected ones (judge): a quote that is not genuine tells
// nothing, and its values are never kept for an operator to approve.

// checkGenuine checks that q is a quote by the attestation key ak over nonce
// (and q's claims), of exactly the PCRs sel, and returns a reason if not.
func checkGenuine(q *ctlproto.Quote, ak string, nonce []byte, sel []int) string {
	key, err := tpm.ParseAKPublic([]byte(ak))
	if err != nil {
		return "the enrolled attestation key cannot be read: enrol the device again"
	}
	if err := tpm.Verify(q.TPM(), key, nonce, nil); err != nil {
		switch {
		case errors.Is(err, tpm.ErrSignature):
			return "the quote is not signed by the enrolled attestation key"
		case errors.Is(err, tpm.ErrNonce):
			return "the quote is not over this challenge and these claims (stale or replayed)"
		case errors.Is(err, tpm.ErrPCRValues):
			return "the reported PCR values are not the ones the TPM quoted"
		}
		return "malformed quote: " + strings.TrimPrefix(err.Error(), tpm.ErrBadQuote.Error()+": ")
	}
	quoted, err := quotedPCRs(q.AttestData)
	if err != nil {
		return "malformed quote: " + err.Error()
	}
	reported := slices.Sorted(maps.Keys(q.Values()))
	if !slices.Equal(quoted, sel) || !slices.Equal(reported, sel) {
		return fmt.Sprintf("the quote covers PCRs %s, not the ones asked for (%s)", pcrList(quoted), pcrList(sel))
	}
	return ""
}

// quotedPCRs is the PCR selection a TPMS_ATTEST of a quote covers (its
// signature already checked).
func quotedPCRs(attestData []byte) ([]int, error) {
	var attest tpm2.Attest
	if n, err := mu.UnmarshalFromBytes(attestData, &attest); err != nil || n != len(attestData) {
		return nil, fmt.Errorf("attest_data is not a TPMS_ATTEST (%v)", err)
	}
	if attest.Attested == nil || attest.Attested.Quote == nil || len(attest.Attested.Quote.PCRSelect) != 1 {
		return nil, errors.New("attest_data is not a quote of one PCR bank")
	}
	return slices.Sorted(slices.Values(attest.Attested.Quote.PCRSelect[0].Select)), nil
}

// changedPCRs are the PCRs of expected whose quoted value differs (or is
// absent), in order.
func changedPCRs(expected, quoted map[int][]byte) []int {
	var changed []int
	for p, want := range expected {
		if got, ok := quoted[p]; !ok || !bytes.Equal(got, want) {
			changed = append(changed, p)
		}
	}
	slices.Sort(changed)
	return changed
}

// claimProblems says which expected claims a quote lacks or carries with
// another value, in claim name order. Claims not expected are ignored.
func claimProblems(expected, quoted map[string]string) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(expected)) {
		got, ok := quoted[name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("claim %s is missing, expected %q", name, expected[name]))
		case got != expected[name]:
			out = append(out, fmt.Sprintf("claim %s is %q, expected %q", name, got, expected[name]))
		}
	}
	return out
}

// judge compares a genuine quote's values and claims with what the device is
// expected to have: the attestation result, with the PCRs that differ.
func judge(expectedPCRs, quoted map[int][]byte, expectedClaims, claims map[string]string) ctlproto.AttestResult {
	changed := changedPCRs(expectedPCRs, quoted)
	var reasons []string
	switch len(changed) {
	case 0:
	case 1:
		reasons = append(reasons, fmt.Sprintf("PCR %d differs from the expected value", changed[0]))
	default:
		reasons = append(reasons, fmt.Sprintf("PCRs %s differ from the expected values", pcrList(changed)))
	}
	reasons = append(reasons, claimProblems(expectedClaims, claims)...)
	if len(reasons) == 0 {
		return ctlproto.AttestResult{Status: ctlproto.AttestVerified}
	}
	return ctlproto.AttestResult{Status: ctlproto.AttestRefused, Reason: truncate(strings.Join(reasons, "; ")), ChangedPCRs: changed}
}

func pcrList(pcrs []int) string {
	s := make([]string, len(pcrs))
	for i, p := range pcrs {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}

// truncate keeps a reason within the protocol's bound.
func truncate(s string) string {
	if len(s) <= ctlproto.MaxReason {
		return s
	}
	s = s[:ctlproto.MaxReason-3]
	for !utf8.ValidString(s) { // cut in the middle of a rune
		s = s[:len(s)-1]
	}
	return s + "..."
}
