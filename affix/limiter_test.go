package affix_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

type countingLimiter struct {
	waits int
	err   error
}

func (l *countingLimiter) Wait(context.Context) error { l.waits++; return l.err }

// TestLimiterPacesEveryRequest: each request waits on the account's limiter
// first; a limiter that gives up stops the request before it is sent.
func TestLimiterPacesEveryRequest(t *testing.T) {
	fake := affixtest.NewServer()
	defer fake.Close()
	fake.AddClient("k", "cid", "a")
	lim := &countingLimiter{}
	c, err := affix.New(fake.URL, secret.New("k"), affix.WithLimiter(lim))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: []secret.Value{secret.New("a")}}); err != nil {
			t.Fatal(err)
		}
	}
	if lim.waits != 3 {
		t.Fatalf("limiter consulted %d times for 3 requests", lim.waits)
	}
	lim.err = errors.New("would exceed context deadline")
	if _, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: []secret.Value{secret.New("a")}}); err == nil {
		t.Fatal("request sent although the limiter refused")
	}
	if n := len(fake.Requests()); n != 3 {
		t.Fatalf("%d requests reached Affix, want 3", n)
	}
}

// TestOddSecretsRoundTrip: secrets with quotes, backslashes, unicode and
// HTML characters are sent and compared exactly (no escaping surprises).
func TestOddSecretsRoundTrip(t *testing.T) {
	fake := affixtest.NewServer()
	defer fake.Close()
	odd := []string{`a"b\c`, "ünï-cödé-🔑", "<script>&amp;</script>", " lead-and-trail "}
	fake.AddClient("k", "cid", "x")
	c, _ := affix.New(fake.URL, secret.New("k"))
	var vals []secret.Value
	for _, o := range odd {
		vals = append(vals, secret.New(o))
	}
	if _, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: vals}); err != nil {
		t.Fatal(err)
	}
	for _, o := range odd {
		if !fake.Accepts("k", o) {
			t.Fatalf("%q not accepted as sent", o)
		}
	}
}

type throttleRecorder struct {
	countingLimiter
	holds []time.Duration
}

func (l *throttleRecorder) Throttle(d time.Duration) { l.holds = append(l.holds, d) }

// TestThrottlerHearsEvery429: a limiter that can hold the account is told of
// each 429 with its Retry-After (0 when absent or unusable), and of nothing
// else.
func TestThrottlerHearsEvery429(t *testing.T) {
	fake := affixtest.NewServer()
	defer fake.Close()
	fake.AddClient("k", "cid", "a")
	lim := &throttleRecorder{}
	c, err := affix.New(fake.URL, secret.New("k"), affix.WithLimiter(lim))
	if err != nil {
		t.Fatal(err)
	}
	fake.Inject(
		affixtest.Fault{Status: 429, RetryAfter: "30"},
		affixtest.Fault{Status: 500},
		affixtest.Fault{Status: 429, RetryAfter: "soon"},
		affixtest.Fault{Status: 400},
	)
	for range 5 {
		_, _ = c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: []secret.Value{secret.New("a")}})
	}
	want := []time.Duration{30 * time.Second, 0}
	if !slices.Equal(lim.holds, want) {
		t.Fatalf("Throttle calls %v, want %v", lim.holds, want)
	}
}
