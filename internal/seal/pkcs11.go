package seal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/edgeseal/edgeseal/internal/aesgcm"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/pkcs11proto"
)

// pkcs11Helper is where `make install` puts edgeseal-pkcs11: the Makefile sets
// it to $(LIBEXECDIR)/edgeseal-pkcs11 (-ldflags -X).
var pkcs11Helper = "/usr/libexec/edgeseal/edgeseal-pkcs11"

// Sizes of a pkcs11 blob.
const (
	// dataKeySize is the random AES-256 key that seals the secret.
	dataKeySize = aesgcm.KeySize
	// wrappedSize is the token's AES-GCM of the data key: IV, ciphertext, tag.
	wrappedSize = pkcs11proto.IVSize + dataKeySize + tagSize
	// maxSerialSize bounds the token serial a blob records (CK_TOKEN_INFO's 16).
	maxSerialSize = 16
	// defaultPKCS11Timeout applies when the configured timeout is not positive.
	defaultPKCS11Timeout = 30 * time.Second
	// helperStderrLimit bounds the helper's diagnostics kept for a message.
	helperStderrLimit = 4 << 10
)

// pkcs11Sealer seals with a random data key that the token encrypts with its
// own AES key, which never leaves it (see docs/sealed-blob.md).
type pkcs11Sealer struct {
	cfg  config.PKCS11
	rand io.Reader
	// token runs one request on the token: the helper, or a test's stand-in.
	token func(ctx context.Context, req *pkcs11proto.Request) (*pkcs11proto.Answer, error)
}

// NewPKCS11 returns the pkcs11 sealer. Each Seal and Unseal runs the helper
// edgeseal-pkcs11 once (the module is loaded there, never in this process),
// within cfg.Timeout (30s if not positive).
func NewPKCS11(cfg config.PKCS11) Sealer { return newPKCS11(cfg, pkcs11Helper) }

func newPKCS11(cfg config.PKCS11, helper string) *pkcs11Sealer {
	s := &pkcs11Sealer{cfg: cfg, rand: rand.Reader}
	s.token = func(ctx context.Context, req *pkcs11proto.Request) (*pkcs11proto.Answer, error) {
		return runPKCS11Helper(ctx, helper, req, cfg.Timeout.D(), pkcs11HelperEnv(cfg.Environment))
	}
	return s
}

func (s *pkcs11Sealer) Method() string { return MethodPKCS11 }

func (s *pkcs11Sealer) request(op string) *pkcs11proto.Request {
	return &pkcs11proto.Request{
		V: pkcs11proto.Version, Op: op, Module: s.cfg.Module,
		TokenLabel: s.cfg.TokenLabel, TokenSerial: s.cfg.TokenSerial,
		KeyLabel: s.cfg.KeyLabel, PINFile: s.cfg.PINFile,
		AAD: pkcs11TokenAAD(EnvelopeVersion, s.cfg.KeyLabel),
	}
}

func (s *pkcs11Sealer) Seal(ctx context.Context, secret []byte) ([]byte, error) {
	if err := checkSecret(secret); err != nil {
		return nil, err
	}
	dataKey := make([]byte, dataKeySize)
	defer clear(dataKey)
	iv := make([]byte, pkcs11proto.IVSize)
	e := &Envelope{Version: EnvelopeVersion, Method: MethodPKCS11, Nonce: make([]byte, nonceSize)}
	for _, b := range [][]byte{dataKey, iv, e.Nonce} {
		if _, err := io.ReadFull(s.rand, b); err != nil {
			return nil, fmt.Errorf("cannot read random bytes: %w", err)
		}
	}
	req := s.request(pkcs11proto.OpEncrypt)
	req.IV, req.Data = iv, dataKey
	a, err := s.call(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(a.Data) != dataKeySize+tagSize || a.Serial == "" || len(a.Serial) > maxSerialSize {
		return nil, fmt.Errorf("%w: the token answered %d bytes and a serial of %d, want %d and 1 to %d",
			ErrPKCS11, len(a.Data), len(a.Serial), dataKeySize+tagSize, maxSerialSize)
	}
	e.Token = []byte(a.Serial)
	e.Wrapped = append(iv, a.Data...)
	aead, err := aesgcm.New(dataKey)
	if err != nil {
		return nil, fmt.Errorf("internal error: %w", err)
	}
	e.Ciphertext = aead.Seal(nil, e.Nonce, secret, pkcs11AAD(e, s.cfg.KeyLabel))
	return e.Marshal(), nil
}

func (s *pkcs11Sealer) Unseal(ctx context.Context, blob []byte) ([]byte, error) {
	// Parse first: a corrupt or foreign blob is reported without the token.
	e, err := parseFor(MethodPKCS11, blob)
	if err != nil {
		return nil, err
	}
	req := s.request(pkcs11proto.OpDecrypt)
	req.Serial = string(e.Token)
	req.IV, req.Data = e.Wrapped[:pkcs11proto.IVSize], e.Wrapped[pkcs11proto.IVSize:]
	a, err := s.call(ctx, req)
	if err != nil {
		return nil, err
	}
	dataKey := a.Data
	defer clear(dataKey)
	if len(dataKey) != dataKeySize || a.Serial != string(e.Token) {
		return nil, fmt.Errorf("%w: the token answered a %d-byte key from serial %q, want %d bytes from %q",
			ErrPKCS11, len(dataKey), a.Serial, dataKeySize, e.Token)
	}
	aead, err := aesgcm.New(dataKey)
	if err != nil {
		return nil, fmt.Errorf("internal error: %w", err)
	}
	secret, err := aead.Open(nil, e.Nonce, e.Ciphertext, pkcs11AAD(e, s.cfg.KeyLabel))
	if err != nil {
		// The token's key authenticated the data key: what it does not open was
		// changed after sealing.
		return nil, corrupt("the token's key opens the data key but the data key does not open the secret: the blob was altered")
	}
	return secret, nil
}

// call runs req on the token and turns an error answer into this package's
// sentinels.
func (s *pkcs11Sealer) call(ctx context.Context, req *pkcs11proto.Request) (*pkcs11proto.Answer, error) {
	a, err := s.token(ctx, req)
	if err != nil {
		return nil, err
	}
	if a.Error != "" {
		return nil, answerError(a)
	}
	return a, nil
}

// errPINLocked is ErrLockout in a PKCS#11 token's words (ErrLockout's own text
// speaks of a TPM).
var errPINLocked = &renamed{ErrLockout, "the PKCS#11 token's user PIN is locked"}

// renamed is target under another text, for a sentinel shared with another
// device.
type renamed struct {
	target error
	text   string
}

func (r *renamed) Error() string        { return r.text }
func (r *renamed) Is(target error) bool { return target == r.target }

// answerError maps the helper's error answer to a sentinel, with what to do.
func answerError(a *pkcs11proto.Answer) error {
	switch a.Error {
	case pkcs11proto.CodeModule:
		return fmt.Errorf("%w: %s: check seal.pkcs11.module names the token vendor's PKCS#11 library", ErrPKCS11, a.Message)
	case pkcs11proto.CodeTokenAbsent:
		return fmt.Errorf("%w: %s: plug the token in, or check seal.pkcs11.token_label or token_serial", ErrTokenAbsent, a.Message)
	case pkcs11proto.CodeKeyAbsent:
		return fmt.Errorf("%w: %s", ErrKeyAbsent, a.Message)
	case pkcs11proto.CodeWrongPIN:
		return fmt.Errorf("%w: %s: put the token's user PIN in seal.pkcs11.pin_file (each wrong PIN may count toward the token's lockout)", ErrWrongPIN, a.Message)
	case pkcs11proto.CodeLocked:
		return fmt.Errorf("%w: %s: unlock it with the token's SO PIN (the vendor's tool), then restart", errPINLocked, a.Message)
	case pkcs11proto.CodeWrongDevice:
		return fmt.Errorf("%w: %s", ErrWrongDevice, a.Message)
	}
	return fmt.Errorf("%w: %s", ErrPKCS11, a.Message)
}

// runPKCS11Helper runs the helper once with req on its stdin and returns its
// answer. The helper and what it starts run as childCommand says, killed
// together at the timeout, with env as their whole environment.
func runPKCS11Helper(ctx context.Context, helper string, req *pkcs11proto.Request, timeout time.Duration, env []string) (*pkcs11proto.Answer, error) {
	if timeout <= 0 {
		timeout = defaultPKCS11Timeout
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	in := pkcs11proto.Marshal(req)
	defer clear(in)
	stdout := &limitedBuffer{buf: make([]byte, 0, pkcs11proto.MaxAnswerSize), failOnOverflow: true}
	defer func() { clear(stdout.buf[:cap(stdout.buf)]) }()
	stderr := &limitedBuffer{buf: make([]byte, 0, helperStderrLimit)}
	cmd := childCommand(hctx, env, helper)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	fail := func(format string, args ...any) (*pkcs11proto.Answer, error) {
		msg := fmt.Sprintf(format, args...)
		if d := stderr.diagnostics(); d != "" {
			msg += "; its stderr: " + d
		}
		return nil, fmt.Errorf("%w: the PKCS#11 helper %s %s", ErrPKCS11, helper, msg)
	}
	err := cmd.Run()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail("is not installed: seal method pkcs11 needs it (make install puts it in LIBEXECDIR; the snap has none)")
	case stdout.overflow:
		return fail("answered more than %d bytes", pkcs11proto.MaxAnswerSize)
	case err == nil:
	case ctx.Err() != nil:
		return nil, fmt.Errorf("the PKCS#11 helper was interrupted: %w", ctx.Err())
	case hctx.Err() != nil:
		return fail("did not finish within %s (seal.pkcs11.timeout): is the token responding?", timeout)
	default:
		return fail("failed: %v", err)
	}
	a, err := pkcs11proto.ParseAnswer(stdout.buf)
	if err != nil {
		return fail("answered what edgeseal cannot read: %v", err)
	}
	// a.Data was decoded into memory of its own, not stdout's: the caller
	// clears it, and no copy of the data key is left behind.
	return a, nil
}

// pkcs11TokenAAD returns the additional authenticated data of the token's
// AES-GCM of the data key:
//
//	"edgeseal sealed-blob"   20 bytes, ASCII, no terminator
//	0x00                     1 byte separator
//	version                  4 bytes, big-endian uint32
//	len(method)              1 byte
//	method                   ASCII ("pkcs11", 6 bytes)
//	len(key label)           1 byte
//	key label                seal.pkcs11.key_label, 1 to 64 bytes
func pkcs11TokenAAD(version int, keyLabel string) []byte {
	aad := make([]byte, 0, len(aadMagic)+1+4+1+len(MethodPKCS11)+1+len(keyLabel))
	aad = append(aad, aadMagic...)
	aad = append(aad, 0)
	aad = binary.BigEndian.AppendUint32(aad, uint32(version))
	aad = append(aad, byte(len(MethodPKCS11)))
	aad = append(aad, MethodPKCS11...)
	aad = append(aad, byte(len(keyLabel)))
	return append(aad, keyLabel...)
}

// pkcs11AAD returns the additional authenticated data of the secret's
// AES-GCM: the token's AAD, then len(token) (1 byte), token (the token's
// serial) and wrapped (60 bytes). It binds the secret to the token, the key
// label and the wrapped data key.
func pkcs11AAD(e *Envelope, keyLabel string) []byte {
	aad := pkcs11TokenAAD(e.Version, keyLabel)
	aad = append(aad, byte(len(e.Token)))
	aad = append(aad, e.Token...)
	return append(aad, e.Wrapped...)
}
