// Package journal makes the logger every edgeseal step writes with: one line per
// event on stderr, which systemd puts in the journal with its own timestamp, so
// lines carry no time of their own. Callers must never pass a secret as an
// attribute; the logger has no way to know.
package journal

import (
	"io"
	"log/slog"
)

// Logger is a slog.Logger writing journal-friendly lines.
type Logger struct{ *slog.Logger }

// New returns a logger writing "level=INFO msg=... key=value" lines to w.
func New(w io.Writer) *Logger {
	h := slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return &Logger{slog.New(h)}
}
