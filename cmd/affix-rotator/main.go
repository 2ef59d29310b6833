// Command affix-rotator keeps the OAuth client_secret of Affix API clients
// rotated, with the secrets in HashiCorp Vault. See README.md.
//
//	affix-rotator -config config.yaml                      # daemon
//	affix-rotator -config config.yaml -once [-client prod] # rotate now, wait the grace, drop, exit
//	affix-rotator -config config.yaml -validate            # check config, exit
//	affix-rotator -config config.yaml -status [-o json]    # every client's state, from Vault
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	// Time zones for CRON_TZ= schedules where the system has no zoneinfo
	// (the image from deploy/image has none); the system's is used when present.
	_ "time/tzdata"

	// CA roots for TLS to Vault, Affix and webhooks where the system has
	// none (the image from deploy/image has no CA bundle). x509 uses them
	// only when no system roots are found; vault.tls.ca_cert and
	// SSL_CERT_FILE / SSL_CERT_DIR work as before.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/affix-rotator/affix-rotator/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// SIGHUP reloads the daemon's config; the other modes ignore it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	code := cli.Main(ctx, os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Hangup: hup})
	stop()
	os.Exit(code)
}
