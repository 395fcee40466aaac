package cmdline

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestPCRListTakesIndexesOnceEachFrom0To23(t *testing.T) {
	for in, want := range map[string][]int{"0,7": {0, 7}, " 4 , 23,0": {4, 23, 0}, "16": {16}} {
		var p PCRList
		if err := p.Set(in); err != nil || !slices.Equal(p.List, want) || !p.Given {
			t.Errorf("%q: %v, %v; want %v", in, p.List, err, want)
		}
	}
	for in, want := range map[string]string{"7,99": `"99" is not a PCR index (0 to 23)`, "7,7": "PCR 7 is given twice",
		"": `"" is not a PCR index`, "-1": `"-1" is not a PCR index`, "0x7": `"0x7" is not a PCR index`} {
		var p PCRList
		if err := p.Set(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want %q", in, err, want)
		}
	}
}

func TestAPCRListFlagKeepsItsDefaultUntilGiven(t *testing.T) {
	p := &PCRList{List: []int{0, 7}}
	fs := flag.NewFlagSet("edgeseal attest quote", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(p, "pcrs", "")
	if _, err := Parse(fs, nil); err != nil || p.Given || !slices.Equal(p.List, []int{0, 7}) {
		t.Fatalf("no flag: %+v, %v", p, err)
	}
	if _, err := Parse(fs, []string{"--pcrs", "4"}); err != nil || !p.Given || !slices.Equal(p.List, []int{4}) {
		t.Fatalf("--pcrs 4: %+v, %v", p, err)
	}
}

func TestPCRValuesAreSHA256ValuesByIndex(t *testing.T) {
	v := PCRValues{}
	good := strings.Repeat("ab", 32)
	if err := v.Set("7=" + good); err != nil || len(v[7]) != 32 {
		t.Fatalf("7=...: %v %x", err, v[7])
	}
	if got := v.String(); got != "7="+good {
		t.Errorf("String() = %q", got)
	}
	for in, want := range map[string]string{
		"7=" + good:        "PCR 7 is given twice",
		"24=" + good:       "want PCR=HEX with PCR 0 to 23",
		"7":                "want PCR=HEX",
		"8=abcd":           "PCR 8: want 64 hex digits",
		"9=" + good + "zz": "PCR 9: want 64 hex digits",
	} {
		if err := v.Set(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want %q", in, err, want)
		}
	}
}
