// Package notify delivers affix-rotator's webhook notifications, signed
// the Standard Webhooks way (https://www.standardwebhooks.com/), and
// verifies them (Verify, for consumers and tests). Delivery is best
// effort and never holds up its caller: Send puts the event in one
// bounded queue per webhook and returns; when a queue is full the event is
// dropped and counted. One goroutine per webhook POSTs its queue in order,
// with a timeout per attempt and capped, jittered exponential backoff for
// a bounded time; redirects are not followed and at most a few KiB of an
// answer are read. Time comes from an injected clock.
package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/backoff"
	"github.com/affix-rotator/affix-rotator/internal/version"
)

// Event types: the "type" of every notification (docs/notifications.md).
const (
	EventRotationStarted   = "rotation.started"   // a new secret was generated and stored as pending
	EventRotationOverlap   = "rotation.overlap"   // the new secret is current in Vault: refresh now
	EventRotationCompleted = "rotation.completed" // the old secret was dropped
	EventRotationAborted   = "rotation.aborted"   // Affix rejected the new secret; the old one stays current
	EventRotationFailed    = "rotation.failed"    // a rotation run ended without reaching stable
	EventOperatorAction    = "operator.action"    // an operator acted on the record
)

// EventTypes lists every event type, in the order of a rotation.
var EventTypes = []string{EventRotationStarted, EventRotationOverlap, EventRotationCompleted, EventRotationAborted, EventRotationFailed, EventOperatorAction}

// Delivery outcomes, the values of the `result` label of
// affix_rotator_notifications_total.
const (
	ResultDelivered = "delivered" // a 2xx answer
	ResultFailed    = "failed"    // attempted and given up (retries spent, a redirect, 410 Gone, or shut down mid-retry)
	ResultDropped   = "dropped"   // never attempted: the queue was full, or still queued at shutdown
)

// Defaults of an Endpoint's zero fields.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultMaxElapsed = 5 * time.Minute
	DefaultQueueSize  = 100
)

// maxAnswer is how much of a receiver's answer is read (and discarded)
// before the connection is closed.
const maxAnswer = 4 << 10

// Endpoint is one webhook receiver.
type Endpoint struct {
	// Name identifies the endpoint in logs ("notifications[0]"); its URL
	// is never logged beyond scheme and host, since a path may hold a token.
	Name string
	URL  string
	// Keys sign every request (one signature each).
	Keys []Key
	// Events limits what is sent here; empty: every event.
	Events []string
	// Timeout bounds one attempt, answer included (default DefaultTimeout).
	Timeout time.Duration
	// MaxElapsed bounds the retries of one event: no attempt starts later
	// than this after the first (0: one attempt only).
	MaxElapsed time.Duration
	// QueueSize is how many events may wait for this endpoint (default
	// DefaultQueueSize); more are dropped.
	QueueSize int
}

// Options configure a Notifier.
type Options struct {
	Endpoints []Endpoint
	Clock     clockwork.Clock // default: the real clock
	Logger    *zap.Logger     // default: none
	Metrics   *Metrics        // default: none
	// Client sends the requests. Default: a client that follows no
	// redirect. A client given here should not follow them either.
	Client *http.Client
	// RetryInitial and RetryMax shape the backoff between attempts
	// (default 1s and 30s), each delay drawn from [d/2, d].
	RetryInitial, RetryMax time.Duration
	Rand                   *mrand.Rand // jitter (nil: random)
	// Redact, when set, is applied to every payload before it is signed
	// and queued: the one redaction of outside text (an error from Affix
	// or Vault in a payload's data) by the secrets in play.
	Redact func(string) string
}

// Message is one event to deliver.
type Message struct {
	// ID is the webhook-id: the same for every attempt and for every
	// process that reports the same event, so receivers can deduplicate on
	// it. Empty: a random one.
	ID   string
	Type string
	// Time is when the event happened (the payload's "timestamp").
	Time time.Time
	// Data is the payload's "data"; it must marshal to JSON and must never
	// hold a secret.
	Data any
}

// item is a message ready to send: its body is signed again at each
// attempt, with that attempt's timestamp.
type item struct {
	id, typ string
	body    []byte
	queued  time.Time
}

// Notifier delivers messages to its endpoints. Its methods are safe for
// concurrent use.
type Notifier struct {
	opt     Options
	clock   clockwork.Clock
	log     *zap.Logger
	workers []*worker

	mu     sync.RWMutex // guards closed against Send
	closed bool

	stop context.CancelFunc // ends the workers' attempts and waits (Close)
	done chan struct{}      // closed when every worker has returned
}

type worker struct {
	n     *Notifier
	ep    Endpoint
	host  string // scheme://host, for logs
	label string // the URL's host, the metrics' webhook label
	want  map[string]bool
	queue chan item
	bo    *backoff.Backoff
}

// New starts one delivery goroutine per endpoint. Stop them with Close.
func New(opt Options) *Notifier {
	if opt.Clock == nil {
		opt.Clock = clockwork.NewRealClock()
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.Client == nil {
		opt.Client = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			// A redirect is an answer, not a delivery: it is counted as a
			// failure and never followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if opt.RetryInitial <= 0 {
		opt.RetryInitial = time.Second
	}
	if opt.RetryMax < opt.RetryInitial {
		opt.RetryMax = max(30*time.Second, opt.RetryInitial)
	}
	if opt.Rand == nil {
		opt.Rand = mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{opt: opt, clock: opt.Clock, log: opt.Logger, stop: cancel, done: make(chan struct{})}
	if opt.Metrics != nil {
		opt.Metrics.init()
	}
	var wg sync.WaitGroup
	for _, ep := range opt.Endpoints {
		if ep.Timeout <= 0 {
			ep.Timeout = DefaultTimeout
		}
		if ep.MaxElapsed < 0 {
			ep.MaxElapsed = 0
		}
		if ep.QueueSize <= 0 {
			ep.QueueSize = DefaultQueueSize
		}
		w := &worker{n: n, ep: ep, host: hostOf(ep.URL), label: WebhookLabel(ep.URL), queue: make(chan item, ep.QueueSize),
			bo: backoff.New(opt.RetryInitial, opt.RetryMax, mrand.New(mrand.NewPCG(opt.Rand.Uint64(), opt.Rand.Uint64())))}
		if len(ep.Events) > 0 {
			w.want = map[string]bool{}
			for _, e := range ep.Events {
				w.want[e] = true
			}
		}
		if opt.Metrics != nil {
			opt.Metrics.initWebhook(w.label)
		}
		n.workers = append(n.workers, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	go func() { wg.Wait(); close(n.done) }()
	return n
}

// Send queues m for every endpoint that wants its type and returns at
// once: it never blocks and never fails its caller. An endpoint whose
// queue is full drops it (counted as dropped, and logged); so does a
// Notifier that is closed.
func (n *Notifier) Send(m Message) {
	if m.ID == "" {
		m.ID = RandomID()
	}
	body, err := json.Marshal(struct {
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
		Data      any       `json:"data"`
	}{m.Type, m.Time.UTC(), m.Data})
	if err != nil {
		n.log.Error("notification not sent: cannot encode it", zap.String("event", m.Type), zap.Error(err))
		n.count(nil, m.Type, ResultDropped)
		return
	}
	if n.opt.Redact != nil {
		body = []byte(n.opt.Redact(string(body)))
	}
	it := item{id: m.ID, typ: m.Type, body: body, queued: n.clock.Now()}
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, w := range n.workers {
		if w.want != nil && !w.want[m.Type] {
			continue
		}
		if n.closed {
			n.count(w, m.Type, ResultDropped)
			continue
		}
		select {
		case w.queue <- it:
		default:
			n.log.Warn("notification dropped: the webhook's queue is full (its receiver is slow or down)",
				zap.String("webhook", w.ep.Name), zap.String("host", w.host), zap.String("event", m.Type), zap.String("webhook_id", m.ID), zap.Int("queue_size", cap(w.queue)))
			n.count(w, m.Type, ResultDropped)
		}
	}
}

// Close stops accepting messages and delivers what is queued until ctx
// ends; then attempts in flight are cut short (counted as failed) and what
// is still queued is dropped (counted). It returns ctx's error if the
// queues were not flushed in time. Close is for shutdown: call it once.
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		for _, w := range n.workers {
			close(w.queue)
		}
	}
	n.mu.Unlock()
	select {
	case <-n.done:
		n.stop()
		return nil
	case <-ctx.Done():
	}
	n.stop()
	<-n.done
	return ctx.Err()
}

// Pending returns how many messages wait in the queues (not counting those
// being delivered).
func (n *Notifier) Pending() int {
	total := 0
	for _, w := range n.workers {
		total += len(w.queue)
	}
	return total
}

// count records an outcome of one event for the worker's webhook (nil: an
// event no webhook was given, counted once without a webhook).
func (n *Notifier) count(w *worker, typ, result string) {
	if n.opt.Metrics != nil {
		n.opt.Metrics.outcome(typ, result)
		if w != nil {
			n.opt.Metrics.webhookOutcome(w.label, result)
		}
	}
}

// run delivers the queue in order until it is closed and drained.
func (w *worker) run(ctx context.Context) {
	for it := range w.queue {
		if ctx.Err() != nil {
			w.n.count(w, it.typ, ResultDropped)
			continue
		}
		w.deliver(ctx, it)
	}
}

// deliver attempts it until a 2xx, a permanent failure, or MaxElapsed.
func (w *worker) deliver(ctx context.Context, it item) {
	n := w.n
	first := n.clock.Now()
	w.bo.Reset()
	fields := func(extra ...zap.Field) []zap.Field {
		return append([]zap.Field{zap.String("webhook", w.ep.Name), zap.String("host", w.host), zap.String("event", it.typ), zap.String("webhook_id", it.id)}, extra...)
	}
	for attempt := 1; ; attempt++ {
		status, retryAfter, err := w.post(ctx, it)
		if err == nil {
			n.count(w, it.typ, ResultDelivered)
			if n.opt.Metrics != nil {
				n.opt.Metrics.latency.WithLabelValues(w.label).Observe(n.clock.Since(it.queued).Seconds())
			}
			n.log.Debug("notification delivered", fields(zap.Int("attempt", attempt), zap.Int("status", status))...)
			return
		}
		if ctx.Err() != nil {
			n.log.Warn("notification not delivered: shutting down", fields(zap.Int("attempts", attempt), zap.Error(err))...)
			n.count(w, it.typ, ResultFailed)
			return
		}
		var perm *permanentError
		wait := max(w.bo.Next(), retryAfter)
		// The next attempt's time is decided now: a pause before the timer
		// is set does not move it later.
		next := n.clock.Now().Add(wait)
		switch {
		case errors.As(err, &perm):
			n.log.Warn("notification not delivered: the receiver's answer is final; not retried", fields(zap.Int("attempts", attempt), zap.Error(err))...)
			n.count(w, it.typ, ResultFailed)
			return
		case next.Sub(first) > w.ep.MaxElapsed:
			n.log.Warn("notification not delivered: giving up (max_elapsed)", fields(zap.Int("attempts", attempt), zap.Duration("max_elapsed", w.ep.MaxElapsed), zap.Error(err))...)
			n.count(w, it.typ, ResultFailed)
			return
		}
		n.log.Info("notification attempt failed; will retry", fields(zap.Int("attempt", attempt), zap.Duration("retry_in", wait), zap.Error(err))...)
		t := n.clock.NewTimer(max(n.clock.Until(next), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			n.log.Warn("notification not delivered: shutting down", fields(zap.Int("attempts", attempt))...)
			n.count(w, it.typ, ResultFailed)
			return
		case <-t.Chan():
		}
	}
}

// permanentError is an answer retrying cannot change (a redirect, 410
// Gone).
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

// post makes one attempt: signed with this attempt's timestamp, bounded by
// the endpoint's timeout, reading at most maxAnswer bytes of the answer.
// It returns nil only for a 2xx. Errors never hold the URL's path or
// query (they may carry a token).
func (w *worker) post(ctx context.Context, it item) (status int, retryAfter time.Duration, err error) {
	n := w.n
	actx, cancel := clockwork.WithTimeout(ctx, n.clock, w.ep.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, w.ep.URL, bytes.NewReader(it.body))
	if err != nil {
		return 0, 0, errors.New("cannot build the request (check url)")
	}
	now := n.clock.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "affix-rotator/"+version.Version)
	req.Header.Set(HeaderID, it.id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, Sign(w.ep.Keys, it.id, now, it.body))
	resp, err := n.opt.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		if actx.Err() != nil && ctx.Err() == nil {
			return 0, 0, fmt.Errorf("no answer within %s (timeout)", w.ep.Timeout)
		}
		return 0, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return c, 0, nil
	case c >= 300 && c < 400:
		return c, 0, &permanentError{fmt.Sprintf("answered %d (a redirect): redirects are not followed; set url to the final address", c)}
	case c == http.StatusGone:
		return c, 0, &permanentError{"answered 410 Gone: the receiver wants no more notifications"}
	default:
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), n.clock.Now())
		return c, retryAfter, fmt.Errorf("answered %d", c)
	}
}

// maxRetryAfter caps how long a receiver's Retry-After may hold its queue.
const maxRetryAfter = time.Hour

// parseRetryAfter reads a Retry-After header in either form RFC 9110
// allows: delay-seconds ("120") or an HTTP date ("Wed, 21 Oct 2026
// 07:28:00 GMT", or the obsolete RFC 850 and asctime forms), as a wait from
// now, capped at maxRetryAfter. 0 when absent, malformed or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s <= 0 {
			return 0
		}
		return min(time.Duration(s)*time.Second, maxRetryAfter)
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if d := t.Sub(now); d > 0 {
		return min(d, maxRetryAfter)
	}
	return 0
}

// RandomID returns a new webhook-id: "msg_" and 32 hex digits.
func RandomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "msg_" + hex.EncodeToString(b[:])
}

// WebhookLabel is a webhook's `webhook` label in the metrics: its URL's
// host (and port), never its path or query, which may carry a token.
func WebhookLabel(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return "(invalid url)"
	}
	return strings.ToLower(p.Host)
}

// hostOf returns the scheme and host of u, what logs say of a webhook.
func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(invalid url)"
	}
	return p.Scheme + "://" + p.Host
}
