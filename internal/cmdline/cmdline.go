// Package cmdline parses a command's arguments the one way every edgeseal
// command does: flags anywhere among the positional arguments, as systemctl
// and snap take them, so that `edgeseal vault lock images --wait 5s` and
// `edgeseal vault lock --wait 5s images` are the same command. The standard
// library's flag package stops at the first positional argument; this goes on
// after it. "--" ends the flags: what follows is positional, whatever it
// looks like. The flag values more than one command takes (PCR lists, PCR
// values) are read here too, by one set of rules.
package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// ErrUsage is what every error of Parse wraps: the command line is wrong,
// which no retry cures (commands exit with status 2).
var ErrUsage = errors.New("bad usage")

// Parse parses args with fs, flags anywhere, and returns the positional
// arguments in their order. It returns flag.ErrHelp for -h or --help (fs's
// Usage has then run), and an error wrapping ErrUsage for a bad flag.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %v", ErrUsage, fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at "--" (consumed) or at the first non-flag (kept).
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" && !takesValue(fs, args[:used-1]) {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// takesValue tells whether the last of args is a flag of fs waiting for its
// value (--config followed by "--" makes "--" the file's name, not the end of
// the flags).
func takesValue(fs *flag.FlagSet, args []string) bool {
	if len(args) == 0 {
		return false
	}
	name, ok := strings.CutPrefix(args[len(args)-1], "-")
	if !ok || strings.Contains(name, "=") {
		return false
	}
	name = strings.TrimPrefix(name, "-")
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return false
	}
	return true
}

// Exactly checks that pos holds exactly the arguments names describes
// (e.g. "NAME"; none for a command that takes none), for an error that says
// what the command takes and what it was given.
func Exactly(command string, pos []string, names ...string) error {
	if len(pos) == len(names) {
		return nil
	}
	want, given := "no argument", "nothing"
	if len(names) > 0 {
		want = strings.Join(names, " ")
	}
	if len(pos) > 0 {
		quoted := make([]string, len(pos))
		for i, a := range pos {
			quoted[i] = fmt.Sprintf("%q", a)
		}
		given = strings.Join(quoted, " ")
	}
	return fmt.Errorf("%w: %s takes %s; given %s (see %s --help)", ErrUsage, command, want, given, command)
}
