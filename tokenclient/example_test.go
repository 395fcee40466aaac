package tokenclient_test

import (
	"context"
	"errors"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeseal/edgeseal/tokenclient"
)

// A service written in Go takes its own token from the provider, uses it, and
// keeps it renewed for as long as it runs.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	tok, err := tokenclient.Fetch(ctx, tokenclient.Options{})
	switch {
	case errors.Is(err, tokenclient.ErrRefused):
		log.Fatalf("this service is not configured in edgeseal: %v", err)
	case tokenclient.Temporary(err):
		log.Printf("%v; systemd restarts us", err)
		os.Exit(75)
	case err != nil:
		log.Fatal(err)
	}
	vault, err := tok.Client()
	if err != nil {
		log.Fatal(err)
	}
	secret, err := vault.KVv2("secret").Get(ctx, "edgeseal/"+tok.Service+"/db")
	if err != nil {
		log.Fatal(err)
	}
	_ = secret.Data["password"]
	if err := tok.KeepRenewed(ctx, nil); err != nil {
		log.Fatal(err) // revoked: exit, and let systemd start us with a new token
	}
}
