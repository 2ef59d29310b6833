package httpapi_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affix-rotator/affix-rotator/internal/httpapi"
)

// testLimits are short, so that the test takes seconds; the bounds the
// test checks are generous, for a loaded CI machine.
var testLimits = httpapi.Limits{
	ReadHeaderTimeout: 500 * time.Millisecond,
	ReadTimeout:       time.Second,
	WriteTimeout:      time.Second,
	IdleTimeout:       700 * time.Millisecond,
	MaxConns:          2,
	MaxBodyBytes:      1 << 10,
}

// slack is how much later than its limit a connection may close.
const slack = 10 * time.Second

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.Serve(ln, h, testLimits)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

func daemonHandler() http.Handler {
	return httpapi.Handler(httpapi.Options{
		Gatherer: prometheus.NewRegistry(),
		Ready:    func(context.Context) error { return nil },
		Status:   func() any { return map[string]string{} },
	})
}

// waitClosed reads c until the server closes it (EOF or reset) and
// returns how long after since that was; it fails when the connection is
// still open at limit+slack.
func waitClosed(t *testing.T, c net.Conn, r io.Reader, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	_ = c.SetReadDeadline(since.Add(limit + slack))
	_, err := io.Copy(io.Discard, r)
	lived := time.Since(since)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("still open after %s (limit %s)", lived, limit)
	}
	if lived < limit*9/10 {
		t.Fatalf("closed after %s, before its limit %s", lived, limit)
	}
	return lived
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestListenerClosesSlowClients: an idle keep-alive connection, a request
// whose headers never end and one whose announced body never comes are
// each closed at their limit.
func TestListenerClosesSlowClients(t *testing.T) {
	addr := serve(t, daemonHandler())
	t.Run("idle keep-alive", func(t *testing.T) {
		t.Parallel()
		c := dial(t, addr)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("answer %d, close %v: want a 200 kept alive", resp.StatusCode, resp.Close)
		}
		lived := waitClosed(t, c, br, time.Now(), testLimits.IdleTimeout)
		t.Logf("idle keep-alive connection closed %s after its answer (IdleTimeout %s)", lived.Round(time.Millisecond), testLimits.IdleTimeout)
	})
	t.Run("slow header", func(t *testing.T) {
		t.Parallel()
		c := dial(t, addr)
		start := time.Now()
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		lived := waitClosed(t, c, c, start, testLimits.ReadHeaderTimeout)
		t.Logf("unfinished headers: connection closed after %s (ReadHeaderTimeout %s)", lived.Round(time.Millisecond), testLimits.ReadHeaderTimeout)
	})
	t.Run("slow body", func(t *testing.T) {
		t.Parallel()
		c := dial(t, addr)
		start := time.Now()
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part"); err != nil {
			t.Fatal(err)
		}
		lived := waitClosed(t, c, c, start, testLimits.ReadTimeout)
		t.Logf("announced body never sent: connection closed after %s (ReadTimeout %s)", lived.Round(time.Millisecond), testLimits.ReadTimeout)
	})
}

// TestListenerWriteTimeout: an answer not written within WriteTimeout is
// cut: the client gets no answer and the connection closes.
func TestListenerWriteTimeout(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(testLimits.WriteTimeout + 300*time.Millisecond) // the server's slowness, not the test's assertion
		_, _ = w.Write([]byte("late\n"))
	}))
	c := dial(t, addr)
	start := time.Now()
	if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	lived := waitClosed(t, c, br, start, testLimits.WriteTimeout)
	t.Logf("slow handler: connection closed after %s without an answer (WriteTimeout %s)", lived.Round(time.Millisecond), testLimits.WriteTimeout)
}

// TestListenerCapsConnections: with MaxConns connections busy, another
// is not served until one of them is done.
func TestListenerCapsConnections(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/block", func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-release
	})
	mux.Handle("/", daemonHandler())
	addr := serve(t, mux)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the server's shutdown
	var held []net.Conn
	for range testLimits.MaxConns {
		c := dial(t, addr)
		if _, err := io.WriteString(c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		<-entered // accepted and busy
		held = append(held, c)
	}
	extra := dial(t, addr)
	if _, err := io.WriteString(extra, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time, 1)
	go func() {
		defer close(got)
		_ = extra.SetReadDeadline(time.Now().Add(slack + time.Second))
		if _, err := http.ReadResponse(bufio.NewReader(extra), nil); err == nil {
			got <- time.Now()
		}
	}()
	// The one wait of the test that cannot be an event: that nothing
	// happens (the held handlers block until released, whatever the
	// machine's load).
	select {
	case <-got:
		t.Fatalf("a connection beyond MaxConns (%d) was served while the others were busy", testLimits.MaxConns)
	case <-time.After(500 * time.Millisecond):
	}
	freed := time.Now()
	_ = held[0].Close()
	once.Do(func() { close(release) })
	at, ok := <-got
	if !ok {
		t.Fatal("the extra connection was never served")
	}
	t.Logf("connection %d waited; served %s after a busy one was freed", testLimits.MaxConns+1, at.Sub(freed).Round(time.Millisecond))
}

// TestListenerCapsBodies: a handler reading a body larger than
// MaxBodyBytes gets an *http.MaxBytesError.
func TestListenerCapsBodies(t *testing.T) {
	var readErr error
	done := make(chan struct{})
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, readErr = io.ReadAll(r.Body)
		close(done)
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	}))
	resp, err := http.Post("http://"+addr+"/x", "text/plain", strings.NewReader(strings.Repeat("a", 64<<10)))
	if err == nil {
		_ = resp.Body.Close()
	}
	<-done
	var mbe *http.MaxBytesError
	if !errors.As(readErr, &mbe) || mbe.Limit != testLimits.MaxBodyBytes {
		t.Fatalf("reading a 64 KiB body: %v, want a MaxBytesError at %d", readErr, testLimits.MaxBodyBytes)
	}
}
