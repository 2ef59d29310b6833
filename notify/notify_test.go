package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/affix-rotator/affix-rotator/internal/metrictest"
	"github.com/affix-rotator/affix-rotator/notify"
)

// receiver is a webhook receiver that verifies every request with
// notify.Verify and keeps what it got.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	bad    []error
	answer func(w http.ResponseWriter, r *http.Request) // nil: 204
	hits   atomic.Int32
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, answer func(http.ResponseWriter, *http.Request)) *receiver {
	rc := &receiver{t: t, answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		err := notify.Verify(vectorKey, r.Header, body, time.Now(), time.Minute)
		rc.mu.Lock()
		if err != nil {
			rc.bad = append(rc.bad, err)
		} else {
			rc.got = append(rc.got, received{r.Header.Clone(), body})
		}
		rc.mu.Unlock()
		if rc.answer != nil {
			rc.answer(w, r)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) received() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.bad) > 0 {
		rc.t.Errorf("requests that failed verification: %v", rc.bad)
	}
	return append([]received(nil), rc.got...)
}

func keys(t *testing.T) []notify.Key {
	k, err := notify.ParseKeys(vectorKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newNotifier(t *testing.T, reg *prometheus.Registry, opt notify.Options) *notify.Notifier {
	if reg != nil {
		opt.Metrics = notify.NewMetrics(reg)
	}
	if opt.RetryInitial == 0 {
		opt.RetryInitial, opt.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	}
	n := notify.New(opt)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Close(ctx)
	})
	return n
}

// count is affix_rotator_notifications_total{event, result}.
func count(t *testing.T, reg *prometheus.Registry, event, result string) int {
	t.Helper()
	return int(metrictest.Value(t, reg, "affix_rotator_notifications_total", "event", event, "result", result))
}

func flush(t *testing.T, n *notify.Notifier, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return n.Close(ctx)
}

// TestDeliversSignedInOrder: every event reaches the receiver in the order
// sent, signed (Verify passes), with the Standard Webhooks payload shape,
// and is counted as delivered; a filter keeps other types out.
func TestDeliversSignedInOrder(t *testing.T) {
	rc := newReceiver(t, nil)
	only := newReceiver(t, nil)
	reg := prometheus.NewRegistry()
	n := newNotifier(t, reg, notify.Options{Endpoints: []notify.Endpoint{
		{Name: "notifications[0]", URL: rc.srv.URL, Keys: keys(t)},
		{Name: "notifications[1]", URL: only.srv.URL, Keys: keys(t), Events: []string{notify.EventRotationOverlap}},
	}})
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	types := []string{notify.EventRotationStarted, notify.EventRotationOverlap, notify.EventRotationCompleted}
	for i, typ := range types {
		n.Send(notify.Message{ID: "msg_" + typ, Type: typ, Time: at.Add(time.Duration(i) * time.Second), Data: map[string]string{"client": "prod"}})
	}
	if err := flush(t, n, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got := rc.received()
	if len(got) != 3 {
		t.Fatalf("received %d events, want 3", len(got))
	}
	for i, r := range got {
		var p struct {
			Type      string            `json:"type"`
			Timestamp time.Time         `json:"timestamp"`
			Data      map[string]string `json:"data"`
		}
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		if p.Type != types[i] || !p.Timestamp.Equal(at.Add(time.Duration(i)*time.Second)) || p.Data["client"] != "prod" {
			t.Fatalf("event %d: %s", i, r.body)
		}
		if r.header.Get(notify.HeaderID) != "msg_"+types[i] || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("event %d headers: %v", i, r.header)
		}
	}
	if o := only.received(); len(o) != 1 || !strings.Contains(string(o[0].body), notify.EventRotationOverlap) {
		t.Fatalf("the filtered webhook got %d events", len(o))
	}
	if c := count(t, reg, notify.EventRotationOverlap, notify.ResultDelivered); c != 2 {
		t.Fatalf("overlap delivered %d times, want 2 (one per webhook)", c)
	}
	if c := testutil.CollectAndCount(reg, "affix_rotator_notification_delivery_seconds"); c != 2 {
		t.Fatalf("latency histogram: %d series, want 2 (one per webhook)", c)
	}
}

// TestHostileReceivers: each kind of bad receiver ends in a bounded time
// as a failure (or, for an endless answer to a 200, a delivery read only
// in part), counted; none follows a redirect.
func TestHostileReceivers(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var redirected atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { redirected.Add(1) }))
	t.Cleanup(target.Close)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	refusedURL := "http://" + closed.Addr().String() + "/hook"
	closed.Close()

	endlessBody := func(w http.ResponseWriter) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for i := 0; i < 16<<10; i++ { // up to 1 GiB, until the client goes
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
	endless := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		endlessBody(w)
	}
	cases := []struct {
		name     string
		answer   func(http.ResponseWriter, *http.Request)
		url      string
		want     string
		attempts func(int32) bool
	}{
		{"hangs", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, "", notify.ResultFailed, nil}, // one attempt or two, as the machine's load lets the 300ms timeout fire
		{"500", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }, "", notify.ResultFailed, func(n int32) bool { return n >= 3 }},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
		}, "", notify.ResultFailed, func(n int32) bool { return n == 1 }},
		{"410 gone", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) }, "", notify.ResultFailed, func(n int32) bool { return n == 1 }},
		{"endless 200 answer", endless, "", notify.ResultDelivered, func(n int32) bool { return n == 1 }},
		{"endless 500 answer", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			endlessBody(w)
		}, "", notify.ResultFailed, nil},
		{"closes the connection", func(w http.ResponseWriter, r *http.Request) {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
		}, "", notify.ResultFailed, func(n int32) bool { return n >= 2 }},
		{"refuses connections", nil, refusedURL, notify.ResultFailed, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := newReceiver(t, c.answer)
			url := rc.srv.URL
			if c.url != "" {
				url = c.url
			}
			reg := prometheus.NewRegistry()
			n := newNotifier(t, reg, notify.Options{Endpoints: []notify.Endpoint{{Name: "notifications[0]", URL: url, Keys: keys(t), Timeout: 300 * time.Millisecond, MaxElapsed: 500 * time.Millisecond}}})
			start := time.Now()
			n.Send(notify.Message{Type: notify.EventRotationOverlap, Time: time.Now(), Data: map[string]string{}})
			if err := flush(t, n, 10*time.Second); err != nil {
				t.Fatalf("not flushed: %v", err)
			}
			// One attempt is at most 300ms, and none starts after 500ms.
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %s", d)
			}
			if got := count(t, reg, notify.EventRotationOverlap, c.want); got != 1 {
				t.Fatalf("%s = %d, want 1", c.want, got)
			}
			if c.attempts != nil && !c.attempts(rc.hits.Load()) {
				t.Fatalf("%d attempts", rc.hits.Load())
			}
		})
	}
	if redirected.Load() != 0 {
		t.Fatal("a redirect was followed")
	}
}

// TestQueueFullDropsAndNeverBlocks: with the receiver hung, Send returns at
// once however many events come; what does not fit the queue is dropped
// and counted, and every event is accounted for.
func TestQueueFullDropsAndNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	reg := prometheus.NewRegistry()
	n := newNotifier(t, reg, notify.Options{Endpoints: []notify.Endpoint{{Name: "notifications[0]", URL: rc.srv.URL, Keys: keys(t), Timeout: time.Minute, MaxElapsed: time.Minute, QueueSize: 3}}})
	const sent = 1000
	start := time.Now()
	for range sent {
		n.Send(notify.Message{Type: notify.EventRotationStarted, Time: time.Now(), Data: struct{}{}})
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("%d Sends took %s", sent, d)
	}
	if dropped := count(t, reg, notify.EventRotationStarted, notify.ResultDropped); dropped < sent-4 {
		t.Fatalf("dropped %d of %d with a queue of 3", dropped, sent)
	}
	// Shut down with the receiver still hung: bounded, and all counted.
	start = time.Now()
	if err := flush(t, n, 200*time.Millisecond); err == nil {
		t.Fatal("Close reports a flush that did not happen")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %s", d)
	}
	total := 0
	for _, r := range []string{notify.ResultDelivered, notify.ResultFailed, notify.ResultDropped} {
		total += count(t, reg, notify.EventRotationStarted, r)
	}
	if total != sent {
		t.Fatalf("%d events counted, want %d", total, sent)
	}
	n.Send(notify.Message{Type: notify.EventRotationStarted, Time: time.Now(), Data: struct{}{}})
	if count(t, reg, notify.EventRotationStarted, notify.ResultDropped) < sent-3 {
		t.Fatal("a Send after Close was not counted as dropped")
	}
}

// fakeReceiver answers on the caller's goroutine (no network), records
// each attempt's time on the fake clock, and says whether an attempt is in
// flight, so that a test advances the clock only while the worker waits
// on its backoff timer.
type fakeReceiver struct {
	clock    *clockwork.FakeClock
	answer   func(n int) *http.Response
	mu       sync.Mutex
	times    []time.Time
	inflight bool
}

func (f *fakeReceiver) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.inflight = true
	f.times = append(f.times, f.clock.Now())
	n := len(f.times)
	f.mu.Unlock()
	if err := notify.Verify(vectorKey, r.Header, mustRead(r), f.clock.Now(), time.Minute); err != nil {
		panic(err)
	}
	resp := f.answer(n)
	resp.Body = io.NopCloser(strings.NewReader(""))
	resp.Request = r
	go func() { // the worker is past the request once it waits on the clock again
		time.Sleep(5 * time.Millisecond)
		f.mu.Lock()
		f.inflight = false
		f.mu.Unlock()
	}()
	return resp, nil
}

func mustRead(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}

func (f *fakeReceiver) attempts() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times...)
}

// drive advances the fake clock by step whenever the worker waits on it
// between attempts, until done holds.
func (f *fakeReceiver) drive(t *testing.T, step time.Duration, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("not done after %d attempts", len(f.attempts()))
		}
		f.mu.Lock()
		busy := f.inflight
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := f.clock.BlockUntilContext(ctx, 1)
		cancel()
		if err == nil && !busy {
			f.clock.Advance(step)
			// Let the worker run: an advance while it is between two
			// waits (a request's timeout and the backoff) would move the
			// attempts it schedules.
			time.Sleep(time.Millisecond)
		}
	}
}

// TestRetriesBackOffWithinMaxElapsed drives the retry schedule on a fake
// clock: attempts grow apart (capped), none starts after max_elapsed, and
// the event is then counted as failed.
func TestRetriesBackOffWithinMaxElapsed(t *testing.T) {
	clock := clockwork.NewFakeClock()
	f := &fakeReceiver{clock: clock, answer: func(int) *http.Response {
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}}
	}}
	reg := prometheus.NewRegistry()
	n := newNotifier(t, reg, notify.Options{Clock: clock, RetryInitial: time.Second, RetryMax: 8 * time.Second, Client: &http.Client{Transport: f},
		Endpoints: []notify.Endpoint{{Name: "notifications[0]", URL: "https://hooks.example/x", Keys: keys(t), Timeout: time.Hour, MaxElapsed: time.Minute}}})
	start := clock.Now()
	n.Send(notify.Message{Type: notify.EventRotationFailed, Time: start, Data: struct{}{}})
	f.drive(t, 100*time.Millisecond, func() bool { return count(t, reg, notify.EventRotationFailed, notify.ResultFailed) > 0 })
	times := f.attempts()
	// Nominal delays 1, 2, 4, 8, 8, … s, each drawn from [d/2, d]: at
	// least 8 attempts fit in a minute.
	if len(times) < 8 {
		t.Fatalf("%d attempts in a minute of backoff from 1s to 8s", len(times))
	}
	const slack = 500 * time.Millisecond // a few clock steps taken while the worker was between two waits
	for i := 1; i < len(times); i++ {
		gap := times[i].Sub(times[i-1])
		if gap < 500*time.Millisecond || gap > 8*time.Second+slack {
			t.Fatalf("gap %d: %s (attempts at %v)", i, gap, times)
		}
		if times[i].Sub(start) > time.Minute+slack {
			t.Fatalf("attempt %d at %s, after max_elapsed", i, times[i].Sub(start))
		}
	}
	if g := times[4].Sub(times[3]); g < 4*time.Second {
		t.Fatalf("the backoff did not grow: gap 4 is %s", g)
	}
	if count(t, reg, notify.EventRotationFailed, notify.ResultDelivered) != 0 {
		t.Fatal("counted as delivered")
	}
}

// TestRetryAfterIsAFloor: a 429's Retry-After, in seconds or as an HTTP
// date, delays the next attempt at least that long, beyond the backoff's
// cap.
func TestRetryAfterIsAFloor(t *testing.T) {
	for _, form := range []string{"seconds", "http-date"} {
		t.Run(form, func(t *testing.T) {
			clock := clockwork.NewFakeClock()
			f := &fakeReceiver{clock: clock, answer: func(n int) *http.Response {
				if n == 1 {
					v := "20"
					if form == "http-date" {
						v = clock.Now().Add(20 * time.Second).UTC().Format(http.TimeFormat)
					}
					return &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {v}}}
				}
				return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}}
			}}
			reg := prometheus.NewRegistry()
			n := newNotifier(t, reg, notify.Options{Clock: clock, RetryInitial: time.Second, RetryMax: 2 * time.Second, Client: &http.Client{Transport: f},
				Endpoints: []notify.Endpoint{{Name: "n", URL: "https://hooks.example/x", Keys: keys(t), Timeout: time.Hour, MaxElapsed: time.Minute}}})
			n.Send(notify.Message{Type: notify.EventRotationStarted, Time: clock.Now(), Data: struct{}{}})
			f.drive(t, time.Second, func() bool { return count(t, reg, notify.EventRotationStarted, notify.ResultDelivered) > 0 })
			times := f.attempts()
			// An HTTP date has whole seconds: up to 1 s less.
			if len(times) != 2 || times[1].Sub(times[0]) < 19*time.Second {
				t.Fatalf("attempts at %v", times)
			}
		})
	}
}

// TestWebhookLabel: the outcomes and the delivery latency carry a
// `webhook` label, the URL's host and port, never its path or query.
func TestWebhookLabel(t *testing.T) {
	good := newReceiver(t, nil)
	bad := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	reg := prometheus.NewRegistry()
	n := newNotifier(t, reg, notify.Options{Endpoints: []notify.Endpoint{
		{Name: "good", URL: good.srv.URL + "/hooks/tok-SECRETPATH?token=SECRETQUERY", Keys: keys(t)},
		{Name: "bad", URL: bad.srv.URL + "/gone", Keys: keys(t)},
	}})
	n.Send(notify.Message{Type: notify.EventRotationStarted, Time: time.Now(), Data: struct{}{}})
	if err := flush(t, n, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, s := range metrictest.Gather(t, reg) {
		// Label names cannot hold either: only a value can.
		if strings.Contains(s.Labels, "SECRET") || strings.Contains(s.Labels, "/") {
			t.Errorf("%s: a label in {%s} holds a path or query", s.Name, s.Labels)
		}
	}
	gh, bh := strings.TrimPrefix(good.srv.URL, "http://"), strings.TrimPrefix(bad.srv.URL, "http://")
	got := map[string]float64{}
	for _, h := range []string{gh, bh} {
		for _, r := range []string{"delivered", "failed"} {
			got[h+" "+r] = metrictest.Value(t, reg, "affix_rotator_notifications_by_webhook_total", "webhook", h, "result", r)
		}
		got[h+" latency"] = metrictest.Value(t, reg, "affix_rotator_notification_delivery_seconds_count", "webhook", h)
	}
	for k, want := range map[string]float64{gh + " delivered": 1, gh + " failed": 0, bh + " failed": 1, bh + " delivered": 0, gh + " latency": 1} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], want, got)
		}
	}
	if notify.WebhookLabel("https://Hooks.Example:8443/x/y?z=1") != "hooks.example:8443" {
		t.Errorf("WebhookLabel: %q", notify.WebhookLabel("https://Hooks.Example:8443/x/y?z=1"))
	}
}
