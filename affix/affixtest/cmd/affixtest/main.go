// Command affixtest runs the fake Affix API (package affixtest) as a
// process, for the local demo stack and real-process chaos tests. The API
// key and the initial secret come from the environment or files; it logs one
// line per request with secret fingerprints, never values.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	keyEnv := flag.String("api-key-env", "AFFIX_API_KEY", "environment variable holding the API key clients must send")
	clientID := flag.String("client-id", "00000000-00000000-00000000-00000000", "client_id to answer")
	secretEnv := flag.String("secret-env", "AFFIX_INITIAL_SECRET", "environment variable holding the initially accepted secret (optional)")
	secretFile := flag.String("secret-file", "", "file holding the initially accepted secret (instead of -secret-env)")
	flag.Parse()
	if err := run(*listen, *keyEnv, *clientID, *secretEnv, *secretFile); err != nil {
		fmt.Fprintln(os.Stderr, "affixtest:", err)
		os.Exit(1)
	}
}

func run(listen, keyEnv, clientID, secretEnv, secretFile string) error {
	key := os.Getenv(keyEnv)
	if key == "" {
		return fmt.Errorf("environment variable %s (the API key) is empty", keyEnv)
	}
	initial := os.Getenv(secretEnv)
	if secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return err
		}
		initial = strings.TrimSpace(string(b))
	}
	fake := affixtest.NewHandler()
	if initial != "" {
		fake.AddClient(key, clientID, initial)
	} else {
		fake.AddClient(key, clientID)
	}
	logger := log.New(os.Stderr, "affixtest: ", log.LstdFlags|log.Lmicroseconds)
	fake.OnRequest(func(r affixtest.Request) {
		var fps []string
		for _, s := range r.ClientSecret {
			fps = append(fps, affixtest.Fingerprint(s))
		}
		logger.Printf("%s %s -> %d client_secret=%v fault=%s", r.Method, r.Path, r.Status, fps, r.Fault)
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	logger.Printf("listening on %s", ln.Addr())
	srv := &http.Server{Handler: fake.Mux(key), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt, syscall.SIGTERM)
		<-c
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
