package refctl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/hashicorp/vault/api"
	"github.com/tink-crypto/tink-go/v2/kwp/subtle"
)

// Moving a controller from a directory to OpenBao. Devices trust the
// controller's CA and pinned its bundle signing key at enrolment, so both
// go along: InitOpenBao with FromDir writes the directory's CA and server
// certificate as the identity and imports its signing key into transit
// (wrapped, as transit's import takes it; not exportable there). Migrate
// then copies the devices.

// dirIdentity reads a controller directory's identity and signing key.
func dirIdentity(dir string) (*identity, *ecdsa.PrivateKey, error) {
	p := newPaths(dir)
	k, err := p.readKeys()
	if err != nil {
		return nil, nil, err
	}
	read := func(path string) (string, error) {
		b, err := os.ReadFile(path)
		return string(b), err
	}
	id := &identity{}
	for _, f := range []struct {
		path string
		to   *string
	}{{p.caCert, &id.CACert}, {p.caKey, &id.CAKey}, {p.serverCert, &id.ServerCert}, {p.serverKey, &id.ServerKey}} {
		if *f.to, err = read(f.path); err != nil {
			return nil, nil, err
		}
	}
	return id, k.signer.(*ecdsa.PrivateKey), nil
}

// importSigningKey imports key as the transit signing key (ECDSA P-256, not
// exportable): PKCS#8, wrapped by a new AES-256 key (KWP, RFC 5649, by
// tink's implementation, the one OpenBao unwraps with), which is encrypted
// to the mount's wrapping key (RSA-OAEP, SHA-256).
func importSigningKey(ctx context.Context, nodes *baoNodes, token, mount string, key *ecdsa.PrivateKey) error {
	var sec *api.Secret
	err := nodes.do(ctx, token, func(ctx context.Context, c *api.Client) error {
		var err error
		sec, err = c.Logical().ReadWithContext(ctx, mount+"/wrapping_key")
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot read transit's wrapping key: %w", err)
	}
	var pubPEM string
	if sec != nil {
		pubPEM, _ = sec.Data["public_key"].(string)
	}
	blk, _ := pem.Decode([]byte(pubPEM))
	if blk == nil {
		return errors.New("cannot read transit's wrapping key: no PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	rsaPub, ok := pub.(*rsa.PublicKey)
	if err != nil || !ok {
		return fmt.Errorf("cannot read transit's wrapping key: not an RSA key (%v)", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	eph := make([]byte, 32)
	if _, err := rand.Read(eph); err != nil {
		return err
	}
	defer clear(eph)
	kwp, err := subtle.NewKWP(eph)
	if err != nil {
		return err
	}
	wrapped, err := kwp.Wrap(der)
	clear(der)
	if err != nil {
		return fmt.Errorf("cannot wrap the signing key: %w", err)
	}
	encEph, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, rsaPub, eph, nil)
	if err != nil {
		return fmt.Errorf("cannot wrap the signing key: %w", err)
	}
	ct := base64.StdEncoding.EncodeToString(append(encEph, wrapped...))
	err = nodes.do(ctx, token, func(ctx context.Context, c *api.Client) error {
		_, err := c.Logical().WriteWithContext(ctx, mount+"/keys/"+signingKeyName+"/import", map[string]any{
			"ciphertext": ct, "type": "ecdsa-p256", "hash_function": "SHA256",
			"exportable": false, "allow_plaintext_backup": false, "allow_rotation": false})
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot import the signing key into transit: %w", err)
	}
	return nil
}

// Migration is what Migrate did.
type Migration struct {
	Devices     int // in the directory
	Copied      int // written to the store now
	Already     int // in the store already, the same
	Kept        []string
	KeyVersions int // vault key versions in the directory, all found in the store
	Escrows     int // escrowed keys in the directory, all found in the store
}

// ErrDiffers: a device is in the store, and not as the directory has it.
var ErrDiffers = errors.New("the store and the directory differ")

// Migrate copies every device of the controller directory dir into to (an
// OpenBao store set up by InitOpenBao from the same directory), and checks
// that every device, key version and escrowed key arrived. It may be run
// again (after a cut, or to check): a device already copied is not written
// twice. A device that is in the store but differs (served by a replica
// since) is kept as the store has it and named in Kept; its key versions
// and escrow are still checked to be there.
func Migrate(ctx context.Context, dir string, to *Controller) (*Migration, error) {
	fail := func(err error) (*Migration, error) {
		return nil, fmt.Errorf("cannot migrate %s to %s: %w", dir, to, err)
	}
	bs, ok := to.st.(*baoStore)
	if !ok {
		return fail(errors.New("the target is not an OpenBao store"))
	}
	// The store must be this controller: devices trust its CA and pinned
	// its signing key.
	id, key, err := dirIdentity(dir)
	if err != nil {
		return fail(err)
	}
	k, err := bs.identity(ctx)
	if err != nil {
		return fail(err)
	}
	if !bytes.Equal([]byte(k.ca.Raw), mustCertDER(id.CACert)) || !k.signingPublic().Equal(&key.PublicKey) {
		return fail(fmt.Errorf("%w: its CA or signing key is not the directory's (init --openbao --from-dir %s)", ErrDiffers, dir))
	}
	var st *state
	if err := newPaths(dir).view(func(s *state) error { st = s; return nil }); err != nil {
		return fail(err)
	}
	m := &Migration{Devices: len(st.Devices)}
	for _, name := range slices.Sorted(maps.Keys(st.Devices)) {
		d := st.Devices[name]
		if d.Token != nil {
			if err := bs.tokenGiven(ctx, d.Token.Hash, name); err != nil {
				if got, gerr := bs.byToken(ctx, d.Token.Hash); gerr != nil || got != name {
					return fail(fmt.Errorf("device %s: its enrolment token: %w", name, err))
				}
			}
		}
		// Read first: create answers nil for a record already there the
		// same (its lost-answer rule), which is not a copy.
		got, err := bs.get(ctx, name)
		if errors.Is(err, ErrUnknownDevice) {
			if err = bs.create(ctx, name, d); err == nil {
				m.Copied++
				continue
			}
			if errors.Is(err, ErrExists) {
				got, err = bs.get(ctx, name)
			}
		}
		if err != nil {
			return fail(fmt.Errorf("device %s: %w", name, err))
		}
		if sameJSON(got, d) {
			m.Already++
		} else {
			m.Kept = append(m.Kept, name)
		}
	}
	// The check: read back every device.
	var missing []string
	for _, name := range slices.Sorted(maps.Keys(st.Devices)) {
		d := st.Devices[name]
		got, err := bs.get(ctx, name)
		if err != nil {
			missing = append(missing, name+": "+err.Error())
			continue
		}
		for id, v := range d.Vaults {
			gv := got.Vaults[id]
			for _, kv := range v.Keys {
				m.KeyVersions++
				if gv == nil || gv.key(kv.Version) == nil && kv.Version >= gv.Acked {
					missing = append(missing, fmt.Sprintf("%s: vault %s: key version %d", name, id, kv.Version))
				}
			}
			if len(v.Escrow) > 0 {
				m.Escrows++
				if gv == nil || len(gv.Escrow) == 0 {
					missing = append(missing, fmt.Sprintf("%s: vault %s: escrowed key", name, id))
				}
			}
		}
	}
	if len(missing) > 0 {
		return fail(fmt.Errorf("%w: not in the store: %v", ErrDiffers, missing))
	}
	return m, nil
}

func mustCertDER(p string) []byte {
	blk, _ := pem.Decode([]byte(p))
	if blk == nil {
		return nil
	}
	return blk.Bytes
}
