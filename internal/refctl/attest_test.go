package refctl

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/edgeseal/edgeseal/internal/ctlproto"
)

func val(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestJudgeNamesWhatDiffers(t *testing.T) {
	expected := map[int][]byte{0: val(0), 7: val(7), 16: val(0)}
	cases := []struct {
		name           string
		quoted         map[int][]byte
		expectClaims   map[string]string
		claims         map[string]string
		status, reason string
		changed        []int
	}{{
		name:   "all as expected",
		quoted: map[int][]byte{0: val(0), 7: val(7), 16: val(0)},
		status: ctlproto.AttestVerified,
	}, {
		name:    "one PCR changed",
		quoted:  map[int][]byte{0: val(0), 7: val(7), 16: val(1)},
		status:  ctlproto.AttestRefused,
		reason:  "PCR 16 differs from the expected value",
		changed: []int{16},
	}, {
		name:    "two PCRs changed, one missing",
		quoted:  map[int][]byte{7: val(8), 16: val(1)},
		status:  ctlproto.AttestRefused,
		reason:  "PCRs 0, 7, 16 differ from the expected values",
		changed: []int{0, 7, 16},
	}, {
		name:         "a claim with another value",
		quoted:       map[int][]byte{0: val(0), 7: val(7), 16: val(0)},
		expectClaims: map[string]string{"location": "y"},
		claims:       map[string]string{"location": "x", "extra": "ignored"},
		status:       ctlproto.AttestRefused,
		reason:       `claim location is "x", expected "y"`,
	}, {
		name:         "a PCR and two claims",
		quoted:       map[int][]byte{0: val(0), 7: val(9), 16: val(0)},
		expectClaims: map[string]string{"site": "a", "location": "y"},
		claims:       map[string]string{"location": "y"},
		status:       ctlproto.AttestRefused,
		reason:       `PCR 7 differs from the expected value; claim site is missing, expected "a"`,
		changed:      []int{7},
	}}
	for _, tc := range cases {
		got := judge(expected, tc.quoted, tc.expectClaims, tc.claims)
		if got.Status != tc.status || got.Reason != tc.reason || !slices.Equal(got.ChangedPCRs, tc.changed) {
			t.Errorf("%s: %+v, want %s %q %v", tc.name, got, tc.status, tc.reason, tc.changed)
		}
	}
}

func TestAQuoteThatIsNotGenuineSaysWhy(t *testing.T) {
	q := &ctlproto.Quote{Nonce: make([]byte, 32), AttestData: []byte{1, 2, 3}, Signature: []byte{4, 5},
		PCRValues: []ctlproto.PCRValue{{Index: 7, HashAlgo: "sha256", Value: val(0)}}}
	if why := checkGenuine(q, "not a key", q.Nonce, []int{7}); !strings.Contains(why, "attestation key cannot be read") {
		t.Errorf("no AK: %q", why)
	}
	if why := checkGenuine(q, fakeAK(t), q.Nonce, []int{7}); !strings.HasPrefix(why, "malformed quote: ") {
		t.Errorf("garbage: %q", why)
	}
	if _, err := quotedPCRs([]byte{0xff, 0x54}); err == nil {
		t.Error("quotedPCRs of garbage: no error")
	}
}

func TestReasonsAreCutWithinTheBoundAtARune(t *testing.T) {
	long := strings.Repeat("é", ctlproto.MaxReason)
	got := truncate(long)
	if len(got) > ctlproto.MaxReason || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Errorf("truncate: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if truncate("short") != "short" {
		t.Error("a short reason was changed")
	}
}
