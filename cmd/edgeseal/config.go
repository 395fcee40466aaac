package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/edgeseal/edgeseal/internal/cmdline"
	"github.com/edgeseal/edgeseal/internal/config"
	"github.com/edgeseal/edgeseal/internal/paths"
)

func cmdConfig(p paths.Paths, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: config needs a subcommand: check [FILE] or default", errUsage)
	}
	switch args[0] {
	case "default":
		_, err := stdout.Write(config.Sample)
		return err
	case "check":
		fs := flag.NewFlagSet("edgeseal config check", flag.ContinueOnError)
		fs.SetOutput(stdout)
		fs.Usage = func() {
			fmt.Fprintf(stdout, "Usage: edgeseal config check [FILE]\n\nValidates FILE (default %s): strict YAML, every field checked;\nerrors name the file, line and field.\n", p.ConfigFile)
		}
		pos, err := cmdline.Parse(fs, args[1:])
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		if err != nil {
			return err
		}
		file := p.ConfigFile
		switch len(pos) {
		case 0:
		case 1:
			file = pos[0]
		default:
			return cmdline.Exactly(fs.Name(), pos, "[FILE]")
		}
		if _, err := config.Load(file); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok\n", file)
		return nil
	}
	return fmt.Errorf("%w: unknown config subcommand %q", errUsage, args[0])
}
