package seal

import (
	"context"
	"fmt"
	"os"
)

// noneWarning is what the none sealer says on every Seal and Unseal.
const noneWarning = "WARNING: seal method none stores the Vault unseal key in clear on disk; for development only"

// none "seals" by storing the secret in clear. It exists for development on
// machines without a vendor hook or a TPM, and says so loudly each time it is used.
type none struct {
	warn func(string)
}

// NewNone returns the none sealer, which stores the secret base64-encoded in clear
// in the envelope, with no protection and no integrity check beyond the strict
// parse. It refuses with ErrInsecureNotAllowed unless allow (the config's
// seal.allow_insecure_none) is true. warn receives a loud warning on every Seal and
// Unseal; if warn is nil the warning goes to standard error.
func NewNone(allow bool, warn func(string)) (Sealer, error) {
	if !allow {
		return nil, fmt.Errorf("cannot use seal method none: %w; it stores the Vault unseal key in clear: "+
			"set seal.allow_insecure_none: true to accept that (development only), or use ikm-hook", ErrInsecureNotAllowed)
	}
	if warn == nil {
		warn = func(msg string) { fmt.Fprintln(os.Stderr, msg) }
	}
	return &none{warn: warn}, nil
}

func (n *none) Method() string { return MethodNone }

func (n *none) Seal(ctx context.Context, secret []byte) ([]byte, error) {
	n.warn(noneWarning)
	if err := checkSecret(secret); err != nil {
		return nil, err
	}
	e := &Envelope{Version: EnvelopeVersion, Method: MethodNone, Secret: secret}
	return e.Marshal(), nil
}

func (n *none) Unseal(ctx context.Context, blob []byte) ([]byte, error) {
	n.warn(noneWarning)
	e, err := parseFor(MethodNone, blob)
	if err != nil {
		return nil, err
	}
	return e.Secret, nil
}
