//go:build cgo

package main

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/miekg/pkcs11"
	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/pkcs11proto"
)

// An error message quoting a long path (here the module's, of multi-byte
// characters or of characters JSON escapes) is cut to an answer the sealer
// still reads: valid UTF-8, within the message and answer bounds.
func TestALongMessageIsCutToAnAnswerTheSealerReads(t *testing.T) {
	for _, module := range []string{
		"/a" + strings.Repeat("€", 1300),
		"/" + strings.Repeat("<>&", 1300),
		"/" + strings.Repeat("\x01", 4000),
		"/" + strings.Repeat("\xff", 4000),
	} {
		a := serve(&pkcs11proto.Request{V: 1, Op: pkcs11proto.OpEncrypt, Module: module, TokenLabel: "dev",
			KeyLabel: "k", PINFile: "/p", IV: make([]byte, 12), Data: make([]byte, 32)})
		a.V = pkcs11proto.Version
		out := pkcs11proto.Marshal(a)
		b, err := pkcs11proto.ParseAnswer(out)
		if err != nil {
			t.Errorf("module %.10q...: the answer (%d bytes) does not parse: %v", module, len(out), err)
			continue
		}
		if b.Error != pkcs11proto.CodeModule || !utf8.ValidString(b.Message) || !strings.HasPrefix(b.Message, "cannot load the PKCS#11 module /") {
			t.Errorf("module %.10q...: %q", module, b.Message)
		}
	}
}

// A token's internal fault (CKR_GENERAL_ERROR) gets one more try on a fresh
// session before the helper answers that the key does not open the blob;
// other failures get none.
func TestADecryptThatFailsWithAGeneralErrorIsTriedOnceMore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		errs  []error
		tries int
		fresh []bool
		ok    bool
	}{
		{"a fault that passes", []error{pkcs11.Error(pkcs11.CKR_GENERAL_ERROR), nil}, 2, []bool{false, true}, true},
		{"a fault that stays", []error{pkcs11.Error(pkcs11.CKR_GENERAL_ERROR), pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)}, 2, []bool{false, true}, false},
		{"a tag that does not verify", []error{pkcs11.Error(pkcs11.CKR_ENCRYPTED_DATA_INVALID)}, 1, []bool{false}, false},
		{"a success", []error{nil}, 1, []bool{false}, true},
	} {
		var fresh []bool
		out, err := decryptRetrying(func(f bool) ([]byte, error) {
			fresh = append(fresh, f)
			if e := tc.errs[len(fresh)-1]; e != nil {
				return nil, e
			}
			return []byte("key"), nil
		})
		if len(fresh) != tc.tries || (err == nil) != tc.ok || (tc.ok && string(out) != "key") {
			t.Errorf("%s: %d tries (fresh %v), %q, %v", tc.name, len(fresh), fresh, out, err)
		}
		for i := range fresh {
			if fresh[i] != tc.fresh[i] {
				t.Errorf("%s: try %d on a fresh session: %v, want %v", tc.name, i+1, fresh[i], tc.fresh[i])
			}
		}
		if !tc.ok && !errors.Is(err, tc.errs[len(tc.errs)-1]) {
			t.Errorf("%s: %v, want the last try's error", tc.name, err)
		}
	}
}

// The helper, which holds the PIN and the data key, makes itself impossible
// to core-dump or to attach to as the same uid.
func TestTheHelperCannotBeCoreDumped(t *testing.T) {
	if err := harden(); err != nil {
		t.Fatal(err)
	}
	if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 0 {
		t.Errorf("PR_GET_DUMPABLE: %d, %v; want 0", d, err)
	}
	var core unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &core); err != nil || core.Cur != 0 || core.Max != 0 {
		t.Errorf("RLIMIT_CORE: %+v, %v; want 0 and 0", core, err)
	}
}
