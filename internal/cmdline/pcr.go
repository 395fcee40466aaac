package cmdline

import (
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// maxPCR is the highest PCR index of a PC-client TPM (24 PCRs).
const maxPCR = 23

// PCRList is a flag of PCR indexes, "0,2,4,7": each 0 to 23, none twice, in
// the order given. Given tells whether the flag was given at all (a default
// may stand in List until then).
type PCRList struct {
	List  []int
	Given bool
}

func (p *PCRList) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(p.List))
	for i, n := range p.List {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// Set reads "0,2,7"; a flag given twice keeps the last.
func (p *PCRList) Set(s string) error {
	var list []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > maxPCR {
			return fmt.Errorf("%q is not a PCR index (0 to %d)", f, maxPCR)
		}
		if slices.Contains(list, n) {
			return fmt.Errorf("PCR %d is given twice", n)
		}
		list = append(list, n)
	}
	p.List, p.Given = list, true
	return nil
}

// PCRValues is a repeatable flag of expected SHA-256 PCR values, N=HEX.
type PCRValues map[int][]byte

func (v PCRValues) String() string {
	keys := slices.Sorted(maps.Keys(v))
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = strconv.Itoa(k) + "=" + hex.EncodeToString(v[k])
	}
	return strings.Join(s, " ")
}

// Set reads one N=HEX: N 0 to 23, HEX 64 hex digits; a PCR given twice is
// refused.
func (v PCRValues) Set(s string) error {
	n, h, ok := strings.Cut(s, "=")
	idx, err := strconv.Atoi(n)
	if !ok || err != nil || idx < 0 || idx > maxPCR {
		return fmt.Errorf("want PCR=HEX with PCR 0 to %d, e.g. 7=%s", maxPCR, strings.Repeat("ab", 32))
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("PCR %d: want 64 hex digits (a SHA-256 value)", idx)
	}
	if _, dup := v[idx]; dup {
		return fmt.Errorf("PCR %d is given twice", idx)
	}
	v[idx] = b
	return nil
}
