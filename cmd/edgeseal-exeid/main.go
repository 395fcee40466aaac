// Command edgeseal-exeid is edgeseal-exeid.service: started by
// edgeseal-exeid.socket when the token provider first asks, it tells the
// provider the SHA-256 of the executable a caller runs, for services that pin
// their executables (exe_sha256). It exits when idle. See package exeid for
// why it is a process of its own.
//
// Exit status: 0 idle or stopped; 1 an error; 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgeseal/edgeseal/internal/exeid"
	"github.com/edgeseal/edgeseal/internal/journal"
)

const usage = `Usage: edgeseal-exeid [--allow-user USER] [--idle-exit DURATION]

Runs as edgeseal-exeid.service, started by edgeseal-exeid.socket
(/run/edgeseal/exeid.sock) when the token provider first asks; it cannot be
run by hand. The provider sends a pidfd of a caller whose service pins its
executables (services[].exe_sha256); edgeseal-exeid answers with the SHA-256 of
the file that process runs, read through /proc/PID/exe (which takes
CAP_SYS_PTRACE, the provider has no capability). Only USER may ask.

Options:
`

func main() {
	log := journal.New(os.Stderr)
	fs := flag.NewFlagSet("edgeseal-exeid", flag.ContinueOnError)
	allow := fs.String("allow-user", "edgeseal-tokend", "the only user whose requests are answered: the token provider's")
	idle := fs.Duration("idle-exit", 30*time.Second, "exit after this long without a request (0: never)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 || *idle < 0 {
		fs.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := exeid.Run(ctx, log.Logger, *allow, *idle)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgeseal-exeid: %v\n", err)
		os.Exit(1)
	}
}
