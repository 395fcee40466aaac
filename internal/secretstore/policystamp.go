package secretstore

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// policyRecordName is the file, in edgeseal's state directory (root's), that
// keeps for each policy a boot found right on the server the digest of its
// text and the stamp of the server's storage file that held it
// (reconcilePolicies says why that is enough to skip reading it again),
// authenticated under a key only the unseal key gives (policyRecordKey).
const policyRecordName = "policies-checked.json"

// policyRecordVersion is the record's format. Version 1 (stamps without the
// file's hash, no MAC) is not trusted: a boot reads every policy once.
const policyRecordVersion = 2

// maxPolicyRecord bounds the record read back: about 200 bytes a policy, for
// far more services than a config may name.
const maxPolicyRecord = 64 << 20

// policyRecordPurpose is the HKDF info of the record's MAC key, so that the
// key is good for nothing else made from the unseal key.
const policyRecordPurpose = "edgeseal policies-checked v2"

// maxPolicyFile bounds what is read of a storage file to hash it: a policy's
// entry is a few kilobytes; a larger file gets no stamp, and is read through
// the server.
const maxPolicyFile = 1 << 20

// policyRecord is the file's format.
type policyRecord struct {
	Version  int                    `json:"version"` // policyRecordVersion
	Storage  string                 `json:"storage"` // vault.storage_path the stamps are of
	Policies map[string]policyStamp `json:"policies"`
	// MAC is HMAC-SHA256, under policyRecordKey, of the record's JSON with
	// MAC empty: a record edgeseal-unseal did not write is not trusted.
	MAC string `json:"mac,omitempty"`
}

type policyStamp struct {
	Digest string    `json:"digest"` // of the text found on the server
	File   fileStamp `json:"file"`
}

// fileStamp is a file's identity and times as stat(2) gives them, and the
// SHA-256 of its bytes: a file put back as it once was (an older ciphertext
// of the server's) has other bytes than the one found right, whatever times
// it was given.
type fileStamp struct {
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
	SHA256  string `json:"sha256"`
}

// storageStamps stamps the files of the server's file storage that hold ACL
// policies: <storage_path>/sys/policy/_<name>, as the file backend of
// OpenBao and Vault lays out the key sys/policy/<name>.
type storageStamps struct {
	dir string
}

func (b *Bootstrap) policyStamps() storageStamps {
	return storageStamps{dir: filepath.Join(b.Config.Vault.StoragePath, "sys", "policy")}
}

// of stamps name's storage file: stat and bytes of the one file opened (no
// symlink followed). false when there is no regular file of at most
// maxPolicyFile bytes to stamp.
func (s storageStamps) of(name string) (fileStamp, bool) {
	if s.dir == "" || name == "" || filepath.Base(name) != name {
		return fileStamp{}, false
	}
	f, err := os.OpenFile(filepath.Join(s.dir, "_"+name), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return fileStamp{}, false
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Size > maxPolicyFile {
		return fileStamp{}, false
	}
	h := sha256.New()
	if n, err := io.Copy(h, io.LimitReader(f, maxPolicyFile+1)); err != nil || n != st.Size {
		return fileStamp{}, false // changed while read
	}
	return fileStamp{Ino: st.Ino, Size: st.Size, MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano(),
		SHA256: hex.EncodeToString(h.Sum(nil))}, true
}

func (b *Bootstrap) policyRecordPath() string {
	return filepath.Join(b.Paths.StateDir, policyRecordName)
}

// policyRecordKey is the record's MAC key, derived from the unseal key; nil
// without one (no record is then read or written).
func (b *Bootstrap) policyRecordKey() []byte {
	if len(b.unsealKey) == 0 {
		return nil
	}
	key, err := hkdf.Key(sha256.New, b.unsealKey, nil, policyRecordPurpose, sha256.Size)
	if err != nil {
		return nil
	}
	return key
}

// mac is r's MAC under key (r.MAC is ignored).
func (r policyRecord) mac(key []byte) string {
	r.MAC = ""
	data, _ := json.Marshal(r) // map keys sorted: the same bytes for the same record
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil))
}

// readPolicyRecord returns the kept stamps if they are of storage and
// authenticated under key; none if the file is missing, unreadable, of
// another format or storage path, or its MAC does not match (said: a record
// edgeseal did not write costs reads, and is worth a line).
func (b *Bootstrap) readPolicyRecord(key []byte) map[string]policyStamp {
	if key == nil || b.Paths.StateDir == "" {
		return nil
	}
	data, err := fsutil.ReadRegular(b.policyRecordPath(), maxPolicyRecord)
	if err != nil {
		return nil
	}
	var r policyRecord
	if strictjson.Decode(data, maxPolicyRecord, &r) != nil || r.Version != policyRecordVersion || r.Storage != b.Config.Vault.StoragePath {
		return nil
	}
	if !hmac.Equal([]byte(r.MAC), []byte(r.mac(key))) {
		b.Log.Warn("the record of the policies checked is not one edgeseal-unseal wrote (its MAC does not match): every policy is read from the server", "file", b.policyRecordPath())
		return nil
	}
	return r.Policies
}

// writePolicyRecord keeps policies' stamps for the next boot. A record that
// cannot be written costs the next boot its reads, nothing else: said, not
// fatal.
func (b *Bootstrap) writePolicyRecord(key []byte, policies map[string]policyStamp) {
	if key == nil || b.Paths.StateDir == "" {
		return
	}
	r := policyRecord{Version: policyRecordVersion, Storage: b.Config.Vault.StoragePath, Policies: policies}
	r.MAC = r.mac(key)
	data, _ := json.Marshal(r)
	if old, err := os.ReadFile(b.policyRecordPath()); err == nil && bytes.Equal(old, data) {
		return // the same record: no write, no fsync at every boot
	}
	if err := fsutil.WriteFileAtomic(b.policyRecordPath(), data, 0o600, fsutil.Self); err != nil {
		b.Log.Warn("cannot keep the stamps of the policies checked; the next boot reads them all again", "error", err)
	}
}
