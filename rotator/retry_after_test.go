package rotator_test

// A 429's Retry-After is a floor for every request of the API key: for the
// client refused, for the account's other clients, for a replica that takes
// the rotation over (the floor is recorded as retry_not_before), and for a
// run that gives up or is stopped. (TestGivenUpRunRecordsFloorOnATakenRecord
// was found by the simulation after issue 9's fixes, in the 12,000-seed run.)

import (
	"context"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/pace"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// TestFenceRetryAfterFloorShared: a 429's Retry-After longer than the lease
// left extends the lease first and is recorded as retry_not_before; a
// replica taking over after a clean stop does not POST before it.
func TestFenceRetryAfterFloorShared(t *testing.T) {
	e := newMemHarness(t)
	e.fake.Inject(affixtest.Fault{Status: 429, RetryAfter: "600"})
	a := e.proc("pod-a")
	runA := e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.quiet()
	floor := e.fake.Requests()[0].Time.Add(600 * time.Second)
	if rnb, err := time.Parse(time.RFC3339Nano, str(e.record(), "retry_not_before")); err != nil || rnb.Before(floor) {
		t.Errorf("after a 429 with Retry-After 600, the record's retry_not_before is %q, want >= %s", str(e.record(), "retry_not_before"), floor.Format(time.RFC3339))
	}
	if lu := e.recordTime("lease_until"); str(e.record(), "lease_owner") != "pod-a" || lu.Before(floor) {
		t.Errorf("pod-a waits 600s with a lease until %s: it must extend its lease before a wait longer than the lease left", lu.Format(time.RFC3339))
	}
	a.stop()
	e.wait(runA)
	b := e.proc("pod-b")
	e.rotate(b, b.rotator(nil), b.client(), e.once())
	e.drive(10*time.Second, 15*time.Minute, func() bool { return len(e.fake.Requests()) > 1 })
	reqs := e.fake.Requests()
	if len(reqs) < 2 {
		t.Fatalf("pod-b never resumed the rotation: %v", e.requests())
	}
	if reqs[1].Time.Before(floor) {
		t.Errorf("pod-b took over and sent [N1,S0] at %s, %s before the Retry-After floor %s that pod-a received",
			reqs[1].Time.Format(time.RFC3339), floor.Sub(reqs[1].Time), floor.Format(time.RFC3339))
	}
}

// Item 5: the 429's floor is in the record, typed.
func TestFenceV2RetryNotBefore(t *testing.T) {
	e := newMemHarness(t)
	e.fake.Inject(affixtest.Fault{Status: 429, RetryAfter: "600"})
	a := e.proc("pod-a")
	e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.quiet()
	floor := e.fake.Requests()[0].Time.Add(600 * time.Second)
	rec, _, err := e.store.Read(context.Background(), e.path)
	if err != nil {
		t.Fatal(err)
	}
	if rec.RetryNotBefore.Before(floor) {
		t.Errorf("record RetryNotBefore = %s after a 429 with Retry-After 600, want >= %s", rec.RetryNotBefore, floor)
	}
}

// TestGivenUpRunRecordsFloorOnATakenRecord (seed 7894): a -once whose lease
// was taken over got a 429 with a 10-minute Retry-After for its stale
// request and was stopped (or gave up); the floor was recorded only with a lease of its own,
// so the process that went on sent into it. A floor binds every process
// that uses the API key: it is now recorded on whatever record is current.
func TestGivenUpRunRecordsFloorOnATakenRecord(t *testing.T) {
	e, a, _, runA, hold := staleSetup(t, false, nil)
	e.fake.Inject(affixtest.Fault{Status: 429, RetryAfter: "600"})
	got429 := e.clock.Now()
	hold.resume()
	e.quiet() // pod-a waits out the floor to re-assert; the operator gives up on it
	a.stop()
	e.wait(runA)
	if !runA.finished() {
		t.Fatalf("pod-a still running: %v", runA)
	}
	floor := e.recordTime("retry_not_before")
	if want := got429.Add(600 * time.Second); floor.Before(want.Add(-time.Second)) {
		t.Errorf("record retry_not_before = %s after pod-a got a 429 with Retry-After 600s at %s and ended; want >= %s (requests %v)",
			floor, got429, want, e.requests())
	}
}

// TestRetryAfterIsAFloor: after a 429 with Retry-After: 30 no request is
// sent before 30 s have passed, although the backoff alone would retry after ≤1 s.
func TestRetryAfterIsAFloor(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	h.fake.Inject(affixtest.Fault{Status: 429, RetryAfter: "30"})
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, h.once())
	h.asleep(ctx)
	eq(t, "after the 429", h.requests(), []string{"429[N1,S0]"})
	h.clock.Advance(30*time.Second - time.Millisecond)
	h.asleep(ctx)
	eq(t, "1ms before Retry-After ends", h.requests(), []string{"429[N1,S0]"})
	h.clock.Advance(time.Millisecond)
	h.asleep(ctx) // now in the grace
	eq(t, "after Retry-After", h.requests(), []string{"429[N1,S0]", "200[N1,S0]"})
	reqs := h.fake.Requests()
	if gap := reqs[1].Time.Sub(reqs[0].Time); gap < 30*time.Second {
		t.Fatalf("retried after %s, before the Retry-After floor", gap)
	}
	h.drive(ctx, time.Second)
	if res := h.wait(ctx, done); res.err != nil || res.out.Result != rotator.ResultSuccess {
		t.Fatalf("%+v", res)
	}
}

// TestRetryAfterHoldsTheWholeAccount: two clients share one API key's
// pacer, as the daemon wires them. After a 429 Retry-After: 30 to the
// first, the second sends nothing before that floor either, though it was
// never refused itself; at the floor both go on and complete.
func TestRetryAfterHoldsTheWholeAccount(t *testing.T) {
	h1, h2 := newHarness(t), newHarness(t)
	h2.clock = h1.clock
	h2.fake.SetClock(h1.clock.Now)
	acct := pace.New(0, 0, h1.clock)
	for _, h := range []*harness{h1, h2} {
		api, err := affix.New(h.fake.URL, secret.New(h.key), affix.WithTimeout(5*time.Second), affix.WithLimiter(acct))
		if err != nil {
			t.Fatal(err)
		}
		h.api = api
	}
	ctx := ctxT(t)
	sleepers := func(n int) {
		t.Helper()
		if err := h1.clock.BlockUntilContext(ctx, n); err != nil {
			t.Fatalf("waiting for %d sleepers: %v", n, err)
		}
	}
	h1.fake.Inject(affixtest.Fault{Status: 429, RetryAfter: "30"})
	p1 := h1.process("d1", nil)
	done1 := h1.start(ctx, p1.rotator(nil), p1, h1.once())
	sleepers(1)
	eq(t, "client 1 after its 429", h1.requests(), []string{"429[N1,S0]"})
	refused := h1.fake.Requests()[0].Time

	p2 := h2.process("d2", nil)
	done2 := h2.start(ctx, p2.rotator(nil), p2, h2.once())
	sleepers(2) // client 1 in its backoff, client 2 held by the pacer
	eq(t, "client 2 while the account is held", h2.requests(), nil)
	h1.clock.Advance(30*time.Second - time.Millisecond)
	sleepers(2)
	eq(t, "client 1, 1ms before the floor", h1.requests(), []string{"429[N1,S0]"})
	eq(t, "client 2, 1ms before the floor", h2.requests(), nil)
	h1.clock.Advance(time.Millisecond)
	h1.drive(ctx, time.Second)
	for i, d := range []chan result{done1, done2} {
		if res := h1.wait(ctx, d); res.err != nil || res.out.Result != rotator.ResultSuccess {
			t.Fatalf("client %d: %+v", i+1, res)
		}
	}
	eq(t, "client 1", h1.requests(), []string{"429[N1,S0]", "200[N1,S0]", "200[N1]"})
	eq(t, "client 2", h2.requests(), []string{"200[N1,S0]", "200[N1]"})
	if first := h2.fake.Requests()[0].Time; first.Sub(refused) < 30*time.Second {
		t.Fatalf("client 2 sent %s after client 1's 429, before its 30s Retry-After", first.Sub(refused))
	}
}
