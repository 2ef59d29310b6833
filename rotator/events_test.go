package rotator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/metrictest"
	"github.com/affix-rotator/affix-rotator/notify"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault/vaultmem"
)

// hookKey signs the notifications of these tests.
const hookKey = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hook is a webhook receiver that verifies every request with
// notify.Verify and keeps, in order, what it received.
type hook struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	heads  []http.Header
}

func newHook(t *testing.T) *hook {
	h := &hook{t: t}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify(hookKey, r.Header, body, time.Now(), time.Minute); err != nil {
			t.Errorf("a notification failed verification: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h.mu.Lock()
		h.bodies = append(h.bodies, body)
		h.heads = append(h.heads, r.Header.Clone())
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

type payload struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      struct {
		Client     string     `json:"client"`
		VaultPath  string     `json:"vault_path"`
		RotationID string     `json:"rotation_id"`
		Phase      string     `json:"phase"`
		GraceUntil *time.Time `json:"grace_until"`
		RotatedAt  *time.Time `json:"rotated_at"`
		InstanceID string     `json:"instance_id"`
		Trigger    string     `json:"trigger"`
		Error      string     `json:"error"`
	} `json:"data"`
}

func (h *hook) payloads() []payload {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]payload, len(h.bodies))
	for i, b := range h.bodies {
		if err := json.Unmarshal(b, &out[i]); err != nil {
			h.t.Fatalf("body %d: %v", i, err)
		}
	}
	return out
}

// everything returns all that was delivered: bodies and headers.
func (h *hook) everything() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for i := range h.bodies {
		b.Write(h.bodies[i])
		for k, v := range h.heads[i] {
			b.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
	}
	return b.String()
}

// logBuffer is a JSON logger into a buffer, to look for secrets in it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
func (l *logBuffer) logger() *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(l), zap.DebugLevel))
}

func hookKeys(t *testing.T) []notify.Key {
	k, err := notify.ParseKeys(hookKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func closeNotifier(t *testing.T, n *notify.Notifier, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("notifications not flushed within %s: %v", d, err)
	}
}

// notifications is affix_rotator_notifications_total{event, result}.
func notifications(t *testing.T, reg *prometheus.Registry, event, result string) int {
	t.Helper()
	return int(metrictest.Value(t, reg, "affix_rotator_notifications_total", "event", event, "result", result))
}

// TestNotificationsOfARotation: a real rotation (real Vault, the Affix
// fake) sends rotation.started, rotation.overlap and rotation.completed,
// in that order, each signed (the receiver verifies every one with
// notify.Verify) and describing the rotation as Vault records it; no
// secret value (old, new, API key, signing key) is in any body, header or
// log line.
func TestNotificationsOfARotation(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	hk := newHook(t)
	logs := &logBuffer{}
	reg := prometheus.NewRegistry()
	n := notify.New(notify.Options{Logger: logs.logger(), Metrics: notify.NewMetrics(reg),
		Endpoints: []notify.Endpoint{{Name: "notifications[0]", URL: hk.srv.URL, Keys: hookKeys(t)}}})
	p := h.process("d1", nil)
	r := p.rotator(func(o *rotator.Options) {
		o.Logger = logs.logger()
		o.Events = func(e rotator.Event) { n.Send(e.Message()) }
	})
	out, err := h.rotate(ctx, p, r, h.once())
	if err != nil || out.Result != rotator.ResultSuccess {
		t.Fatalf("rotation: %+v %v", out, err)
	}
	closeNotifier(t, n, 10*time.Second)

	got := hk.payloads()
	var types []string
	for _, p := range got {
		types = append(types, p.Type)
	}
	eq(t, "events", types, []string{notify.EventRotationStarted, notify.EventRotationOverlap, notify.EventRotationCompleted})
	final := h.rawRecord()
	for i, p := range got {
		d := p.Data
		if d.Client != "c1" || d.VaultPath != h.path || d.RotationID != out.RotationID || d.RotationID != str(final, "rotation_id") || d.InstanceID != "d1" || p.Timestamp.IsZero() {
			t.Fatalf("event %d (%s): %+v", i, p.Type, p)
		}
	}
	if got[0].Data.Phase != "staged" || got[0].Data.Trigger != rotator.ReasonOnce {
		t.Fatalf("started: %+v", got[0].Data)
	}
	grace := h.fake.Requests()[0].Time.Add(h.grace)
	if got[1].Data.Phase != "overlap" || got[1].Data.GraceUntil == nil || !got[1].Data.GraceUntil.Equal(grace) {
		t.Fatalf("overlap: %+v, want grace_until %s", got[1].Data, grace)
	}
	rotated, _ := time.Parse(time.RFC3339Nano, str(final, "rotated_at"))
	if got[2].Data.Phase != "stable" || got[2].Data.RotatedAt == nil || !got[2].Data.RotatedAt.Equal(rotated) || got[2].Data.GraceUntil != nil {
		t.Fatalf("completed: %+v, want rotated_at %s", got[2].Data, rotated)
	}
	if c := notifications(t, reg, notify.EventRotationOverlap, notify.ResultDelivered); c != 1 {
		t.Fatalf("overlap delivered %d times", c)
	}

	secrets := map[string]string{"old secret": h.s0, "new secret": str(final, "client_secret"), "API key": h.key, "signing key": strings.TrimPrefix(hookKey, "whsec_")}
	delivered, logged := hk.everything(), logs.String()
	if !strings.Contains(logged, "notification delivered") {
		t.Fatal("the notifier's log is not captured")
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("no %s to look for", what)
		}
		if strings.Contains(delivered, s) {
			t.Errorf("I5 violated: the %s is in a delivered notification", what)
		}
		if strings.Contains(logged, s) {
			t.Errorf("I5 violated: the %s is in a log line", what)
		}
	}
}

// eventSink collects events.
type eventSink struct {
	mu sync.Mutex
	ev []rotator.Event
}

func (s *eventSink) add(e rotator.Event) { s.mu.Lock(); s.ev = append(s.ev, e); s.mu.Unlock() }
func (s *eventSink) events() []rotator.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rotator.Event(nil), s.ev...)
}
func (s *eventSink) types() []string {
	var out []string
	for _, e := range s.events() {
		out = append(out, e.Type)
	}
	return out
}

// TestEventAborted: Affix rejecting the new secret (400) gives
// rotation.started then rotation.aborted, with why and the old secret
// still current (phase stable).
func TestEventAborted(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	h.fake.Inject(affixtest.Fault{Status: 400})
	var sink eventSink
	p := h.process("d1", nil)
	r := p.rotator(func(o *rotator.Options) { o.Events = sink.add })
	out, _ := h.rotate(ctx, p, r, h.once())
	if out.Result != rotator.ResultAborted {
		t.Fatalf("outcome %+v", out)
	}
	eq(t, "events", sink.types(), []string{notify.EventRotationStarted, notify.EventRotationAborted})
	ab := sink.events()[1]
	if ab.RotationID != out.RotationID || ab.Phase != "stable" || !strings.Contains(ab.Error, "400") || ab.Client != "c1" {
		t.Fatalf("aborted event %+v", ab)
	}
}

// TestEventFailed: a rotation that cannot run (no record) gives
// rotation.failed with why, and nothing else.
func TestEventFailed(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	var sink eventSink
	p := h.process("once-1", nil)
	r := p.rotator(func(o *rotator.Options) { o.Events = sink.add })
	c := p.client()
	c.VaultPath = h.path + "-missing"
	out, err := r.Rotate(ctx, c, h.once())
	if err == nil || out.Result != rotator.ResultFailed {
		t.Fatalf("outcome %+v %v", out, err)
	}
	eq(t, "events", sink.types(), []string{notify.EventRotationFailed})
	if e := sink.events()[0]; e.VaultPath != c.VaultPath || e.Error != err.Error() || e.InstanceID != "once-1" {
		t.Fatalf("failed event %+v", e)
	}
}

// TestEventOperatorAction: an operator action gives operator.action (what,
// who, why, when) from the process that took it, and a daemon that then
// reads the record reports the same event under the same id (receivers
// deduplicate on webhook-id).
func TestEventOperatorAction(t *testing.T) {
	f, c := actionFixture(t)
	clock := f.clock
	mem := vaultmem.New("secret")
	ctx := context.Background()
	// The daemon starts before the action (it reports actions taken since).
	var dsink eventSink
	daemon := rotator.New(rotator.Options{InstanceID: "pod-a", Store: mem, Clock: clock, Events: dsink.add})
	overlapRecord(t, mem, clock.Now().Add(time.Hour))
	clock.Advance(time.Minute)

	var sink eventSink
	alice := rotator.New(rotator.Options{InstanceID: "alice-cli", Store: mem, Clock: clock, Events: sink.add})
	until, err := alice.ExtendGrace(ctx, c, 6*time.Hour, rotator.Audit{By: "token-alice", Reason: "slow consumers"})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "events of the acting process", sink.types(), []string{notify.EventOperatorAction})
	e := sink.events()[0]
	if e.Action == nil || e.Action.Action != rotator.ActionExtendGrace || e.Action.By != "token-alice" || e.Action.Reason != "slow consumers" ||
		!e.Action.At.Equal(clock.Now()) || e.RotationID != "r1" || e.Phase != "overlap" || !e.GraceUntil.Equal(until) || e.InstanceID != "alice-cli" {
		t.Fatalf("operator.action %+v (action %+v)", e, e.Action)
	}

	// The daemon reads the record (its first step), reports the action,
	// then waits for the grace: stop it there.
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _, _ = daemon.Rotate(dctx, c, rotator.Trigger{Reason: rotator.ReasonStartup}); close(done) }()
	if err := clock.BlockUntilContext(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	var seen []rotator.Event
	for _, d := range dsink.events() {
		if d.Type == notify.EventOperatorAction {
			seen = append(seen, d)
		}
	}
	if len(seen) != 1 || seen[0].ID != e.ID || seen[0].InstanceID != "pod-a" {
		t.Fatalf("the daemon reported %+v, want the action once with id %s", seen, e.ID)
	}
}

// TestHostileReceiversLeaveTheRotationOnTime: webhooks that hang, answer
// 500, redirect, answer an endless body, close the connection, refuse
// connections, or have a full queue change nothing in a real rotation:
// every event is handed over at once (the rotator never waits on
// delivery), the old secret is dropped on time, a good receiver beside them
// gets every event, and each failure is counted.
func TestHostileReceiversLeaveTheRotationOnTime(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	release := make(chan struct{})
	defer close(release) // before the servers' cleanups, which wait for their handlers
	serve := func(f http.HandlerFunc) string {
		s := httptest.NewServer(f)
		t.Cleanup(s.Close)
		return s.URL
	}
	endless := func(w http.ResponseWriter) {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 16 << 10 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
	hang := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then the server sees the client go
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
	var followed sync.Once
	redirected := false
	target := serve(func(w http.ResponseWriter, r *http.Request) { followed.Do(func() { redirected = true }) })
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := "http://" + ln.Addr().String()
	ln.Close()
	hostile := map[string]string{
		"hangs":    serve(hang),
		"500":      serve(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }),
		"redirect": serve(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target, http.StatusFound) }),
		"endless":  serve(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502); endless(w) }),
		"closes": serve(func(w http.ResponseWriter, r *http.Request) {
			if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
				c.Close()
			}
		}),
		"refused": refused,
	}
	good := newHook(t)
	eps := []notify.Endpoint{{Name: "good", URL: good.srv.URL, Keys: hookKeys(t)}}
	for name, url := range hostile {
		eps = append(eps, notify.Endpoint{Name: name, URL: url, Keys: hookKeys(t), Timeout: 300 * time.Millisecond, MaxElapsed: 500 * time.Millisecond})
	}
	// A hung receiver with a queue of one: its third event finds the queue
	// full and is dropped.
	eps = append(eps, notify.Endpoint{Name: "full", URL: serve(hang), Keys: hookKeys(t), Timeout: time.Second, MaxElapsed: time.Second, QueueSize: 1})
	reg := prometheus.NewRegistry()
	n := notify.New(notify.Options{Metrics: notify.NewMetrics(reg), Endpoints: eps, RetryInitial: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond})

	var slowest time.Duration
	var mu sync.Mutex
	p := h.process("d1", nil)
	r := p.rotator(func(o *rotator.Options) {
		o.Events = func(e rotator.Event) {
			start := time.Now()
			n.Send(e.Message())
			mu.Lock()
			slowest = max(slowest, time.Since(start))
			mu.Unlock()
		}
	})
	start := time.Now()
	out, err := h.rotate(ctx, p, r, h.once())
	took := time.Since(start)
	if err != nil || out.Result != rotator.ResultSuccess {
		t.Fatalf("rotation: %+v %v", out, err)
	}
	reqs := h.fake.Requests()
	eq(t, "requests", h.requests(), []string{"200[N1,S0]", "200[N1]"})
	// On time: dropped at the first step of the fake clock at or after
	// grace_until, as without notifications.
	grace := reqs[0].Time.Add(h.grace)
	if late := reqs[1].Time.Sub(grace); late < 0 || late >= time.Second {
		t.Fatalf("old secret dropped %s after grace_until", late)
	}
	// A blocked hand-over would wait for the full queue's attempt in
	// flight (1s).
	if slowest > 250*time.Millisecond {
		t.Fatalf("handing an event over took %s", slowest)
	}
	t.Logf("rotation took %s of wall time; the slowest hand-over %s", took, slowest)

	// Every hostile receiver's retries end within a few seconds (the hung
	// ones: three events of two 300ms or 1s attempts each).
	closeNotifier(t, n, 20*time.Second)
	for _, ev := range []string{notify.EventRotationStarted, notify.EventRotationOverlap, notify.EventRotationCompleted} {
		if d := notifications(t, reg, ev, notify.ResultDelivered); d != 1 {
			t.Errorf("%s delivered %d times, want 1 (the good receiver)", ev, d)
		}
		if f := notifications(t, reg, ev, notify.ResultFailed); f < len(hostile) {
			t.Errorf("%s failed %d times, want at least %d (each hostile receiver)", ev, f, len(hostile))
		}
	}
	if d := notifications(t, reg, notify.EventRotationCompleted, notify.ResultDropped); d != 1 {
		t.Errorf("completed dropped %d times, want 1 (the full queue)", d)
	}
	if len(good.payloads()) != 3 {
		t.Errorf("the good receiver got %d events", len(good.payloads()))
	}
	if redirected {
		t.Error("a redirect was followed")
	}
}

// TestBootstrapReportsOverlap: a bootstrap rotation makes its new secret
// current at once; consumers that refresh on rotation.overlap need that
// event too (there is no grace to wait for).
func TestBootstrapReportsOverlap(t *testing.T) {
	e := newMemHarness(t)
	var sink eventSink
	op := e.proc("host/once-1")
	c := op.client()
	c.VaultPath, c.Bootstrap = "affix/brand-new", true
	run := e.rotate(op, op.rotator(func(o *rotator.Options) { o.Events = sink.add }), c, e.once())
	e.drive(time.Second, time.Minute, run.finished)
	if run.err != nil || run.out.Result != rotator.ResultSuccess {
		t.Fatalf("bootstrap: %s", run)
	}
	eq(t, "bootstrap events", sink.types(), []string{notify.EventRotationStarted, notify.EventRotationOverlap, notify.EventRotationCompleted})
}
