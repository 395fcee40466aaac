package fsvault

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxHolders bounds the processes named as holding a vault.
const maxHolders = 16

// Holders names the processes ("pid 123 (app)") that hold a file of dir open,
// have their working directory in it, map one of its files, or (the first of
// a mount namespace) have it mounted: what keeps a lock pending. It sees only what /proc shows this process; a process it
// cannot read is left out.
func Holders(dir string) []string {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	ref, haveRef := refOf(dir)
	self, _ := os.Readlink("/proc/self/ns/mnt")
	seenNS := map[string]bool{self: true}
	var out []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		proc := filepath.Join("/proc", p.Name())
		held := holds(proc, dir)
		if !held && haveRef {
			// A mount namespace of its own (a sandboxed unit) may hold the
			// vault by a mount: name its first process only.
			if ns, err := os.Readlink(filepath.Join(proc, "ns", "mnt")); err == nil && !seenNS[ns] {
				seenNS[ns] = true
				held = mountsUnder(filepath.Join(proc, "mountinfo"), ref)
			}
		}
		if held {
			out = append(out, fmt.Sprintf("pid %d (%s)", pid, comm(pid)))
			if len(out) == maxHolders {
				return append(out, "...")
			}
		}
	}
	return out
}

// within is true of path == dir or a path under it.
func within(path, dir string) bool {
	path = strings.TrimSuffix(path, " (deleted)")
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func holds(proc, dir string) bool {
	for _, l := range []string{"cwd", "root"} {
		if t, err := os.Readlink(filepath.Join(proc, l)); err == nil && within(t, dir) {
			return true
		}
	}
	fds, _ := os.ReadDir(filepath.Join(proc, "fd"))
	for _, fd := range fds {
		if t, err := os.Readlink(filepath.Join(proc, "fd", fd.Name())); err == nil && within(t, dir) {
			return true
		}
	}
	return mapsFileUnder(filepath.Join(proc, "maps"), dir)
}

// mapsFileUnder is true if the maps file lists a mapping of a file under dir.
func mapsFileUnder(maps, dir string) bool {
	f, err := os.Open(maps)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address perms offset dev inode pathname
		fields := strings.SplitN(sc.Text(), " ", 6)
		if len(fields) == 6 && within(strings.TrimLeft(fields[5], " "), dir) {
			return true
		}
	}
	return false
}

func comm(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
