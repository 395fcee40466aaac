package seal

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeseal/edgeseal/internal/config"
)

// Tests that write hook scripts do not run in parallel: a script still open for
// writing in a concurrently forked child makes exec fail with ETXTBSY.

// writeHook writes an executable /bin/sh script with body into a fresh directory
// and returns its path.
func writeHook(t *testing.T, body string) string {
	t.Helper()
	return writeScript(t, body, 0o755)
}

func writeScript(t *testing.T, body string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ikm-hook")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// printHook returns a hook printing ikm, which is single-quoted for the shell
// (it must not contain a quote), followed by a newline.
func printHook(t *testing.T, ikm string) string {
	t.Helper()
	return writeHook(t, "printf '%s\\n' '"+ikm+"'")
}

func hookSealer(argv ...string) Sealer {
	return NewIKMHook(config.IKMHook{Command: argv, Timeout: config.Duration(5 * time.Second)})
}

// fixedIKM returns a key material source handing out a fresh copy of ikm on each
// call (the sealer wipes what it gets) and remembering those copies.
type fixedIKM struct {
	ikm    []byte
	calls  int
	copies [][]byte
}

func (f *fixedIKM) get(ctx context.Context) ([]byte, error) {
	f.calls++
	c := bytes.Clone(f.ikm)
	f.copies = append(f.copies, c)
	return c, nil
}

// memSealer is the ikm-hook sealer with in-process key material and crypto/rand.
func memSealer(ikm string) (*ikmHook, *fixedIKM) {
	h := NewIKMHook(config.IKMHook{}).(*ikmHook)
	src := &fixedIKM{ikm: []byte(ikm)}
	h.ikm = src.get
	return h, src
}

// isAny reports whether err wraps one of targets.
func isAny(err error, targets ...error) bool {
	for _, target := range targets {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
