package refctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// testdata/state-v1.json is a recorded state.json of format version 1: it
// must keep parsing as long as this controller reads version 1.
func golden(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestTheRecordedStateParses(t *testing.T) {
	st, err := parseState(golden(t))
	if err != nil {
		t.Fatal(err)
	}
	d := st.Devices["edge-7"]
	if d == nil || !slices.Equal(d.PCRs, []int{0, 2, 4, 7, 16}) || d.Claims["location"] != "hall-3" {
		t.Fatalf("edge-7: %+v", d)
	}
	if !d.Enrolled.Equal(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)) || !d.Token.Used || d.Refused == nil || d.Refused.PCRs[16] != strings.Repeat("44", 32) {
		t.Errorf("edge-7: enrolment or refusal not read: %+v", d)
	}
	v := d.Vaults["0b5e2a3c-1d4f-4a6b-8c9d-0e1f2a3b4c5d"]
	if v == nil || v.Name != "alpha" || !v.Attestation || v.Acked != 1 || len(v.Keys) != 2 || v.current().Version != 2 || len(v.Escrow) == 0 {
		t.Errorf("alpha: %+v", v)
	}
	if e := st.Devices["edge-8"]; e == nil || !e.Enrolled.IsZero() || e.Token.Used {
		t.Errorf("edge-8: %+v", e)
	}
	// Written back, it reads the same.
	again, err := st.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, golden(t)) {
		t.Error("the recorded state is not written back as it was read")
	}
}

func TestTheStateIsReadStrictly(t *testing.T) {
	good := string(golden(t))
	cases := []struct {
		name, old, new, want string
	}{
		// Each replaces one piece of the recorded state.
		{"another format", `"edgeseal-controller-state"`, `"something-else"`, "format"},
		{"a later version", `"version": 1`, `"version": 2`, "version 2"},
		{"an unknown field", `"format"`, `"colour": "red", "format"`, "unknown field"},
		{"an unknown device field", `"pcrs": [`, `"nickname": "x", "pcrs": [`, "unknown field"},
		{"a bad device name", `"edge-8": {`, `"Edge 8": {`, "not a device name"},
		{"no PCRs", "\"pcrs\": [\n        7\n      ]", `"pcrs": []`, "pcrs: none"},
		{"a PCR out of range", "\"pcrs\": [\n        7\n      ]", `"pcrs": [24]`, "out of range"},
		{"PCRs out of order", "\"pcrs\": [\n        7\n      ]", `"pcrs": [7, 2]`, "not sorted"},
		{"a bad claim name", `"location": "hall-3"`, `"Location": "hall-3"`, "not a claim name"},
		{"a bad token hash", `"hash": "cc0b`, `"hash": "zz0b`, "token.hash"},
		{"an expected PCR not selected", `"16": "0000`, `"17": "0000`, "not in the selection"},
		{"an expected value not SHA-256", `"4": "2222`, `"4": "22`, "PCR 4"},
		{"a bad serial", `"cert_serial": "5f3a`, `"cert_serial": "-5f3a`, "cert_serial"},
		{"a key version repeated", `"version": 2,`, `"version": 1,`, "version 1 after 1"},
		{"acked past the newest", `"acked": 1`, `"acked": 3`, "acked 3"},
		{"an unknown unlock method", `"last_unlock": "tpm"`, `"last_unlock": "magic"`, "last_unlock"},
		{"a bad vault name", `"name": "alpha"`, `"name": "Alpha!"`, "not a vault name"},
		{"a bad escrow", `"escrow": "`, `"escrow": "AAAA`, "escrow"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(good, tc.old) {
				t.Fatalf("the recorded state has no %q", tc.old)
			}
			_, err := parseState([]byte(strings.Replace(good, tc.old, tc.new, 1)))
			if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrBadState saying %q", err, tc.want)
			}
		})
	}
	t.Run("data after it", func(t *testing.T) {
		if _, err := parseState([]byte(good + "{}")); !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), "data after") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("a file over the bound", func(t *testing.T) {
		if _, err := parseState(make([]byte, maxStateSize+1)); !errors.Is(err, ErrBadState) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("a key of 31 bytes", func(t *testing.T) {
		st, _ := parseState(golden(t))
		st.Devices["edge-7"].Vaults["0b5e2a3c-1d4f-4a6b-8c9d-0e1f2a3b4c5d"].Keys[0].Key = make([]byte, 31)
		data, _ := st.marshal()
		if _, err := parseState(data); !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), "31 bytes") {
			t.Errorf("error %v", err)
		}
	})
}

func FuzzParseState(f *testing.F) {
	f.Add(golden(f))
	f.Add([]byte(`{"format":"edgeseal-controller-state","version":1,"devices":{}}`))
	f.Add([]byte(`{"format":"edgeseal-controller-state","version":1,"devices":{"a":{"pcrs":[7],"vaults":{}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseState(data)
		if err != nil {
			return
		}
		// What parses is written back to something that parses the same.
		out, err := st.marshal()
		if err != nil {
			t.Fatal(err)
		}
		st2, err := parseState(out)
		if err != nil {
			t.Fatalf("a parsed state, written back, does not parse: %v", err)
		}
		out2, _ := st2.marshal()
		if !bytes.Equal(out, out2) {
			t.Fatal("a parsed state does not round-trip")
		}
	})
}

// refctl's two strict decoders refuse a closing bracket after the value, which
// encoding/json's Decoder.More let through (the table of the other callers is
// in internal/strictjson).
func TestRefctlDecodersRefuseAClosingBracketAfterTheValue(t *testing.T) {
	callers := []struct {
		name  string
		good  []byte
		parse func([]byte) error
	}{
		{"parseState (state.json)", golden(t), func(b []byte) error { _, err := parseState(b); return err }},
		{"decodeEnrolment (a device's enrolment request)", []byte(`{}`), func(b []byte) error { _, err := decodeEnrolment(b); return err }},
	}
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			if err := c.parse(bytes.Clone(c.good)); err != nil {
				t.Fatalf("the good input is refused: %v", err)
			}
			for _, tail := range []string{"]", "}", " }", "{}"} {
				if err := c.parse(append(bytes.Clone(c.good), tail...)); !errors.Is(err, strictjson.ErrTrailingData) {
					t.Errorf("with %q after the value: %v; want strictjson.ErrTrailingData", tail, err)
				}
			}
		})
	}
}

// A device record read from the OpenBao store is decoded as strictly as the
// directory's state: what parses is written back to the same.
func FuzzParseDeviceRecord(f *testing.F) {
	st, err := parseState(golden(f))
	if err != nil {
		f.Fatal(err)
	}
	for name, d := range st.Devices {
		rec, err := json.Marshal(&deviceRecord{deviceFormat, deviceVersion, d})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(name, rec)
	}
	f.Add("a", []byte(`{"format":"edgeseal-controller-device","version":1,"device":{"pcrs":[7],"vaults":{}}}`))
	f.Add("a", []byte(`{"format":"edgeseal-controller-device","version":1,"device":null}`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		d, err := parseDeviceRecord(name, data)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error not ErrBadState: %v", err)
			}
			return
		}
		out, err := json.Marshal(&deviceRecord{deviceFormat, deviceVersion, d})
		if err != nil {
			t.Fatal(err)
		}
		d2, err := parseDeviceRecord(name, out)
		if err != nil {
			t.Fatalf("a parsed record, written back, does not parse: %v", err)
		}
		if out2, _ := json.Marshal(&deviceRecord{deviceFormat, deviceVersion, d2}); !bytes.Equal(out, out2) {
			t.Fatal("a parsed record does not round-trip")
		}
	})
}
