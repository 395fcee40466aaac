// Package refctl is edgeseal's reference controller: the other end of
// package ctlproto, small enough to read in one sitting. It enrols devices
// (trust on first use of the attestation key, authenticated by a one-time
// token), challenges them, verifies their quotes, and releases file vault
// keys sealed to each device's own TPM; it rotates those keys and keeps the
// vault keys a device escrows (sealed to that device's TPM: it cannot read
// them).
//
// It is a reference, not a fleet service: one directory of state, one lock,
// keys in a file. A real controller keeps its keys in an HSM or a KMS, checks
// the endorsement certificate of a device's TPM at enrolment, and scales; the
// protocol it speaks is the same (docs/controller.md).
//
// # State
//
// Everything lives in one directory (0700): the CA that certifies devices'
// TLS client keys and the controller's own server certificate (ca.crt,
// ca.key, server.crt, server.key), the key that signs key bundles
// (signing.key), and state.json, the devices and their vaults. Every request
// and every command takes an exclusive lock on .lock, reads state.json, acts,
// and writes it back atomically before answering, so an operator's command
// can run while the controller serves.
//
// # Verdicts
//
// A key request always gets a signed bundle, so a device can show an
// operator why a vault stays locked: attestation refused (naming the PCRs or
// claims that differ), a quote needed, the device reported stolen.
package refctl

import (
	"errors"
	"path/filepath"
	"regexp"
	"time"
)

// DefaultDir is where the controller keeps its state unless told otherwise.
const DefaultDir = "/var/lib/edgeseal-controller"

// DefaultPCRs are the PCRs a device is asked to quote unless its operator
// chose others: firmware (0), option ROMs (2), boot loader (4), Secure Boot
// policy (7).
var DefaultPCRs = []int{0, 2, 4, 7}

// Lifetimes of what the controller hands out.
const (
	tokenLifetime     = 24 * time.Hour
	nonceLifetime     = 5 * time.Minute
	clientCertLife    = 365 * 24 * time.Hour
	serverCertLife    = 5 * 365 * 24 * time.Hour
	caCertLife        = 10 * 365 * 24 * time.Hour
	maxChallenges     = 64   // challenge nonces remembered per device
	maxDeviceVaults   = 1024 // vaults one device may have at the controller
	maxStateSize      = 64 << 20
	tokenBytes        = 32
	controllerKeySize = 32 // ctlproto.KeySize
)

// Errors a caller acts on.
var (
	// ErrNotInitialised: the directory holds no controller (run init).
	ErrNotInitialised = errors.New("the controller directory is not initialised (run edgeseal-controller init)")
	// ErrInitialised: init on a directory that already holds a controller.
	ErrInitialised = errors.New("the controller directory is already initialised")
	// ErrUnknownDevice: no device of that name.
	ErrUnknownDevice = errors.New("no such device (see edgeseal-controller device list)")
	// ErrUnknownVault: the device has no vault of that name or UUID.
	ErrUnknownVault = errors.New("the device has no such vault (see edgeseal-controller device show)")
	// ErrExists: a device of that name exists already.
	ErrExists = errors.New("a device of that name exists")
	// ErrInvalid: bad input from the operator (a name, a PCR, a claim).
	ErrInvalid = errors.New("invalid input")
	// ErrBadState: state.json does not parse (edited by hand, or damaged).
	ErrBadState = errors.New("malformed controller state")
)

// idRE is ctlproto's device id rule: a device's name is its id.
var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// paths are the files of a controller directory.
type paths struct {
	dir, lock, state      string
	caCert, caKey         string
	serverCert, serverKey string
	signingKey            string
}

func newPaths(dir string) paths {
	j := func(name string) string { return filepath.Join(dir, name) }
	return paths{
		dir: dir, lock: j(".lock"), state: j("state.json"),
		caCert: j("ca.crt"), caKey: j("ca.key"),
		serverCert: j("server.crt"), serverKey: j("server.key"),
		signingKey: j("signing.key"),
	}
}

// CACertPath is the CA certificate a device trusts the controller with.
func CACertPath(dir string) string { return newPaths(dir).caCert }
