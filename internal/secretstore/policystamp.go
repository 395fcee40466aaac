package secretstore

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/edgeseal/edgeseal/internal/fsutil"
)

// policyRecordName is the file, in edgeseal's state directory (root's), that
// keeps for each policy a boot found right on the server the digest of its
// text and the stamp of the server's storage file that held it
// (reconcilePolicies says why that is enough to skip reading it again).
const policyRecordName = "policies-checked.json"

// policyStampSettle is how old a storage file's change time must be before
// its stamp is kept: far above any filesystem's timestamp granularity, so a
// later write cannot leave the same stamp. A variable for the tests.
var policyStampSettle = time.Second

// policyRecord is the file's format.
type policyRecord struct {
	Version  int                    `json:"version"` // 1
	Storage  string                 `json:"storage"` // vault.storage_path the stamps are of
	Policies map[string]policyStamp `json:"policies"`
}

type policyStamp struct {
	Digest string    `json:"digest"` // of the text found on the server
	File   fileStamp `json:"file"`
}

// fileStamp is a file's identity and times as stat(2) gives them.
type fileStamp struct {
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
}

// storageStamps stats the files of the server's file storage that hold ACL
// policies: <storage_path>/sys/policy/_<name>, as the file backend of
// OpenBao and Vault lays out the key sys/policy/<name>.
type storageStamps struct {
	dir string
	now func() time.Time
}

func (b *Bootstrap) policyStamps() storageStamps {
	return storageStamps{dir: filepath.Join(b.Config.Vault.StoragePath, "sys", "policy"), now: time.Now}
}

func (s storageStamps) of(name string) (fileStamp, bool) {
	if s.dir == "" || name == "" || filepath.Base(name) != name {
		return fileStamp{}, false
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(s.dir, "_"+name), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fileStamp{}, false
	}
	return fileStamp{Ino: st.Ino, Size: st.Size, MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}, true
}

// settled tells whether st's change time is policyStampSettle old.
func (s storageStamps) settled(st fileStamp) bool {
	return s.now().Sub(time.Unix(0, st.CtimeNs)) >= policyStampSettle
}

func (b *Bootstrap) policyRecordPath() string {
	return filepath.Join(b.Paths.StateDir, policyRecordName)
}

// readPolicyRecord returns the kept stamps if they are of storage; none if
// the file is missing, unreadable or of another storage path.
func readPolicyRecord(path, storage string) map[string]policyStamp {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var r policyRecord
	if json.Unmarshal(data, &r) != nil || r.Version != 1 || r.Storage != storage {
		return nil
	}
	return r.Policies
}

// writePolicyRecord keeps policies' stamps for the next boot. A record that
// cannot be written costs the next boot its reads, nothing else: said, not
// fatal.
func (b *Bootstrap) writePolicyRecord(policies map[string]policyStamp) {
	if b.Paths.StateDir == "" {
		return
	}
	data, _ := json.Marshal(policyRecord{Version: 1, Storage: b.Config.Vault.StoragePath, Policies: policies})
	if old, err := os.ReadFile(b.policyRecordPath()); err == nil && bytes.Equal(old, data) {
		return // the same record: no write, no fsync at every boot
	}
	if err := fsutil.WriteFileAtomic(b.policyRecordPath(), data, 0o600, fsutil.Self); err != nil {
		b.Log.Warn("cannot keep the stamps of the policies checked; the next boot reads them all again", "error", err)
	}
}
