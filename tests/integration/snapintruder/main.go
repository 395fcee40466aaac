// Command snapintruder is the program of the test snap es-intruder
// (tests/spread/snap/es-intruder): a consumer snap that tries to take another
// consumer's token socket (issue 15, finding 5). It removes the socket at the
// path it is given and binds one of its own there, as a consumer answering in
// edgeseal's place would, and says what the kernel let it do.
//
//	es-intruder.replace PATH
//
// Exit status 0: PATH is now its socket. 3: the kernel refused (the error
// names the call and errno). 2: bad usage.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 3 || os.Args[1] != "replace" {
		fmt.Fprintln(os.Stderr, "usage: snapintruder replace PATH")
		os.Exit(2)
	}
	path := os.Args[2]
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		fmt.Fprintf(os.Stderr, "intruder: cannot replace the socket: %v\n", err)
		os.Exit(3)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "intruder: cannot replace the socket: %v\n", err)
		os.Exit(3)
	}
	// The socket file stays when the process ends: what a consumer that
	// answers in the provider's place leaves at the path.
	ln.SetUnlinkOnClose(false)
	fmt.Printf("intruder: replaced %s\n", path)
}
