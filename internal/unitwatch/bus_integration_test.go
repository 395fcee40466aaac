//go:build integration

package unitwatch

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// These tests run the watch's own bus code (bus.go) against a real
// dbus-daemon of the test's own, with a stand-in for systemd on it that owns
// org.freedesktop.systemd1 and answers the three calls a watch makes.

// privateBus starts a dbus-daemon of the test's own and returns its address;
// the daemon is ended, by pid, at cleanup.
func privateBus(t *testing.T) string {
	t.Helper()
	// Not testbed.Require: the test bed imports secretstore, which imports
	// this package.
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Fatal("dbus-daemon not found: apt-get install dbus-daemon (or run make deps)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bus.conf")
	// A bus where any connection may own any name and send anything: what
	// is tested is the watch, not the bus's policy.
	err := os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=`+filepath.Join(dir, "bus")+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow eavesdrop="false"/>
  </policy>
</busconfig>
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--nosyslog", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start dbus-daemon: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon printed no address: %v", err)
	}
	return strings.TrimSpace(addr)
}

func connect(t *testing.T, addr string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("cannot connect to the test's bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// standIn is systemd as the watch sees it: its manager and one unit,
// flaky.service, in state.
type standIn struct {
	conn       *dbus.Conn
	state      string
	subscribed chan struct{} // receives at each Subscribe
	listed     chan struct{} // receives at each ListUnitsFiltered, before its answer
	// hold, if not nil, keeps each ListUnitsFiltered from answering until
	// it is closed: the call is in flight.
	hold chan struct{}
}

type standInManager struct{ s *standIn }

func (m standInManager) Subscribe() *dbus.Error {
	select {
	case m.s.subscribed <- struct{}{}:
	default:
	}
	return nil
}

func (m standInManager) ListUnitsFiltered(states []string) ([]listedUnit, *dbus.Error) {
	select {
	case m.s.listed <- struct{}{}:
	default:
	}
	if m.s.hold != nil {
		<-m.s.hold
	}
	for _, st := range states {
		if st == m.s.state {
			return []listedUnit{{Name: "flaky.service", ActiveState: m.s.state, SubState: m.s.state, Path: flakyPath, JobPath: "/"}}, nil
		}
	}
	return []listedUnit{}, nil
}

type standInUnit struct{ s *standIn }

func (u standInUnit) GetAll(string) (map[string]dbus.Variant, *dbus.Error) {
	return map[string]dbus.Variant{
		"Id":          dbus.MakeVariant("flaky.service"),
		"ActiveState": dbus.MakeVariant(u.s.state),
		"SubState":    dbus.MakeVariant(u.s.state),
	}, nil
}

// startSystemd connects a stand-in for systemd to the bus at addr, under a
// unique name of its own, owning systemd's well-known name.
func startSystemd(t *testing.T, addr string) *standIn {
	t.Helper()
	s := &standIn{conn: connect(t, addr), state: "active", subscribed: make(chan struct{}, 1), listed: make(chan struct{}, 1)}
	if err := s.conn.Export(standInManager{s}, managerPath, systemdName+".Manager"); err != nil {
		t.Fatal(err)
	}
	if err := s.conn.Export(standInUnit{s}, flakyPath, "org.freedesktop.DBus.Properties"); err != nil {
		t.Fatal(err)
	}
	// systemd has match rules of its own (for the bus's NameOwnerChanged,
	// among others). dbus-daemon drops, when a connection that has any leaves,
	// every rule naming that connection as sender: the rule a watch added.
	if err := s.conn.AddMatchSignal(dbus.WithMatchSender(busName), dbus.WithMatchMember("NameOwnerChanged")); err != nil {
		t.Fatal(err)
	}
	if r, err := s.conn.RequestName(systemdName, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("the stand-in cannot own %s: %v (reply %d)", systemdName, err, r)
	}
	return s
}

// fail puts flaky.service in the failed state and sends the signal systemd
// sends then.
func (s *standIn) fail(t *testing.T) {
	t.Helper()
	s.state = "failed"
	err := s.conn.Emit(flakyPath, propertiesChanged, unitInterface,
		map[string]dbus.Variant{"ActiveState": dbus.MakeVariant("failed"), "SubState": dbus.MakeVariant("failed")}, []string{})
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing within 10s", what)
	}
	panic("unreachable")
}

// systemd re-executed leaves the bus, and the bus forgets every match rule
// that names its old unique name as sender; it comes back under a new one.
// The watch follows it there without ending, whether systemd left while the
// watch was waiting for signals or while it was asking systemd something:
// ending would leave a failure in the next second unseen until the caller
// watches again (a second later).
func TestAWatchFollowsSystemdBackOnTheBusWithoutEnding(t *testing.T) {
	for _, leaves := range []string{"after the watch listed the failed units", "as the watch asks it for the failed units"} {
		t.Run(strings.ReplaceAll(leaves, " ", "_"), func(t *testing.T) {
			testWatchFollowsSystemd(t, leaves == "as the watch asks it for the failed units")
		})
	}
}

func testWatchFollowsSystemd(t *testing.T, midCall bool) {
	addr := privateBus(t)
	first := startSystemd(t, addr)
	if midCall {
		first.hold = make(chan struct{})
	}

	t.Log("Given a watch on a bus where systemd is connected")
	conn := connect(t, addr)
	sigs := make(chan *dbus.Signal, signalBuffer)
	conn.Signal(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- watch(ctx, &bus{conn: conn}, sigs, false, func(u string, _ time.Time) { ended <- u })
	}()
	waitFor(t, first.listed, "the watch's listing of the failed units")
	if !midCall {
		// The answer is on its way: give the watch the time to take it and
		// go back to waiting for signals.
		time.Sleep(200 * time.Millisecond)
	}

	t.Log("When systemd re-executes: its connection closes and it connects again under a new unique name")
	oldName := first.conn.Names()[0]
	first.conn.Close()
	if midCall {
		close(first.hold) // the listing it was asked for never gets out
	}
	second := startSystemd(t, addr)
	t.Logf("(%s before, %s after)", oldName, second.conn.Names()[0])
	select {
	case <-second.listed:
	case err := <-done:
		t.Fatalf("the watch ended when systemd came back on the bus: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not list the failed units of systemd's new connection within 10s")
	}

	t.Log("And then flaky.service fails")
	second.fail(t)
	select {
	case u := <-ended:
		if u != "flaky.service" {
			t.Fatalf("reported %q, want flaky.service", u)
		}
	case err := <-done:
		t.Fatalf("the watch ended instead of reporting the failure: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the failure was not reported within 10s")
	}
	t.Log("Then the watch, still running, reports it")
	select {
	case err := <-done:
		t.Fatalf("the watch ended: %v", err)
	default:
	}
}
