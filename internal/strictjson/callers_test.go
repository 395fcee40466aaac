package strictjson_test

// The callers of the strict decoder, each with an input it accepts: with a
// ']' or a '}' appended (what encoding/json's Decoder.More let through), each
// refuses it with its own sentinel. refctl's enrolment and state, whose
// decoders are unexported, have the same table in refctl; `edgeseal attest
// verify` in cmd/edgeseal. This package itself imports nothing of edgeseal's:
// only this external test does.

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/internal/controller"
	"github.com/edgeseal/edgeseal/internal/ctlproto"
	"github.com/edgeseal/edgeseal/internal/fsvault"
	"github.com/edgeseal/edgeseal/internal/pkcs11proto"
	"github.com/edgeseal/edgeseal/internal/recovery"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/strictjson"
	"github.com/edgeseal/edgeseal/internal/tokend"
)

func TestEveryStrictCallerRefusesAClosingBracketAfterTheValue(t *testing.T) {
	read := func(path string) []byte {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	callers := []struct {
		name  string
		good  []byte
		parse func([]byte) error
		want  error
		says  string // "" where the caller words it its own way
	}{
		{"tokend.ParseRequest (the token socket)", []byte(`{"v":1}`), func(b []byte) error {
			_, err := tokend.ParseRequest(append(b, '\n'))
			return err
		}, tokend.ErrBadRequest, "data after the JSON value"},
		{"ctlproto.Unmarshal (controller messages)", []byte(`{"error":"no"}`), func(b []byte) error {
			return ctlproto.Unmarshal(b, &ctlproto.ErrorBody{})
		}, ctlproto.ErrMalformed, "data after the JSON value"},
		{"fsvault.ParseMeta (a vault's metadata)", read("../fsvault/testdata/meta-v1.json"), func(b []byte) error {
			_, err := fsvault.ParseMeta(b)
			return err
		}, fsvault.ErrCorruptMeta, "data after the JSON value"},
		{"controller.ParseEnrolment (the device's enrolment)", read("../controller/testdata/enrolment-v1.json"), func(b []byte) error {
			_, err := controller.ParseEnrolment(b)
			return err
		}, controller.ErrBadEnrolment, "data after the JSON value"},
		{"seal.ParseEnvelope (a sealed blob)", read("../seal/testdata/none-v1.sealed"), func(b []byte) error {
			_, err := seal.ParseEnvelope(b)
			return err
		}, seal.ErrCorrupt, ""},
		{"pkcs11proto.ParseRequest (a request to the PKCS#11 helper)", []byte(`{"v":1,"op":"generate","module":"/m.so","token_label":"t","key_label":"k","pin_file":"/pin"}`), func(b []byte) error {
			_, err := pkcs11proto.ParseRequest(b)
			return err
		}, pkcs11proto.ErrMalformed, "data after the JSON value"},
		{"pkcs11proto.ParseAnswer (the PKCS#11 helper's answer)", []byte(`{"v":1,"serial":"0a","data":"AAAA"}`), func(b []byte) error {
			_, err := pkcs11proto.ParseAnswer(b)
			return err
		}, pkcs11proto.ErrMalformed, "data after the JSON value"},
		{"recovery.RecipientOf (a recovery copy)", recoveryCopy(t), func(b []byte) error {
			_, err := recovery.RecipientOf(b)
			return err
		}, recovery.ErrCorrupt, "data after the JSON value"},
	}
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			if err := c.parse(bytes.Clone(c.good)); err != nil {
				t.Fatalf("the good input is refused: %v", err)
			}
			for _, tail := range []string{"]", "}", " }", "{}"} {
				err := c.parse(append(bytes.Clone(c.good), tail...))
				if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
					t.Errorf("with %q after the value: %v; want %v saying %q", tail, err, c.want, c.says)
				}
				if c.says != "" && !errors.Is(err, strictjson.ErrTrailingData) {
					t.Errorf("with %q after the value: %v; want it to wrap strictjson.ErrTrailingData", tail, err)
				}
			}
		})
	}
}

func recoveryCopy(t *testing.T) []byte {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	r, err := recovery.ParseRecipient(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := recovery.Seal(r, []byte("a vault key"))
	if err != nil {
		t.Fatal(err)
	}
	return blob
}
