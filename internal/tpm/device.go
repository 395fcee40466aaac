// Package tpm reaches the device's TPM 2.0 through github.com/canonical/go-tpm2:
// /dev/tpmrm0 (the kernel's resource manager) on a device, or a software TPM
// (swtpm) over TCP for tests and development. It also provisions the storage root
// key every edgeseal object lives under. Sealing and attestation build on it.
package tpm

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/canonical/go-tpm2"
	"github.com/canonical/go-tpm2/linux"
	"github.com/canonical/go-tpm2/transportutil"
)

// DefaultDevice is the TPM a device uses unless the config names another.
const DefaultDevice = "/dev/tpmrm0"

// maxCommandSize bounds one command sent to a TCP TPM (swtpm's limit is 4096).
const maxCommandSize = 4096

// ErrAbsent: there is no TPM where the config says (no device node, or nothing
// listening at the swtpm address).
var ErrAbsent = errors.New("no TPM found")

// Open opens the TPM named by spec: a device path such as /dev/tpmrm0 (the
// default, for ""), or "swtpm:HOST:PORT" for a software TPM's command port.
func Open(spec string) (*tpm2.TPMContext, error) {
	dev, err := Device(spec)
	if err != nil {
		return nil, err
	}
	t, err := tpm2.OpenTPMDevice(dev)
	if err != nil {
		return nil, fmt.Errorf("cannot open TPM %s: %w", dev, classifyOpen(err))
	}
	return t, nil
}

// Device returns the go-tpm2 device for spec, without opening it.
func Device(spec string) (tpm2.TPMDevice, error) {
	if spec == "" {
		spec = DefaultDevice
	}
	if addr, ok, err := SwtpmAddress(spec); err != nil {
		return nil, fmt.Errorf("cannot use TPM (seal.tpm2.device): %w", err)
	} else if ok {
		return tcpDevice{addr: addr}, nil
	}
	if !strings.HasPrefix(spec, "/dev/") {
		return nil, fmt.Errorf("cannot use TPM %q: want a device path such as %s, or swtpm:HOST:PORT", spec, DefaultDevice)
	}
	if _, err := os.Stat(spec); err != nil {
		return nil, fmt.Errorf("cannot use TPM %s: %w (%v)", spec, ErrAbsent, err)
	}
	return linuxDevice{path: spec}, nil
}

func classifyOpen(err error) error {
	var ne *net.OpError
	if errors.As(err, &ne) || errors.Is(err, os.ErrNotExist) || errors.Is(err, linux.ErrNoTPMDevices) {
		return fmt.Errorf("%w: %v", ErrAbsent, err)
	}
	if errors.Is(err, fs.ErrPermission) {
		// Root is refused a device node only by confinement: AppArmor (no
		// rule, e.g. a snap's tpm plug not connected) or a missing
		// CAP_DAC_OVERRIDE where the node is not root's (tpm-udev's tss).
		return fmt.Errorf("%w (a confined process needs a rule for the device and, without CAP_DAC_OVERRIDE, a node root may open: owner or group root)", err)
	}
	return err
}

// linuxDevice opens a TPM character device (/dev/tpmrm0 or /dev/tpm0).
type linuxDevice struct{ path string }

func (d linuxDevice) Open() (tpm2.Transport, error) {
	if strings.HasPrefix(d.path, "/dev/tpmrm") {
		// The kernel's resource manager, which exists for TPM 2.0 devices
		// only: no need to read sysfs (which a snap may not) to tell.
		//lint:ignore SA1019 the one opener that reads no sysfs
		return linux.OpenDevice(d.path)
	}
	devs, err := linux.ListTPMDevices()
	if errors.Is(err, fs.ErrPermission) {
		// Strict confinement: snapd's tpm interface grants the device nodes
		// but not the sysfs attributes go-tpm2 reads to list them. The node
		// is opened as it is; a /dev/tpmrm0 exists only for a TPM 2.0.
		//lint:ignore SA1019 the one opener that reads no sysfs
		t, err := linux.OpenDevice(d.path)
		if err != nil {
			return nil, err
		}
		return t, nil
	}
	if err != nil {
		return nil, err
	}
	for _, dev := range devs {
		if dev.Path() == d.path {
			return dev.Open()
		}
		if rm, err := dev.ResourceManagedDevice(); err == nil && rm.Path() == d.path {
			return rm.Open()
		}
	}
	return nil, fmt.Errorf("%w: %s is not a TPM 2.0 device known to the kernel", ErrAbsent, d.path)
}

func (d linuxDevice) String() string { return d.path }

// tcpDevice talks to swtpm's command port with raw TPM commands. go-tpm2's mssim
// transport does not work with swtpm 0.7 (it expects the simulator's framing),
// so this sends each command whole (BufferCommands) and retries TPM_RC_RETRY.
type tcpDevice struct{ addr string }

func (d tcpDevice) Open() (tpm2.Transport, error) {
	conn, err := net.DialTimeout("tcp", d.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	raw := &tcpTransport{conn: conn, w: transportutil.BufferCommands(conn, maxCommandSize)}
	return transportutil.NewRetrierTransport(raw, transportutil.RetryParams{
		MaxRetries:     4,
		InitialBackoff: 20 * time.Millisecond,
		BackoffRate:    2,
	}), nil
}

func (d tcpDevice) String() string { return "swtpm:" + d.addr }

type tcpTransport struct {
	conn net.Conn
	w    io.Writer
}

func (t *tcpTransport) Read(p []byte) (int, error)  { return t.conn.Read(p) }
func (t *tcpTransport) Write(p []byte) (int, error) { return t.w.Write(p) }
func (t *tcpTransport) Close() error                { return t.conn.Close() }
