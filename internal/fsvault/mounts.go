package fsvault

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountRef is where a directory is within its filesystem: the device
// (major:minor, as mountinfo writes it) and the path from the filesystem's
// root. A process in another mount namespace that has a mount of that device
// whose root is at or below the path holds the directory (a sandboxed unit's
// ReadWritePaths=, a bind mount) without any file open.
type mountRef struct{ dev, path string }

// refOf finds dir's device and path within its filesystem from this
// process's mountinfo.
func refOf(dir string) (mountRef, bool) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return mountRef{}, false
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	best, ref := -1, mountRef{}
	eachMount("/proc/self/mountinfo", func(mdev, root, point string) {
		if mdev != dev || (point != "/" && !within(dir, point)) || len(point) <= best {
			return
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(dir, point), "/")
		best, ref = len(point), mountRef{dev: dev, path: filepath.Join(root, rel)}
	})
	return ref, best >= 0
}

// eachMount calls fn with each mount's device, root within its filesystem,
// and mount point (octal escapes of mountinfo decoded).
func eachMount(mountinfo string, fn func(dev, root, point string)) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mount-point options ... - fstype source super
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		fn(fields[2], unescape(fields[3]), unescape(fields[4]))
	}
}

// unescape decodes mountinfo's \ooo escapes (space, tab, newline, backslash).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder is true if the mountinfo lists a mount of ref's device whose
// root is ref's path or below it.
func mountsUnder(mountinfo string, ref mountRef) bool {
	found := false
	eachMount(mountinfo, func(dev, root, _ string) {
		if dev == ref.dev && within(root, ref.path) {
			found = true
		}
	})
	return found
}
