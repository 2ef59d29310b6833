package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/metrictest"
	"github.com/affix-rotator/affix-rotator/notify"
)

// hookKey signs the notifications of these tests (the Standard Webhooks
// test vector's key); the processes read it from HOOK_KEY.
const hookKey = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiver is a webhook receiver in the test process: it verifies every
// request with notify.Verify and keeps what it received, in order.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	gate   chan struct{} // nil, or each request waits until it is closed
	mu     sync.Mutex
	events []event
	raw    strings.Builder
}

type event struct {
	ID        string
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      struct {
		Client     string `json:"client"`
		RotationID string `json:"rotation_id"`
		Phase      string `json:"phase"`
		InstanceID string `json:"instance_id"`
		Error      string `json:"error"`
		Action     *struct {
			Action, By, Reason string
		} `json:"action"`
	} `json:"data"`
}

func newReceiver(t *testing.T, gate chan struct{}) *receiver {
	rc := &receiver{t: t, gate: gate}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify(hookKey, r.Header, body, time.Now(), time.Minute); err != nil {
			t.Errorf("a notification failed verification: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if rc.gate != nil {
			select {
			case <-rc.gate:
			case <-r.Context().Done():
				return
			}
		}
		var e event
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("notification body: %v", err)
		}
		e.ID = r.Header.Get(notify.HeaderID)
		rc.mu.Lock()
		rc.events = append(rc.events, e)
		rc.raw.Write(body)
		for k, v := range r.Header {
			fmt.Fprintf(&rc.raw, "%s: %s\n", k, strings.Join(v, ","))
		}
		rc.mu.Unlock()
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) got() []event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]event(nil), rc.events...)
}

func (rc *receiver) types() string {
	var out []string
	for _, e := range rc.got() {
		out = append(out, e.Type)
	}
	return strings.Join(out, " ")
}

// hooks returns a notifications block for the config, one webhook per URL.
func hooks(extra string, urls ...string) string {
	var b strings.Builder
	b.WriteString("notifications:\n")
	for _, u := range urls {
		fmt.Fprintf(&b, "  - {url: %q, secret_env: HOOK_KEY%s}\n", u, extra)
	}
	return b.String()
}

// TestOnceNotifies: -once sends rotation.started, rotation.overlap and
// rotation.completed, in order, each signed, before it exits; no secret
// value is in what was delivered or in the process's output.
func TestOnceNotifies(t *testing.T) {
	s := newStack(t)
	s.env = append(s.env, "HOOK_KEY="+hookKey)
	rc := newReceiver(t, nil)
	cfg := s.config("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 1s\n"+hooks("", rc.srv.URL+"/affix"))
	p := s.start("-config", cfg, "-once")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.out.String())
	}
	if got := rc.types(); got != "rotation.started rotation.overlap rotation.completed" {
		t.Fatalf("events %q", got)
	}
	final := s.record()
	for _, e := range rc.got() {
		if e.Data.Client != "prod" || e.Data.RotationID != str(final, "rotation_id") || !strings.HasPrefix(e.Data.InstanceID, "host-a/once-") || !strings.HasPrefix(e.ID, "msg_") {
			t.Fatalf("event %+v", e)
		}
	}
	rc.mu.Lock()
	delivered := rc.raw.String()
	rc.mu.Unlock()
	out := p.out.String()
	for what, secret := range map[string]string{"old secret": s.s0, "new secret": str(final, "client_secret"), "API key": s.key, "signing key": strings.TrimPrefix(hookKey, "whsec_")} {
		if strings.Contains(delivered, secret) || strings.Contains(out, secret) {
			t.Errorf("I5 violated: the %s was delivered or printed", what)
		}
	}
	if !strings.Contains(out, `"msg":"webhook configured"`) || strings.Contains(out, "/affix\"") {
		t.Fatalf("start-up log: the webhook is not logged, or its path is:\n%s", out)
	}
}

// TestOnceFailedNotifies: a -once that fails (no record) exits 1 and has
// sent rotation.failed, with why, before exiting.
func TestOnceFailedNotifies(t *testing.T) {
	s := newStack(t)
	s.env = append(s.env, "HOOK_KEY="+hookKey)
	rc := newReceiver(t, nil)
	cfg := s.config("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 1s\n"+hooks("", rc.srv.URL))
	b, _ := os.ReadFile(cfg)
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), s.path, s.path+"-missing", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := s.start("-config", cfg, "-once")
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, p.out.String())
	}
	got := rc.got()
	if len(got) != 1 || got[0].Type != notify.EventRotationFailed || !strings.Contains(got[0].Data.Error, s.path+"-missing") {
		t.Fatalf("events %+v", got)
	}
}

// TestOperatorActionNotifies: -extend-grace sends operator.action with
// what, who and why.
func TestOperatorActionNotifies(t *testing.T) {
	s := newStack(t)
	s.env = append(s.env, "HOOK_KEY="+hookKey)
	rc := newReceiver(t, nil)
	cfg := s.config("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 1h\n"+hooks(", events: [operator.action]", rc.srv.URL))
	// A record in overlap, as a rotation leaves it.
	s1 := "11111111-22222222-33333333-44444444"
	s.fake.AddClient(s.key, "cid-prod", s1, s.s0)
	if _, err := s.vault.Client().KVv2("secret").Put(context.Background(), s.path, map[string]any{"client_secret": s1, "previous_client_secret": s.s0,
		"phase": "overlap", "rotation_id": "r-42", "grace_until": time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)}); err != nil {
		t.Fatal(err)
	}
	p := s.start("-config", cfg, "-extend-grace", "2h", "-client", "prod", "-reason", "consumers are slow")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.out.String())
	}
	got := rc.got()
	if len(got) != 1 || got[0].Type != notify.EventOperatorAction || got[0].Data.Action == nil || got[0].Data.Action.Action != "extend-grace" ||
		got[0].Data.Action.Reason != "consumers are slow" || got[0].Data.Action.By == "" || got[0].Data.RotationID != "r-42" || got[0].Data.Phase != "overlap" {
		t.Fatalf("events %+v", got)
	}
}

// TestDaemonHostileWebhooks: a daemon whose webhooks hang, answer 500,
// redirect, close the connection or refuse it completes its rotation on
// time (the old secret dropped at grace_until), a good receiver gets every
// event, the failures are in notifications_total{result="failed"}; on
// SIGTERM the daemon delivers what is still queued to a slow receiver and
// exits 0 within the flush bound, though one receiver never answers.
func TestDaemonHostileWebhooks(t *testing.T) {
	s := newStack(t)
	s.env = append(s.env, "HOOK_KEY="+hookKey)
	release := make(chan struct{})
	defer close(release) // before the servers' cleanups wait for their handlers
	serve := func(f http.HandlerFunc) string {
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	hang := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := "http://" + ln.Addr().String()
	ln.Close()
	hostile := []string{
		serve(hang),
		serve(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }),
		serve(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/", http.StatusFound)
		}),
		serve(func(w http.ResponseWriter, r *http.Request) {
			if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
				c.Close()
			}
		}),
		refused,
	}
	good := newReceiver(t, nil)
	// A slow receiver: it answers nothing until SIGTERM, then at once.
	gate := make(chan struct{})
	slow := newReceiver(t, gate)
	block := hooks(", timeout: 300ms, max_elapsed: 1s", hostile...) +
		fmt.Sprintf("  - {url: %q, secret_env: HOOK_KEY}\n  - {url: %q, secret_env: HOOK_KEY, timeout: 60s}\n  - {url: %q, secret_env: HOOK_KEY, timeout: 30s}\n", good.srv.URL, slow.srv.URL, serve(hang))
	cfg := s.config("d.yaml", "pod-a", "    schedule: \"@every 1h\"\n    grace_period: 2s\n    max_age: 2h\n"+block)
	p := s.start("-config", cfg)

	overlap := s.waitFor("overlap", 20*time.Second, func(r map[string]any) bool { return r["phase"] == "overlap" })
	grace, _ := time.Parse(time.RFC3339Nano, str(overlap, "grace_until"))
	s.waitFor("stable", 20*time.Second, func(r map[string]any) bool { return r["phase"] == "stable" && str(r, "rotated_at") != "" })
	reqs := s.fake.Requests()
	if got := strings.Join(s.requests(), " "); got != "200[N1,S0] 200[N1]" {
		t.Fatalf("requests %s", got)
	}
	if late := reqs[1].Time.Sub(grace); late < 0 || late > time.Second {
		t.Fatalf("old secret dropped %s after grace_until", late)
	}
	eventually(t, "the good receiver to get every event", 10*time.Second, func() bool {
		return good.types() == "rotation.started rotation.overlap rotation.completed"
	})
	base := "http://" + s.listen
	counter := func(event, result string) int {
		n, ok := metrictest.Lookup(t, metrictest.Parse(t, get(t, base+"/metrics")), "affix_rotator_notifications_total", "event", event, "result", result)
		if !ok {
			return -1
		}
		return int(n)
	}
	eventually(t, "each hostile webhook's failures in /metrics", 15*time.Second, func() bool {
		return counter("rotation.completed", "failed") >= len(hostile)
	})
	if d := counter("rotation.started", "delivered"); d < 1 {
		t.Fatalf("started delivered %d", d)
	}
	if len(slow.got()) != 0 {
		t.Fatal("the slow receiver answered before SIGTERM")
	}

	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	took := time.Since(start)
	t.Logf("exit %s after SIGTERM", took)
	if took > 8*time.Second {
		t.Fatalf("exit %s after SIGTERM: the flush is bounded by 5s", took)
	}
	if got := slow.types(); got != "rotation.started rotation.overlap rotation.completed" {
		t.Fatalf("the slow receiver got %q: SIGTERM did not flush the queue", got)
	}
	if !strings.Contains(p.out.String(), "exiting with notifications undelivered") {
		t.Fatal("the receiver that never answers is not reported at exit")
	}
}
