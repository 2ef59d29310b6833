package pace

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// waitAsync runs p.Wait in a goroutine and returns a channel closed with its
// result.
func waitAsync(ctx context.Context, p *Pacer) <-chan error {
	done := make(chan error, 1)
	go func() { done <- p.Wait(ctx) }()
	return done
}

// advanceTo moves the fake clock to t0+d once w goroutines sleep on it.
func advanceTo(t *testing.T, clk *clockwork.FakeClock, t0 time.Time, d time.Duration, w int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, w); err != nil {
		t.Fatalf("waiting for %d sleepers: %v", w, err)
	}
	clk.Advance(t0.Add(d).Sub(clk.Now()))
}

func notYet(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s: Wait returned early (err %v)", what, err)
	case <-time.After(20 * time.Millisecond):
	}
}

func returned(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Wait did not return", what)
	}
}

func TestRateIsPaced(t *testing.T) {
	clk := clockwork.NewFakeClock()
	t0 := clk.Now()
	p := New(10, 1, clk) // one request per 100ms
	ctx := context.Background()
	returned(t, waitAsync(ctx, p), "first request (burst)")
	done := waitAsync(ctx, p)
	advanceTo(t, clk, t0, 99*time.Millisecond, 1)
	notYet(t, done, "second request at 99ms")
	advanceTo(t, clk, t0, 100*time.Millisecond, 1)
	returned(t, done, "second request at 100ms")
}

func TestNoRateLimitStillHolds(t *testing.T) {
	clk := clockwork.NewFakeClock()
	t0 := clk.Now()
	p := New(0, 0, clk)
	for range 100 {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	p.Throttle(3 * time.Second)
	done := waitAsync(context.Background(), p)
	advanceTo(t, clk, t0, 3*time.Second-time.Millisecond, 1)
	notYet(t, done, "1ms before the floor")
	advanceTo(t, clk, t0, 3*time.Second, 1)
	returned(t, done, "at the floor")
}

// A 429 heard while a caller waits for its token holds that caller too: no
// request before the floor, whoever was refused.
func TestHoldDuringTokenWait(t *testing.T) {
	clk := clockwork.NewFakeClock()
	t0 := clk.Now()
	p := New(1, 1, clk)
	ctx := context.Background()
	returned(t, waitAsync(ctx, p), "first request")
	done := waitAsync(ctx, p) // its token comes at 1s
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	p.Throttle(10 * time.Second) // another client's request got 429, Retry-After: 10
	advanceTo(t, clk, t0, time.Second, 1)
	notYet(t, done, "token ready at 1s but held until 10s")
	advanceTo(t, clk, t0, 10*time.Second-time.Millisecond, 1)
	notYet(t, done, "1ms before the floor")
	// Past the floor it still needs a token: the one it took at 1s is spent.
	advanceTo(t, clk, t0, 10*time.Second, 1)
	returned(t, done, "at the floor")
	if p.Holds() != 1 {
		t.Fatalf("Holds() = %d, want 1", p.Holds())
	}
}

func TestHoldsNeverShorten(t *testing.T) {
	clk := clockwork.NewFakeClock()
	t0 := clk.Now()
	p := New(0, 0, clk)
	p.Throttle(30 * time.Second)
	p.Throttle(time.Second)
	p.Throttle(0) // no Retry-After: DefaultHold, shorter still
	done := waitAsync(context.Background(), p)
	advanceTo(t, clk, t0, 29*time.Second, 1)
	notYet(t, done, "at 29s after a 30s hold")
	advanceTo(t, clk, t0, 30*time.Second, 1)
	returned(t, done, "at 30s")

	t1 := clk.Now()
	p.Throttle(0)
	done = waitAsync(context.Background(), p)
	advanceTo(t, clk, t1, DefaultHold-time.Millisecond, 1)
	notYet(t, done, "before DefaultHold")
	advanceTo(t, clk, t1, DefaultHold, 1)
	returned(t, done, "at DefaultHold")
}

func TestCancelledWaitSendsNothingAndGivesBackItsToken(t *testing.T) {
	clk := clockwork.NewFakeClock()
	t0 := clk.Now()
	p := New(1, 1, clk)
	returned(t, waitAsync(context.Background(), p), "first request")
	ctx, cancel := context.WithCancel(context.Background())
	done := waitAsync(ctx, p)
	if err := clk.BlockUntilContext(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Wait = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled Wait did not return")
	}
	// The cancelled reservation was given back: the next caller gets the
	// token at 1s, not 2s.
	done = waitAsync(context.Background(), p)
	advanceTo(t, clk, t0, time.Second, 1)
	returned(t, done, "next request at 1s")
}

func TestConcurrentCallersAreSpaced(t *testing.T) {
	clk := clockwork.NewFakeClock()
	t0 := clk.Now()
	p := New(100, 1, clk)
	const n = 50
	times := make(chan time.Time, n)
	for range n {
		go func() {
			if err := p.Wait(context.Background()); err == nil {
				times <- clk.Now()
			}
		}()
	}
	got := 0
	for got < n {
		select {
		case <-times:
			got++
		case <-time.After(time.Millisecond):
			clk.Advance(time.Millisecond)
		}
	}
	// n requests at 100/s with burst 1 need (n-1)*10ms.
	if el := clk.Now().Sub(t0); el < (n-1)*10*time.Millisecond {
		t.Fatalf("%d requests admitted in %s, faster than 100/s", n, el)
	}
}
