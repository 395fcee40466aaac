// Package fscrypt drives Linux native filesystem encryption (fscrypt) with v2
// policies, through the kernel's ioctls (golang.org/x/sys/unix): no fscrypt
// tool, no /etc/fscrypt.conf. It knows nothing of where keys come from: a
// caller adds a raw key to a filesystem, sets the policy that names it on an
// empty directory, and removes the key to lock the directory again.
//
// Contents are AES-256-XTS and names AES-256-CTS, padded to 32 bytes. A key is
// known to the kernel by its identifier, a hash of the key that the kernel
// computes when the key is added; a directory's policy names that identifier.
package fscrypt

import (
	"crypto/hkdf"
	"crypto/sha512"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// KeySize is the size of the raw keys edgeseal uses (the kernel's maximum).
const KeySize = unix.FSCRYPT_MAX_KEY_SIZE

// Identifier names a key to the kernel (FSCRYPT_KEY_IDENTIFIER_SIZE bytes).
type Identifier [unix.FSCRYPT_KEY_IDENTIFIER_SIZE]byte

func (id Identifier) String() string { return fmt.Sprintf("%x", id[:]) }

// Errors a caller acts on.
var (
	// ErrNotSupported: the filesystem cannot encrypt (not made with the
	// encrypt feature, or not a filesystem that has it).
	ErrNotSupported = errors.New("the filesystem does not support encryption (ext4: mkfs.ext4 -O encrypt, or tune2fs -O encrypt on an unmounted filesystem)")
	// ErrNotEmpty: a policy can be set only on an empty directory.
	ErrNotEmpty = errors.New("the directory is not empty: only an empty directory can become encrypted")
	// ErrOtherPolicy: the directory is already encrypted, with another key.
	ErrOtherPolicy = errors.New("the directory is already encrypted with another key")
	// ErrKeyAbsent: the key of the directory is not in the kernel (locked).
	ErrKeyAbsent = errors.New("the key is not added")
	// ErrOtherUsers: other users added the same key: removing this user's
	// claim left it in the kernel, and the directories unlocked.
	ErrOtherUsers = errors.New("other users have added the key too: it stays in the kernel until they remove it")
)

// KeyStatus is what the kernel holds of a key.
type KeyStatus int

const (
	Absent              KeyStatus = unix.FSCRYPT_KEY_STATUS_ABSENT
	Present             KeyStatus = unix.FSCRYPT_KEY_STATUS_PRESENT
	IncompletelyRemoved KeyStatus = unix.FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED
)

func (s KeyStatus) String() string {
	switch s {
	case Absent:
		return "absent"
	case Present:
		return "present"
	case IncompletelyRemoved:
		return "incompletely removed (files busy)"
	}
	return fmt.Sprintf("status %d", int(s))
}

// ioctl calls req with arg on an fd of path (opened read-only, as a directory
// when it is one).
func ioctl(path string, req uint, arg unsafe.Pointer) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// notSupported maps the errors of a filesystem without encryption.
func notSupported(err error) bool {
	return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP)
}

// AddKey adds key (KeySize bytes) to the filesystem holding path, for every
// user, and returns its identifier. Adding a key that is there already is not
// an error.
func AddKey(path string, key []byte) (Identifier, error) {
	if len(key) != KeySize {
		return Identifier{}, fmt.Errorf("cannot add a key of %d bytes to %s: want %d", len(key), path, KeySize)
	}
	// struct fscrypt_add_key_arg is followed by the raw key (__u8 raw[]).
	var arg unix.FscryptAddKeyArg
	buf := make([]byte, int(unsafe.Sizeof(arg))+len(key))
	defer clear(buf)
	p := (*unix.FscryptAddKeyArg)(unsafe.Pointer(&buf[0]))
	p.Key_spec.Type = unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
	p.Raw_size = uint32(len(key))
	copy(buf[unsafe.Sizeof(arg):], key)
	if err := ioctl(path, unix.FS_IOC_ADD_ENCRYPTION_KEY, unsafe.Pointer(&buf[0])); err != nil {
		if notSupported(err) {
			return Identifier{}, fmt.Errorf("cannot add a key to the filesystem of %s: %w", path, ErrNotSupported)
		}
		return Identifier{}, fmt.Errorf("cannot add a key to the filesystem of %s: %w", path, err)
	}
	var id Identifier
	copy(id[:], p.Key_spec.U[:len(id)])
	return id, nil
}

// RemoveKey removes this user's claim to the key id on the filesystem holding
// path; with no other claim, the key goes and its directories lock. It needs
// no capability (FS_IOC_REMOVE_ENCRYPTION_KEY, not its _ALL_USERS form, which
// needs CAP_SYS_ADMIN): the key is only ever added by the user that removes
// it. busy is true when files of it were still open: the kernel then keeps the
// key for them (their contents stay readable) until they close, and status
// reports IncompletelyRemoved; removing it again finishes the job. A key that
// other users added too stays: ErrOtherUsers.
func RemoveKey(path string, id Identifier) (busy bool, err error) {
	var arg unix.FscryptRemoveKeyArg
	arg.Key_spec.Type = unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
	copy(arg.Key_spec.U[:], id[:])
	if err := ioctl(path, unix.FS_IOC_REMOVE_ENCRYPTION_KEY, unsafe.Pointer(&arg)); err != nil {
		switch {
		case errors.Is(err, unix.ENOKEY):
			return false, fmt.Errorf("cannot remove key %s from the filesystem of %s: %w", id, path, ErrKeyAbsent)
		case notSupported(err):
			return false, fmt.Errorf("cannot remove key %s from the filesystem of %s: %w", id, path, ErrNotSupported)
		}
		return false, fmt.Errorf("cannot remove key %s from the filesystem of %s: %w", id, path, err)
	}
	if arg.Removal_status_flags&unix.FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS != 0 {
		return false, fmt.Errorf("cannot remove key %s from the filesystem of %s: %w", id, path, ErrOtherUsers)
	}
	return arg.Removal_status_flags&unix.FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY != 0, nil
}

// Status says whether the key id is in the kernel for the filesystem of path.
func Status(path string, id Identifier) (KeyStatus, error) {
	var arg unix.FscryptGetKeyStatusArg
	arg.Key_spec.Type = unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
	copy(arg.Key_spec.U[:], id[:])
	if err := ioctl(path, unix.FS_IOC_GET_ENCRYPTION_KEY_STATUS, unsafe.Pointer(&arg)); err != nil {
		if notSupported(err) {
			return 0, fmt.Errorf("cannot get the status of key %s on the filesystem of %s: %w", id, path, ErrNotSupported)
		}
		return 0, fmt.Errorf("cannot get the status of key %s on the filesystem of %s: %w", id, path, err)
	}
	return KeyStatus(arg.Status), nil
}

// SetPolicy makes the empty directory dir encrypted with the key id (added
// first): AES-256-XTS contents, AES-256-CTS names. Setting the policy a
// directory already has is not an error.
func SetPolicy(dir string, id Identifier) error {
	pol := unix.FscryptPolicyV2{
		Version:                   unix.FSCRYPT_POLICY_V2,
		Contents_encryption_mode:  unix.FSCRYPT_MODE_AES_256_XTS,
		Filenames_encryption_mode: unix.FSCRYPT_MODE_AES_256_CTS,
		Flags:                     unix.FSCRYPT_POLICY_FLAGS_PAD_32,
		Master_key_identifier:     id,
	}
	if err := ioctl(dir, unix.FS_IOC_SET_ENCRYPTION_POLICY, unsafe.Pointer(&pol)); err != nil {
		switch {
		case errors.Is(err, unix.ENOTEMPTY):
			return fmt.Errorf("cannot encrypt %s: %w", dir, ErrNotEmpty)
		case errors.Is(err, unix.EEXIST):
			return fmt.Errorf("cannot encrypt %s with key %s: %w", dir, id, ErrOtherPolicy)
		case errors.Is(err, unix.ENOKEY):
			return fmt.Errorf("cannot encrypt %s with key %s: %w", dir, id, ErrKeyAbsent)
		case notSupported(err):
			return fmt.Errorf("cannot encrypt %s: %w", dir, ErrNotSupported)
		}
		return fmt.Errorf("cannot encrypt %s: %w", dir, err)
	}
	return nil
}

// Policy returns the key identifier of dir's v2 policy; encrypted is false
// for a directory that is not encrypted.
func Policy(dir string) (id Identifier, encrypted bool, err error) {
	var arg unix.FscryptGetPolicyExArg
	arg.Size = uint64(len(arg.Policy))
	if err := ioctl(dir, unix.FS_IOC_GET_ENCRYPTION_POLICY_EX, unsafe.Pointer(&arg)); err != nil {
		switch {
		case errors.Is(err, unix.ENODATA):
			return Identifier{}, false, nil
		case notSupported(err):
			return Identifier{}, false, fmt.Errorf("cannot read the encryption policy of %s: %w", dir, ErrNotSupported)
		}
		return Identifier{}, false, fmt.Errorf("cannot read the encryption policy of %s: %w", dir, err)
	}
	pol := (*unix.FscryptPolicyV2)(unsafe.Pointer(&arg.Policy[0]))
	if pol.Version != unix.FSCRYPT_POLICY_V2 {
		return Identifier{}, true, fmt.Errorf("%s is encrypted with a v1 policy (the fscrypt tool's old kind): edgeseal uses only v2", dir)
	}
	return pol.Master_key_identifier, true, nil
}

// Identify computes the identifier the kernel gives key, without adding it:
// HKDF-SHA512 of the key (no salt), info "fscrypt\0" and context 1, the first
// 16 bytes (fs/crypto/keyring.c and hkdf.c).
func Identify(key []byte) (Identifier, error) {
	var id Identifier
	if len(key) != KeySize {
		return id, fmt.Errorf("cannot identify a key of %d bytes: want %d", len(key), KeySize)
	}
	out, err := hkdf.Key(sha512.New, key, nil, "fscrypt\x00\x01", len(id))
	if err != nil {
		return id, fmt.Errorf("cannot identify a key: %w", err)
	}
	copy(id[:], out)
	return id, nil
}
