package snapd

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/naming"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// snapd's answers to GET /v2/snaps/<name>: local-snap.json is a real one
// (snapd 2.57.6, Debian 12, in the integration tests' container, of a snap installed from a
// file with snap install --dangerous: a revision x<n>, no publisher);
// store-snap.json has the shape snapd gives a snap from a store (its
// envelope, daemon/response.go, around client.Snap, whose publisher is the
// store account: id, username, display-name, validation), which no test here
// can install.
func TestSnapdsAnswerGivesTheRevisionAndThePublisher(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		want    Snap
	}{
		{"store-snap.json", Snap{Name: "hello", Revision: "42", Publisher: "canonical"}},
		{"local-snap.json", Snap{Name: "es-consumer", Revision: "x1"}},
	} {
		got, err := Parse(http.StatusOK, readFixture(t, tc.fixture))
		if err != nil || got != tc.want {
			t.Errorf("%s: Parse = %+v, %v; want %+v", tc.fixture, got, err, tc.want)
		}
	}
}

func TestAnAnswerThatIsNotASnapIsRefused(t *testing.T) {
	store := string(readFixture(t, "store-snap.json"))
	for _, tc := range []struct {
		name    string
		status  int
		body    string
		errText string
	}{
		{"not installed", 404, string(readFixture(t, "not-installed.json")), "snap not installed"},
		{"another error", 403, `{"type":"error","status-code":403,"status":"Forbidden","result":{"message":"access denied","kind":"login-required"}}`, "snapd refused (HTTP 403, login-required): access denied"},
		{"an async answer", 202, `{"type":"async","status-code":202,"change":"7"}`, "want 200, sync, 200"},
		{"a sync type with another status-code", 200, `{"type":"sync","status-code":201,"result":{}}`, "status-code 201"},
		{"HTTP 500 with a sync body", 500, store, "HTTP 500"},
		{"not JSON", 200, "<html>", "not snapd's JSON"},
		{"data after the answer", 200, store + "}", "not snapd's JSON"},
		{"a result that is no object", 200, `{"type":"sync","status-code":200,"result":[]}`, "result is not a snap"},
		{"no revision", 200, `{"type":"sync","status-code":200,"result":{"name":"hello"}}`, "revision"},
		{"a revision snapd does not write", 200, `{"type":"sync","status-code":200,"result":{"name":"hello","revision":"unset"}}`, `revision "unset"`},
		{"a revision as a number", 200, `{"type":"sync","status-code":200,"result":{"name":"hello","revision":42}}`, "result is not a snap"},
		{"no name", 200, `{"type":"sync","status-code":200,"result":{"revision":"1"}}`, "names no snap"},
		{"a publisher id that is none", 200, strings.Replace(store, `"id":"canonical"`, `"id":"a b"`, 1), "publisher id"},
		{"too large", 200, store + strings.Repeat(" ", maxAnswer), "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.status, []byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("Parse = %+v, %v; want an error saying %q", got, err, tc.errText)
			}
			if (tc.name == "not installed") != errors.Is(err, ErrNotInstalled) {
				t.Errorf("errors.Is(%v, ErrNotInstalled) = %v", err, !(tc.name == "not installed"))
			}
		})
	}
}

// serve answers GET /v2/snaps/NAME on a Unix socket in a test directory with
// answer, and returns the socket's path.
func serve(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "snapd.socket")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(answer)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestInfoAsksSnapdForTheSnapByName(t *testing.T) {
	body := readFixture(t, "store-snap.json")
	var asked string
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
		asked = r.Method + " " + r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	got, err := Info(context.Background(), sock, "hello")
	if err != nil || got != (Snap{Name: "hello", Revision: "42", Publisher: "canonical"}) {
		t.Fatalf("Info = %+v, %v", got, err)
	}
	if asked != "GET /v2/snaps/hello" {
		t.Errorf("asked %q", asked)
	}
	// An answer about another snap than the one asked for is no answer.
	if got, err := Info(context.Background(), sock, "hello_two"); err == nil || !strings.Contains(err.Error(), `cannot ask snapd about snap hello_two: it answered about snap "hello"`) {
		t.Errorf("Info of hello_two = %+v, %v", got, err)
	}
}

func TestInfoGivesUpWhenItsContextEnds(t *testing.T) {
	release := make(chan struct{})
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Info(ctx, sock, "hello")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "cannot ask snapd about snap hello") {
		t.Fatalf("Info = %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Info took %v after a 100ms deadline", d)
	}
}

func TestInfoWithoutSnapdSaysSo(t *testing.T) {
	_, err := Info(context.Background(), filepath.Join(t.TempDir(), "snapd.socket"), "hello")
	if err == nil || !strings.Contains(err.Error(), "cannot ask snapd about snap hello") {
		t.Fatalf("Info = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"store-snap.json", "local-snap.json", "not-installed.json"} {
		b := readFixture(f, name)
		f.Add(200, b)
		f.Add(404, b)
		f.Add(200, b[:len(b)/2])
	}
	f.Add(200, []byte(`{"type":"sync","status-code":200,"result":{"name":"a1","revision":"x1","publisher":null}}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		s, err := Parse(status, body)
		if err != nil {
			return
		}
		// What parses is a snap as snapd names it, at a revision snapd
		// writes, with no publisher or one that is an account id.
		if validSnap(s) != nil {
			t.Fatalf("Parse(%d, %q) = %+v: %v", status, body, s, validSnap(s))
		}
	})
}

// validSnap checks what Parse returned by the rules it promises.
func validSnap(s Snap) error {
	if err := naming.ValidSnapInstance(s.Name); err != nil {
		return err
	}
	if err := naming.ValidSnapRevision(s.Revision); err != nil {
		return err
	}
	if s.Publisher != "" {
		return naming.ValidAccountID(s.Publisher)
	}
	return nil
}
