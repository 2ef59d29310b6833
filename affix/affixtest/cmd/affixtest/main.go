// Command affixtest runs the fake Affix API (package affixtest) as a
// process, for the local demo stack and real-process chaos tests.
//
//	AFFIX_API_KEY=… AFFIX_INITIAL_SECRET=… affixtest -listen 127.0.0.1:8080 -client-id my-client
//
// The API key (the one clients must send) and the initially accepted secret
// come from the environment (-api-key-env, -secret-env) or a file
// (-secret-file). The admin endpoints of affixtest.AdminHandler and the
// consumer stand-in affixtest.TokenPath (not an Affix endpoint) are served
// on the same listener under /_affixtest/. One line per request is logged
// to stderr with the status and the secrets' fingerprints, never values.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "affixtest:", err)
		os.Exit(1)
	}
}

// run parses args, serves until ctx ends, and calls ready (if not nil) with
// the address once listening.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(net.Addr)) error {
	fs := flag.NewFlagSet("affixtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	keyEnv := fs.String("api-key-env", "AFFIX_API_KEY", "environment variable holding the API key clients must send")
	clientID := fs.String("client-id", "00000000-00000000-00000000-00000000", "client_id to answer")
	secretEnv := fs.String("secret-env", "AFFIX_INITIAL_SECRET", "environment variable holding the initially accepted secret (optional)")
	secretFile := fs.String("secret-file", "", "file holding the initially accepted secret (instead of -secret-env)")
	rateLimit := fs.Float64("rate-limit", 0, "requests per second allowed (429 + Retry-After beyond it); 0: no limit")
	burst := fs.Int("burst", 1, "requests allowed at once above -rate-limit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	key := getenv(*keyEnv)
	if key == "" {
		return fmt.Errorf("environment variable %s (the API key) is empty", *keyEnv)
	}
	initial := getenv(*secretEnv)
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("-secret-file: %w", err)
		}
		initial = strings.TrimRight(string(b), "\r\n")
	}
	fake := affixtest.NewHandler()
	if initial != "" {
		fake.AddClient(key, *clientID, initial)
	} else {
		fake.AddClient(key, *clientID)
	}
	fake.SetRateLimit(*rateLimit, *burst)
	logger := log.New(stderr, "affixtest: ", log.LstdFlags|log.Lmicroseconds)
	fake.OnRequest(func(r affixtest.Request) { logger.Print(logLine(r)) })
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("-listen %s: %w", *listen, err)
	}
	accepted := "none"
	if initial != "" {
		accepted = affixtest.Fingerprint(initial)
	}
	logger.Printf("listening on %s (client_id %q, accepted %s)", ln.Addr(), *clientID, accepted)
	if ready != nil {
		ready(ln.Addr())
	}
	srv := &http.Server{Handler: fake.Mux(key), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = srv.Close()
		case <-done:
		}
	}()
	defer close(done)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// logLine describes a request with fingerprints of its secrets, never values.
func logLine(r affixtest.Request) string {
	fields := make([]string, 0, len(r.Fields))
	for k := range r.Fields {
		fields = append(fields, k)
	}
	sort.Strings(fields)
	fault := r.Fault
	if fault == "" {
		fault = "-"
	}
	return fmt.Sprintf("%s %q -> %d applied=%t client_secret=[%s] fields=[%s] fault=%q",
		r.Method, r.Path, r.Status, r.Applied, strings.Join(affixtest.Fingerprints(r.ClientSecret), " "), strings.Join(fields, " "), fault)
}
