// Package snapd asks snapd, over its REST API on /run/snapd.socket, what it
// knows of an installed snap: its current revision and its publisher. The
// token provider of the units install asks it for a service that pins its
// snap's revision or publisher (snap_revisions, snap_publishers): snapd is
// the one authority on which revision of a snap is current and who published
// it (from the store's assertions), and only root may change either.
//
// snapd's answer is untrusted input of a sort: bounded (maxAnswer), its
// envelope checked (an HTTP 200, type "sync", status-code 200), and only the
// few fields used decoded. The answer has dozens of fields that grow with
// snapd's releases, so a strict decoder (internal/strictjson, which refuses a
// field it does not name) would break on the next snapd; encoding/json's
// Unmarshal, which ignores them but still refuses anything after the value,
// is the right one here. The fields used are checked by snapd's own rules
// (internal/naming).
package snapd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/edgeseal/edgeseal/internal/naming"
)

// Socket is snapd's API socket: any local user may ask it about installed
// snaps.
const Socket = "/run/snapd.socket"

// maxAnswer bounds snapd's answer about one snap: its apps, media, channels
// and description make it a few KiB, tens for a snap of many apps.
const maxAnswer = 1 << 20

// ErrNotInstalled: snapd knows no snap of that name.
var ErrNotInstalled = errors.New("snap not installed")

// Snap is what snapd says of an installed snap.
type Snap struct {
	Name      string // its instance name, the one asked for
	Revision  string // its current revision as snapd writes it: "42", "x1"
	Publisher string // its publisher's account id; "" for none (a local install)
}

// Info asks snapd, over its socket (Socket), about the installed snap name
// (an instance name: "<snap>" or "<snap>_<key>"). It gives up when ctx ends.
func Info(ctx context.Context, socket, name string) (Snap, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 16 << 10,
	},
		// snapd answers this request itself: a redirect is not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost/v2/snaps/"+url.PathEscape(name), nil)
	if err != nil {
		return Snap{}, fmt.Errorf("cannot ask snapd about snap %s: %w", name, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return Snap{}, fmt.Errorf("cannot ask snapd about snap %s: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return Snap{}, fmt.Errorf("cannot read snapd's answer about snap %s: %w", name, err)
	}
	s, err := Parse(resp.StatusCode, body)
	if err != nil {
		return Snap{}, fmt.Errorf("cannot ask snapd about snap %s: %w", name, err)
	}
	if s.Name != name {
		return Snap{}, fmt.Errorf("cannot ask snapd about snap %s: it answered about snap %q", name, s.Name)
	}
	return s, nil
}

// answer is snapd's envelope (daemon/response.go): "sync" for an answer,
// "error" for a refusal, whose result then holds a message and a kind.
type answer struct {
	Type       string          `json:"type"`
	StatusCode int             `json:"status-code"`
	Result     json.RawMessage `json:"result"`
}

// snap is the part of client.Snap used: "name" is the instance name,
// "revision" snap.Revision's String, "publisher" the store account, absent
// for a snap without one.
type snap struct {
	Name      string `json:"name"`
	Revision  string `json:"revision"`
	Publisher *struct {
		ID string `json:"id"`
	} `json:"publisher"`
}

type apiError struct {
	Message string `json:"message"`
	Kind    string `json:"kind"`
}

// Parse reads snapd's answer to GET /v2/snaps/<name>: status is the HTTP
// status, body the answer, at most maxAnswer bytes. Its errors quote at most
// snapd's own message, bounded.
func Parse(status int, body []byte) (Snap, error) {
	if len(body) > maxAnswer {
		return Snap{}, fmt.Errorf("its answer is more than %d bytes", maxAnswer)
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return Snap{}, fmt.Errorf("its answer (HTTP %d) is not snapd's JSON: %w", status, err)
	}
	if a.Type == "error" {
		var e apiError
		json.Unmarshal(a.Result, &e) // the message is a courtesy: without one the status says enough
		if e.Kind == "snap-not-found" || status == http.StatusNotFound {
			return Snap{}, ErrNotInstalled
		}
		return Snap{}, fmt.Errorf("snapd refused (HTTP %d, %s): %s", status, bounded(e.Kind), bounded(e.Message))
	}
	if status != http.StatusOK || a.Type != "sync" || a.StatusCode != http.StatusOK {
		return Snap{}, fmt.Errorf("snapd answered HTTP %d, type %s, status-code %d; want 200, sync, 200", status, bounded(a.Type), a.StatusCode)
	}
	var s snap
	if err := json.Unmarshal(a.Result, &s); err != nil {
		return Snap{}, fmt.Errorf("its answer's result is not a snap: %w", err)
	}
	if err := naming.ValidSnapInstance(s.Name); err != nil {
		return Snap{}, fmt.Errorf("its answer names no snap: %w", err)
	}
	if err := naming.ValidSnapRevision(s.Revision); err != nil {
		return Snap{}, fmt.Errorf("its answer's revision %q is not one: %w", bounded(s.Revision), err)
	}
	out := Snap{Name: s.Name, Revision: s.Revision}
	if s.Publisher != nil && s.Publisher.ID != "" {
		if err := naming.ValidAccountID(s.Publisher.ID); err != nil {
			return Snap{}, fmt.Errorf("its answer's publisher id %q is not one: %w", bounded(s.Publisher.ID), err)
		}
		out.Publisher = s.Publisher.ID
	}
	return out, nil
}

// bounded cuts what snapd said to a length fit for an error and the journal.
func bounded(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
