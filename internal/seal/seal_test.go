package seal

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
)

func TestNewPicksSealerByMethod(t *testing.T) {
	hook := []string{"/etc/edgeseal/ikm-hook"}
	for _, tc := range []struct {
		name       string
		cfg        config.Seal
		wantMethod string
		wantErr    error  // sentinel, if any
		wantMsg    string // in the error message
	}{
		{name: "ikm-hook gives the hook sealer", cfg: config.Seal{Method: "ikm-hook", IKMHook: config.IKMHook{Command: hook}}, wantMethod: "ikm-hook"},
		{name: "ikm-hook with a relative hook path is refused", cfg: config.Seal{Method: "ikm-hook", IKMHook: config.IKMHook{Command: []string{"hook"}}},
			wantErr: ErrHook, wantMsg: `cannot use seal method ikm-hook: key material hook failed: hook path "hook" is not absolute`},
		{name: "ikm-hook without a command is refused", cfg: config.Seal{Method: "ikm-hook"}, wantErr: ErrHook, wantMsg: "no hook command"},
		{name: "none with consent gives the none sealer", cfg: config.Seal{Method: "none", AllowInsecureNone: true}, wantMethod: "none"},
		{name: "none without consent is refused", cfg: config.Seal{Method: "none"}, wantErr: ErrInsecureNotAllowed, wantMsg: "cannot use seal method none"},
		{name: "tpm2 gives the TPM sealer", cfg: config.Seal{Method: "tpm2"}, wantMethod: "tpm2"},
		{name: "an unknown method is named", cfg: config.Seal{Method: "rot13"}, wantMsg: `unknown seal method "rot13"`},
		{name: "an empty method is unknown", cfg: config.Seal{}, wantMsg: `unknown seal method ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg, func(string) {})
			if tc.wantMethod != "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Method() != tc.wantMethod {
					t.Errorf("got sealer %q, want %q", s.Method(), tc.wantMethod)
				}
				return
			}
			if err == nil {
				t.Fatalf("got sealer %q, want an error", s.Method())
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && isAny(err, ErrHook, ErrInsecureNotAllowed, ErrTPMAbsent, ErrCorrupt) {
				t.Errorf("got %v, want a plain error", err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not say %q", err, tc.wantMsg)
			}
		})
	}
}
