package vaultbin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseKnowsBothServersVersionLines(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want Info
	}{
		{"OpenBao v2.4.1 (efb9efa12f550e8322f3cec040862355e966f565), built 2025-11-01T10:00:00Z\n", Info{OpenBao, "2.4.1", 2, 4, 1}},
		{"Vault v1.21.0 ('a1b2c3'), built 2025-10-20T00:00:00Z\n", Info{Vault, "1.21.0", 1, 21, 0}},
		{"Vault v1.21.0, built 2025-12-02T06:46:18Z\n", Info{Vault, "1.21.0", 1, 21, 0}},
		{"OpenBao v2.4.0-beta1 (x)\n", Info{OpenBao, "2.4.0-beta1", 2, 4, 0}},
	} {
		got, err := Parse([]byte(tc.out))
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.out, got, err, tc.want)
		}
	}
}

func TestParseRefusesWhatIsNotOpenBaoOrVault(t *testing.T) {
	for _, out := range []string{
		"", "\n", "Consul v1.20.0\n", "Vault\n", "Vault 1.21.0\n", "Vault v1.21\n",
		"Vault v1.21.x\n", "OpenBao v02.4.1\n", "OpenBao v2.4.1.7\n", "vault v1.21.0\n",
		"Vault v" + strings.Repeat("9", 100) + ".1.1\n",
	} {
		if _, err := Parse([]byte(out)); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Parse(%q): err %v, want ErrUnsupported", out, err)
		}
	}
}

func TestCheckAcceptsOnlyTheTestedSeries(t *testing.T) {
	for _, tc := range []struct {
		info Info
		ok   bool
	}{
		{Info{OpenBao, "2.4.1", 2, 4, 1}, true},
		{Info{OpenBao, "2.4.9", 2, 4, 9}, true},
		{Info{Vault, "1.21.3", 1, 21, 3}, true},
		{Info{OpenBao, "2.3.2", 2, 3, 2}, false},
		{Info{OpenBao, "2.5.0", 2, 5, 0}, false},
		{Info{Vault, "1.20.4", 1, 20, 4}, false},
		{Info{Vault, "2.4.1", 2, 4, 1}, false},
	} {
		err := tc.info.Check()
		if (err == nil) != tc.ok {
			t.Errorf("%v.Check() = %v, want ok=%v", tc.info, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "OpenBao 2.4.x, Vault 1.21.x") || !strings.Contains(err.Error(), tc.info.Version)) {
			t.Errorf("%v.Check() = %v: want ErrUnsupported naming the version found and those supported", tc.info, err)
		}
	}
}

func TestRunningChecksTheReportedReleaseAsTheBinarysKind(t *testing.T) {
	bin := Info{OpenBao, "2.4.1", 2, 4, 1}
	if r, same, err := bin.Running("2.4.1"); err != nil || !same || r != bin {
		t.Errorf("Running(2.4.1) = %v, %v, %v", r, same, err)
	}
	if _, same, err := bin.Running("2.4.0"); err != nil || same {
		t.Errorf("Running(2.4.0) = %v, %v: want a supported release that differs", same, err)
	}
	for _, v := range []string{"1.21.0", "2.5.0", "", "banana"} {
		if _, _, err := bin.Running(v); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Running(%q): err %v, want ErrUnsupported", v, err)
		}
	}
}

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestIdentifyRunsTheBinaryAndNamesItInEveryRefusal(t *testing.T) {
	ok := script(t, `[ "$1" = version ] && [ -z "$VAULT_TOKEN" ] && echo 'OpenBao v2.4.1 (abc), built today'`)
	t.Setenv("VAULT_TOKEN", "s.leak")
	info, err := Identify(context.Background(), ok)
	if err != nil || info.Kind != OpenBao || info.Version != "2.4.1" {
		t.Fatalf("Identify = %+v, %v", info, err)
	}

	old := script(t, `echo 'Vault v1.15.6 (x), built then'`)
	_, err = Identify(context.Background(), old)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), old) || !strings.Contains(err.Error(), "Vault v1.15.6") || !strings.Contains(err.Error(), "OpenBao 2.4.x") {
		t.Errorf("an old Vault: %v; want ErrUnsupported naming the binary, its version and the supported ones", err)
	}

	other := script(t, `echo 'Consul v1.20.0'`)
	if _, err := Identify(context.Background(), other); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), other) {
		t.Errorf("another program: %v", err)
	}

	failing := script(t, `echo 'no such command' >&2; exit 3`)
	if _, err := Identify(context.Background(), failing); err == nil || !strings.Contains(err.Error(), failing) || !strings.Contains(err.Error(), "no such command") {
		t.Errorf("a failing binary: %v", err)
	}

	if _, err := Identify(context.Background(), failing); !errors.Is(err, ErrUnsupported) {
		t.Errorf("a failing binary: %v, want ErrUnsupported (a retry cures nothing)", err)
	}

	missing := filepath.Join(t.TempDir(), "bao")
	if _, err := Identify(context.Background(), missing); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing binary: %v", err)
	}

	slow := script(t, `sleep 5; echo 'OpenBao v2.4.1 (x)'`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Identify(ctx, slow); !errors.Is(err, ErrNoAnswer) || errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), slow) {
		t.Errorf("a binary that does not answer in time: %v, want ErrNoAnswer (a retry may cure it), not ErrUnsupported", err)
	}

	chatty := script(t, `echo 'OpenBao v2.4.1 (x)'; yes | head -c 10000000`)
	if info, err := Identify(context.Background(), chatty); err != nil || info.Version != "2.4.1" {
		t.Errorf("a binary that prints 10 MB: %+v, %v", info, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("OpenBao v2.4.1 (efb9efa), built 2025-11-01T10:00:00Z\n"))
	f.Add([]byte("Vault v1.21.0, built 2025-12-02T06:46:18Z\n"))
	f.Add([]byte("Vault v1.21.0-rc1+ent\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		info, err := Parse(out)
		if err != nil {
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Parse error %v does not wrap ErrUnsupported", err)
			}
			return
		}
		if info.Kind != OpenBao && info.Kind != Vault {
			t.Fatalf("Parse = kind %q", info.Kind)
		}
		if !strings.HasPrefix(info.Version, fmt.Sprintf("%d.%d.%d", info.Major, info.Minor, info.Patch)) {
			t.Fatalf("Parse = %+v: version and numbers disagree", info)
		}
	})
}
