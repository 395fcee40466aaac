package tokend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/ledger"
	"github.com/edgeseal/edgeseal/internal/peer"
	"github.com/edgeseal/edgeseal/internal/snapd"
	"github.com/edgeseal/edgeseal/tokenclient"
)

// snapApp resolves every caller to a process of the snap app collector.daemon.
type snapApp struct{}

func (snapApp) Resolve(_ context.Context, p *peer.Peer) (peer.Identity, error) {
	return peer.Identity{PID: p.PID, UID: p.UID, GID: p.GID, Unit: "snap.collector.daemon.service", SnapApp: "collector.daemon"}, nil
}

// A service that pins its snap's revision and publisher: the provider asks
// snapd (here a stand-in answering as for a snap from a store, which the
// integration tests cannot install) once per request, about the caller's
// snap, and records what it said in the ledger for edgeseal-unseal to match
// again when the config changes.
func TestACallerOfAServiceThatPinsItsSnapIsAskedOfSnapdOnce(t *testing.T) {
	const publisher = "2rsYZu6kqYVFsSejExu4YENdXQEO40Xb"
	pinned := config.Service{Name: "collector", SnapApps: []string{"collector.daemon"}, SnapRevisions: []string{"42"}, SnapPublishers: []string{publisher}}
	store := func(rev, pub string) func(context.Context, string) (peer.SnapInfo, error) {
		return func(_ context.Context, snap string) (peer.SnapInfo, error) {
			return peer.SnapInfo{Name: snap, Revision: rev, Publisher: pub}, nil
		}
	}
	for _, tc := range []struct {
		name     string
		snapInfo func(ctx context.Context, snap string) (peer.SnapInfo, error)
		status   string
		errText  string
	}{
		{"the pinned revision from the pinned publisher", store("42", publisher), tokenclient.StatusOK, ""},
		{"the snap's provider, which cannot ask snapd", nil, tokenclient.StatusRefused, "snapd is not asked here"},
		{"another revision", store("43", publisher), tokenclient.StatusRefused, "snapd reports revision 43 of snap collector"},
		{"another publisher", store("42", "canonical"), tokenclient.StatusRefused, "published by canonical"},
		{"snapd unreachable: not the caller's doing", func(_ context.Context, snap string) (peer.SnapInfo, error) {
			return peer.SnapInfo{}, errors.New("cannot ask snapd about snap " + snap + ": connection refused")
		}, tokenclient.StatusError, "cannot ask snapd about snap collector: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked atomic.Int32
			ts, rec, ledgerPath := matchingServerWith(t, func(s *Server) {
				s.Resolver = snapApp{}
				if tc.snapInfo != nil {
					s.SnapInfo = func(ctx context.Context, snap string) (peer.SnapInfo, error) {
						asked.Add(1)
						if snap != "collector" {
							t.Errorf("asked snapd about snap %q, want collector", snap)
						}
						return tc.snapInfo(ctx, snap)
					}
				}
			}, pinned)
			r := ask(t, ts, `{"v":1}`+"\n")
			if r.Status != tc.status || !strings.Contains(r.Error, tc.errText) {
				t.Fatalf("answer %+v; want %s saying %q", r, tc.status, tc.errText)
			}
			want := int32(0)
			if tc.snapInfo != nil {
				want = 1
			}
			if asked.Load() != want {
				t.Errorf("snapd asked %d times, want %d", asked.Load(), want)
			}
			if tc.status != tokenclient.StatusOK {
				if len(rec.list()) != 0 {
					t.Errorf("the server was asked for a token: %+v", rec.list())
				}
				return
			}
			ts.stop()
			data, err := os.ReadFile(ledgerPath)
			if err != nil {
				t.Fatal(err)
			}
			f, err := ledger.Parse(data)
			if e := f.Services["collector"]; err != nil || e.SnapRevision != "42" || e.SnapPublisher != publisher {
				t.Fatalf("ledger %+v, %v; want the revision and publisher snapd gave", f, err)
			}
		})
	}
}

// otherSnapDaemon resolves every caller to a daemon of another snap,
// intruder, run as the account snap daemons share (snap_daemon, uid 584788).
type otherSnapDaemon struct{}

func (otherSnapDaemon) Resolve(_ context.Context, p *peer.Peer) (peer.Identity, error) {
	return peer.Identity{PID: p.PID, UID: 584788, GID: 584788, Unit: "snap.intruder.daemon.service", SnapApp: "intruder.daemon"}, nil
}

// Found by the review of this pin: a service matched by a uid rule (the
// account snap daemons share) gave its token to another snap's daemon of that
// account whose snap was at the pinned revision and of the pinned publisher:
// revisions are per snap, and a publisher has many. The pin is about the
// snaps the service names, and snapd is not even asked about another.
func TestAnotherSnapsDaemonOfTheServicesAccountIsRefusedWhateverItsSnapsRevision(t *testing.T) {
	const publisher = "2rsYZu6kqYVFsSejExu4YENdXQEO40Xb"
	svc := config.Service{Name: "collector", SnapApps: []string{"collector.daemon"}, UIDs: []uint32{584788},
		SnapRevisions: []string{"42"}, SnapPublishers: []string{publisher}}
	var asked atomic.Int32
	ts, rec, _ := matchingServerWith(t, func(s *Server) {
		s.Resolver = otherSnapDaemon{}
		s.SnapInfo = func(_ context.Context, snap string) (peer.SnapInfo, error) {
			asked.Add(1)
			return peer.SnapInfo{Name: snap, Revision: "42", Publisher: publisher}, nil
		}
	}, svc)
	r := ask(t, ts, `{"v":1,"service":"collector"}`+"\n")
	if r.Status != tokenclient.StatusRefused || !strings.Contains(r.Error, "its snap intruder is not one the service's snap_apps or units name") {
		t.Fatalf("another snap's daemon was answered %s %q, want refused, its snap named", r.Status, r.Error)
	}
	if n := len(rec.list()); n != 0 || asked.Load() != 0 {
		t.Errorf("%d tokens created, snapd asked %d times; want none", n, asked.Load())
	}
}

// Found by the same review: snapd knowing no snap of the caller's (removed
// since it started) is the caller's refusal, not the provider's error.
func TestACallerWhoseSnapSnapdDoesNotKnowIsRefused(t *testing.T) {
	svc := config.Service{Name: "collector", SnapApps: []string{"collector.daemon"}, SnapRevisions: []string{"42"}}
	ts, _, _ := matchingServerWith(t, func(s *Server) {
		s.Resolver = snapApp{}
		s.SnapInfo = func(_ context.Context, snap string) (peer.SnapInfo, error) {
			return peer.SnapInfo{}, fmt.Errorf("cannot ask snapd about snap %s: %w", snap, snapd.ErrNotInstalled)
		}
	}, svc)
	r := ask(t, ts, `{"v":1}`+"\n")
	if r.Status != tokenclient.StatusRefused || !strings.Contains(r.Error, "snap not installed") {
		t.Errorf("a caller whose snap snapd does not know is answered %s %q, want refused", r.Status, r.Error)
	}
}
