package cmdline

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func newFlags() (*flag.FlagSet, *time.Duration, *bool, *string) {
	fs := flag.NewFlagSet("edgeseal vault lock", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs, fs.Duration("wait", 0, ""), fs.Bool("all", false, ""), fs.String("config", "", "")
}

func TestFlagsAreReadWhereverTheyStand(t *testing.T) {
	for _, args := range [][]string{
		{"images", "--wait", "5s", "--all"},
		{"--wait", "5s", "images", "--all"},
		{"--all", "--wait=5s", "images"},
	} {
		fs, wait, all, _ := newFlags()
		pos, err := Parse(fs, args)
		if err != nil || !slices.Equal(pos, []string{"images"}) || *wait != 5*time.Second || !*all {
			t.Errorf("%q: %q, wait %v, all %v, %v; want [images], 5s, true", args, pos, *wait, *all, err)
		}
	}
}

func TestPositionalArgumentsKeepTheirOrder(t *testing.T) {
	fs, _, _, _ := newFlags()
	pos, err := Parse(fs, []string{"a", "--all", "b", "c"})
	if err != nil || !slices.Equal(pos, []string{"a", "b", "c"}) {
		t.Fatalf("%q, %v", pos, err)
	}
}

func TestDoubleDashEndsTheFlags(t *testing.T) {
	fs, _, all, _ := newFlags()
	pos, err := Parse(fs, []string{"a", "--", "--all", "-x"})
	if err != nil || !slices.Equal(pos, []string{"a", "--all", "-x"}) || *all {
		t.Fatalf("%q, all %v, %v; want everything after -- positional", pos, *all, err)
	}
	// "--" as a flag's value is that value, not the end of the flags.
	fs, _, all, config := newFlags()
	pos, err = Parse(fs, []string{"--config", "--", "a", "--all"})
	if err != nil || *config != "--" || !*all || !slices.Equal(pos, []string{"a"}) {
		t.Fatalf("%q, config %q, all %v, %v", pos, *config, *all, err)
	}
}

func TestABadFlagIsAUsageErrorNamingIt(t *testing.T) {
	fs, _, _, _ := newFlags()
	_, err := Parse(fs, []string{"images", "--wiat", "5s"})
	if !errors.Is(err, ErrUsage) || err.Error() != "bad usage: edgeseal vault lock: flag provided but not defined: -wiat" {
		t.Fatalf("%v", err)
	}
	fs, _, _, _ = newFlags()
	if _, err := Parse(fs, []string{"images", "--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
}

func TestExactlySaysWhatACommandTakes(t *testing.T) {
	if err := Exactly("edgeseal vault lock", []string{"images"}, "NAME"); err != nil {
		t.Fatal(err)
	}
	err := Exactly("edgeseal vault lock", []string{"a", "b"}, "NAME")
	if !errors.Is(err, ErrUsage) || err.Error() != "bad usage: edgeseal vault lock takes NAME; given \"a\" \"b\" (see edgeseal vault lock --help)" {
		t.Fatalf("%v", err)
	}
	if err := Exactly("edgeseal status", []string{"x"}); err == nil || err.Error() != "bad usage: edgeseal status takes no argument; given \"x\" (see edgeseal status --help)" {
		t.Fatalf("%v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("images --wait 5s -- --all")
	f.Add("--config -- a --all")
	f.Fuzz(func(t *testing.T, line string) {
		fs, _, _, _ := newFlags()
		args := strings.Split(line, " ")
		pos, err := Parse(fs, args)
		if err == nil && len(pos) > len(args) {
			t.Fatalf("%d positional from %d arguments", len(pos), len(args))
		}
		for _, p := range pos {
			if !slices.Contains(args, p) {
				t.Fatalf("positional %q is not among %q", p, args)
			}
		}
	})
}
