package vaultbin

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// CacheName is the file, in a boot step's state directory, that keeps what
// the server's binary said it is, with the binary's file identity
// (IdentifyCached).
//
// Why: `BIN version` starts a Go binary of over a hundred megabytes, which
// cost 200 to 550 ms of every boot on the test bed, in each of the two steps
// that ask (the boot benchmarks), more than all of edgeseal-unseal's work with
// the server. Why it is still the same check: the answer is kept only for the
// file it came from, named by its path, device, inode, size, modification and
// change times; a new build, an upgrade, a package or snap refresh, a copy or
// a rename over it changes one of them (the change time cannot be set by any
// call), so `BIN version` runs again. What was kept is checked against this
// edgeseal's supported releases every time (an edgeseal that drops a series
// refuses a binary an older one accepted), and edgeseal-unseal compares the
// running server's own report with it as before. Only the step's user and root
// write the directory that holds it.
const CacheName = "server-identity.json"

// identityCache is the file's format.
type identityCache struct {
	Version int         `json:"version"` // 1
	Binary  binaryStamp `json:"binary"`
	Info    Info        `json:"info"`
}

// binaryStamp is a file's identity as stat(2) gives it.
type binaryStamp struct {
	Path    string `json:"path"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
}

func stampOf(path string) (binaryStamp, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return binaryStamp{}, err
	}
	return binaryStamp{Path: path, Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}, nil
}

// IdentifyCached is Identify(bin), answered from the file cache (written
// 0600, atomically, in a directory it makes 0700 if missing) when bin is the
// file that answered before; cached tells which. A cache that cannot be read
// or written only costs a run of `BIN version`.
func IdentifyCached(ctx context.Context, cache, bin string) (info Info, cached bool, err error) {
	stamp, statErr := stampOf(bin)
	if statErr == nil {
		if data, err := fsutil.ReadRegular(cache, 64<<10); err == nil {
			var c identityCache
			if strictjson.Decode(data, 64<<10, &c) == nil && c.Version == 1 && c.Binary == stamp {
				if err := c.Info.Check(); err != nil {
					return c.Info, true, fmt.Errorf("secret store server %s: %w", bin, err)
				}
				return c.Info, true, nil
			}
		}
	}
	info, err = Identify(ctx, bin)
	if err != nil || statErr != nil {
		return info, false, err
	}
	// Only the stamp taken before the run: a file replaced meanwhile does not
	// match it, and is asked again next time.
	if after, err := stampOf(bin); err != nil || after != stamp {
		return info, false, nil
	}
	data, _ := json.Marshal(identityCache{Version: 1, Binary: stamp, Info: info})
	if err := os.MkdirAll(filepath.Dir(cache), 0o700); err == nil {
		// A cache that cannot be written costs the next boot a `BIN version`.
		_ = fsutil.WriteFileAtomic(cache, data, 0o600, fsutil.Self)
	}
	return info, false, nil
}
