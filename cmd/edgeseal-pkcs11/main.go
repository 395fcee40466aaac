//go:build cgo

// Command edgeseal-pkcs11 is the one cgo binary of edgeseal: it loads a
// vendor's PKCS#11 module (a C library) for the pkcs11 sealer, so that the
// module never runs inside edgeseal-unseal, which holds the unseal key and is
// static. The sealer runs it once per operation with one request on stdin
// (internal/pkcs11proto) and reads one answer on stdout; it reads the PIN from
// the request's PIN file itself. Exit status 0 means an answer was written
// (which may be an error); anything else is a failure of the helper itself.
//
// Installed in LIBEXECDIR; built with CGO_ENABLED=1 against
// github.com/miekg/pkcs11.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/miekg/pkcs11"
	"golang.org/x/sys/unix"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/pkcs11proto"
)

// maxPINFile bounds the PIN file: PKCS#11 PINs are short (SoftHSM2: 4 to 255).
const maxPINFile = 256

func main() {
	// First, before the PIN or a key is in memory.
	if err := harden(); err != nil {
		fmt.Fprintf(os.Stderr, "edgeseal-pkcs11: %v\n", err)
		os.Exit(1)
	}
	in, err := io.ReadAll(io.LimitReader(os.Stdin, pkcs11proto.MaxRequestSize+1))
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgeseal-pkcs11: cannot read the request: %v\n", err)
		os.Exit(1)
	}
	req, err := pkcs11proto.ParseRequest(in)
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgeseal-pkcs11: %v\n", err)
		os.Exit(1)
	}
	a := serve(req)
	a.V = pkcs11proto.Version
	if _, err := os.Stdout.Write(pkcs11proto.Marshal(a)); err != nil {
		os.Exit(1)
	}
	clear(a.Data)
}

// failure is an error with its answer code.
type failure struct{ code, msg string }

func (f *failure) Error() string { return f.msg }

func fail(code, format string, args ...any) error {
	return &failure{code, fmt.Sprintf(format, args...)}
}

// harden makes this process impossible to core-dump (a crash in a vendor's
// module would otherwise write the PIN and the data key to disk, or hand them
// to a core handler) and, not dumpable, impossible to ptrace or read through
// /proc/<pid>/mem as the same uid without CAP_SYS_PTRACE.
func harden() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("cannot make the helper not dumpable: %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("cannot forbid the helper core dumps: %w", err)
	}
	return nil
}

func serve(req *pkcs11proto.Request) *pkcs11proto.Answer {
	a := &pkcs11proto.Answer{}
	serial, data, err := run(req)
	if err != nil {
		var f *failure
		if !errors.As(err, &f) {
			f = &failure{pkcs11proto.CodeFailed, err.Error()}
		}
		a.Error, a.Message = f.code, pkcs11proto.Message(f.msg)
		return a
	}
	a.Serial, a.Data = serial, data
	return a
}

// run does req on the token and returns the token's serial and the result.
func run(req *pkcs11proto.Request) (serial string, out []byte, err error) {
	if _, err := os.Stat(req.Module); err != nil {
		return "", nil, fail(pkcs11proto.CodeModule, "cannot load the PKCS#11 module %s: %v", req.Module, err)
	}
	ctx := pkcs11.New(req.Module)
	if ctx == nil {
		return "", nil, fail(pkcs11proto.CodeModule, "cannot load the PKCS#11 module %s: it is not a PKCS#11 library (dlopen or C_GetFunctionList failed)", req.Module)
	}
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		return "", nil, fail(pkcs11proto.CodeModule, "cannot initialise the PKCS#11 module %s: %v", req.Module, err)
	}
	defer ctx.Finalize()

	slot, info, err := findToken(ctx, req)
	if err != nil {
		return "", nil, err
	}
	serial = info.SerialNumber
	if req.Op == pkcs11proto.OpDecrypt && serial != req.Serial {
		return serial, nil, fail(pkcs11proto.CodeWrongDevice, "the blob was sealed with the key of the token with serial %q, but the token %s has serial %q", req.Serial, tokenName(req), serial)
	}
	pin, err := readPIN(req.PINFile)
	if err != nil {
		return serial, nil, err
	}
	flags := uint(pkcs11.CKF_SERIAL_SESSION)
	if req.Op == pkcs11proto.OpGenerate {
		flags |= pkcs11.CKF_RW_SESSION
	}
	sh, err := ctx.OpenSession(slot, flags)
	if err != nil {
		return serial, nil, tokenError("open a session on the token "+tokenName(req), err)
	}
	defer ctx.CloseSession(sh)
	err = ctx.Login(sh, pkcs11.CKU_USER, string(pin))
	clear(pin)
	if err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		return serial, nil, tokenError("log in to the token "+tokenName(req)+" with the PIN in "+req.PINFile, err)
	}
	defer ctx.Logout(sh)

	if req.Op == pkcs11proto.OpGenerate {
		return serial, nil, generate(ctx, sh, req)
	}
	key, err := findKey(ctx, sh, req)
	if err != nil {
		return serial, nil, err
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, pkcs11.NewGCMParams(req.IV, req.AAD, pkcs11proto.TagBits))}
	if req.Op == pkcs11proto.OpEncrypt {
		if err := ctx.EncryptInit(sh, mech, key); err != nil {
			return serial, nil, tokenError("encrypt with the key "+req.KeyLabel, err)
		}
		out, err = ctx.Encrypt(sh, req.Data)
		if err != nil {
			return serial, nil, tokenError("encrypt with the key "+req.KeyLabel, err)
		}
		return serial, out, nil
	}
	out, err = decryptRetrying(func(fresh bool) ([]byte, error) {
		sh := sh
		if fresh {
			// The login is the application's, not the session's: a fresh
			// session is logged in too.
			var err error
			if sh, err = ctx.OpenSession(slot, flags); err != nil {
				return nil, err
			}
			defer ctx.CloseSession(sh)
		}
		if err := ctx.DecryptInit(sh, mech, key); err != nil {
			return nil, err
		}
		return ctx.Decrypt(sh, req.Data)
	})
	if err != nil {
		if code(err) == pkcs11proto.CodeFailed && isAuthFailure(err) {
			return serial, nil, fail(pkcs11proto.CodeWrongDevice, "the key %s of the token %s does not open the blob (%v): the key was replaced, or the blob is another key's", req.KeyLabel, tokenName(req), err)
		}
		return serial, nil, tokenError("decrypt with the key "+req.KeyLabel, err)
	}
	return serial, out, nil
}

// decryptRetrying runs decrypt, on the session of the login, and once more
// on a fresh session if the token answered CKR_GENERAL_ERROR: that is what
// SoftHSM2 and some tokens answer for an AES-GCM tag that does not verify
// (the wrong key: not worth a restart), but also what a real token answers
// for an internal fault, which a second try may pass.
func decryptRetrying(decrypt func(fresh bool) ([]byte, error)) ([]byte, error) {
	out, err := decrypt(false)
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)) {
		out, err = decrypt(true)
	}
	return out, err
}

func tokenName(req *pkcs11proto.Request) string {
	if req.TokenSerial != "" {
		return fmt.Sprintf("with serial %q", req.TokenSerial)
	}
	return fmt.Sprintf("labelled %q", req.TokenLabel)
}

// findToken returns the slot of the one token req names.
func findToken(ctx *pkcs11.Ctx, req *pkcs11proto.Request) (uint, pkcs11.TokenInfo, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fail(pkcs11proto.CodeModule, "cannot list the slots of %s: %v", req.Module, err)
	}
	var found []uint
	var info pkcs11.TokenInfo
	var seen []string
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		seen = append(seen, fmt.Sprintf("%q (serial %q)", ti.Label, ti.SerialNumber))
		if (req.TokenLabel != "" && ti.Label == req.TokenLabel) || (req.TokenSerial != "" && ti.SerialNumber == req.TokenSerial) {
			found = append(found, s)
			info = ti
		}
	}
	switch len(found) {
	case 0:
		present := "none"
		if len(seen) > 0 {
			present = fmt.Sprint(seen)
		}
		return 0, info, fail(pkcs11proto.CodeTokenAbsent, "no token %s in %s (tokens present: %s)", tokenName(req), req.Module, present)
	case 1:
		return found[0], info, nil
	}
	return 0, info, fail(pkcs11proto.CodeFailed, "%d tokens are %s in %s: name the token by seal.pkcs11.token_serial", len(found), tokenName(req), req.Module)
}

// findKey returns the one AES secret key labelled req.KeyLabel, which must
// have the attributes requiredAttributes lists.
func findKey(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, req *pkcs11proto.Request) (pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, req.KeyLabel),
	}
	if err := ctx.FindObjectsInit(sh, tmpl); err != nil {
		return 0, tokenError("look for the key "+req.KeyLabel, err)
	}
	objs, _, err := ctx.FindObjects(sh, 2)
	ctx.FindObjectsFinal(sh)
	if err != nil {
		return 0, tokenError("look for the key "+req.KeyLabel, err)
	}
	switch len(objs) {
	case 0:
		return 0, fail(pkcs11proto.CodeKeyAbsent, "the token %s has no AES key labelled %q (seal.pkcs11.key_label): make it as README's \"The unseal key in a PKCS#11 token\" says", tokenName(req), req.KeyLabel)
	case 2:
		return 0, fail(pkcs11proto.CodeFailed, "the token %s has more than one AES key labelled %q: keep one", tokenName(req), req.KeyLabel)
	}
	attrs, err := ctx.GetAttributeValue(sh, objs[0], requiredAttributes)
	if err != nil {
		return 0, tokenError("read the attributes of the key "+req.KeyLabel, err)
	}
	if len(attrs) != len(requiredAttributes) {
		return 0, fail(pkcs11proto.CodeFailed, "cannot read the attributes of the key %q: the token answered %d of %d", req.KeyLabel, len(attrs), len(requiredAttributes))
	}
	for i, need := range requiredAttributes {
		if attrs[i].Type != need.Type || !bytes.Equal(attrs[i].Value, need.Value) {
			r := requiredAttribute[need.Type]
			return 0, fail(pkcs11proto.CodeFailed, "the key %q of the token %s is refused: %s is %v: %s; make a key as README's \"The unseal key in a PKCS#11 token\" says",
				req.KeyLabel, tokenName(req), r.name, !r.want, r.why)
		}
	}
	return objs[0], nil
}

// requiredAttribute says, for each attribute findKey checks, the value it
// needs and why: together they mean a key that lives in the token only, whose
// value nobody has ever seen, usable only after a login with the PIN.
// CKA_LOCAL (generated in this token) is not required: a key unwrapped into
// the token from a vendor's escrow has CKA_LOCAL false yet meets the rest.
var requiredAttribute = map[uint]struct {
	name string
	want bool
	why  string
}{
	pkcs11.CKA_SENSITIVE:         {"CKA_SENSITIVE", true, "its value can be read out of the token"},
	pkcs11.CKA_EXTRACTABLE:       {"CKA_EXTRACTABLE", false, "it can be wrapped out of the token"},
	pkcs11.CKA_ALWAYS_SENSITIVE:  {"CKA_ALWAYS_SENSITIVE", true, "its value was once readable (imported with C_CreateObject, or made not sensitive), so someone may know it"},
	pkcs11.CKA_NEVER_EXTRACTABLE: {"CKA_NEVER_EXTRACTABLE", true, "it was once extractable, so a copy may exist outside the token"},
	pkcs11.CKA_TOKEN:             {"CKA_TOKEN", true, "it is a session object, gone when the session closes"},
	pkcs11.CKA_PRIVATE:           {"CKA_PRIVATE", true, "a session that never logged in can use it, so the PIN protects nothing"},
}

// requiredAttributes is the template findKey reads, in the order it checks
// and with the values it needs (CK_BBOOL: 1 true, 0 false).
var requiredAttributes = func() []*pkcs11.Attribute {
	var t []*pkcs11.Attribute
	for _, typ := range []uint{pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE, pkcs11.CKA_TOKEN, pkcs11.CKA_PRIVATE} {
		t = append(t, pkcs11.NewAttribute(typ, requiredAttribute[typ].want))
	}
	return t
}()

// generate makes the sealing key: AES-256, a token object, private,
// sensitive, not extractable, for encryption and decryption only.
func generate(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, req *pkcs11proto.Request) error {
	if _, err := findKey(ctx, sh, req); err == nil || code(err) != pkcs11proto.CodeKeyAbsent {
		if err == nil {
			return fail(pkcs11proto.CodeFailed, "the token %s already has a key labelled %q", tokenName(req), req.KeyLabel)
		}
		return err
	}
	tmpl := append(aesKeyTemplate(req.KeyLabel, true, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false))
	if _, err := ctx.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl); err != nil {
		return tokenError("generate the key "+req.KeyLabel, err)
	}
	return nil
}

// aesKeyTemplate is the template of an AES-256 token key labelled label for
// encryption and decryption, with CKA_SENSITIVE and CKA_EXTRACTABLE as given.
func aesKeyTemplate(label string, sensitive, extractable bool) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, sensitive),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, extractable),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
	}
}

// readPIN reads the PIN file: 1 to maxPINFile-1 bytes, less one final
// newline, from a file only its owner, root or this process's user, can use
// (fsutil.ReadSecretFile).
func readPIN(path string) ([]byte, error) {
	data, err := fsutil.ReadSecretFile(path, maxPINFile)
	if err != nil {
		return nil, fail(pkcs11proto.CodePINFile, "cannot read the token's PIN (seal.pkcs11.pin_file): %v", err)
	}
	pin := bytes.TrimSuffix(data, []byte("\n"))
	if len(pin) == 0 || len(pin) >= maxPINFile {
		clear(data)
		return nil, fail(pkcs11proto.CodePINFile, "cannot use the PIN in %s (seal.pkcs11.pin_file): it must be 1 to %d bytes", path, maxPINFile-1)
	}
	return pin, nil
}

// tokenError is a PKCS#11 error of an operation, with the code it maps to.
func tokenError(what string, err error) error {
	return fail(code(err), "cannot %s: %v", what, err)
}
