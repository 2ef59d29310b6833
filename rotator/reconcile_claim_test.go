package rotator_test

// The reconcile claim (claim.go): a stable client's reconcile fences its
// request with a claim in the record's custom metadata, not with a lease in
// its data, so that it adds no KV version; and a staging that finds a live
// claim waits it out, so that the reconciler's [current] never lands after
// the staging's [new, current].

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// withClaims is the product's setting (the CLI always sets it).
func withClaims(more func(*rotator.Options)) func(*rotator.Options) {
	return func(o *rotator.Options) {
		o.ReconcileClaims = true
		if more != nil {
			more(o)
		}
	}
}

// TestStableReconcileWritesNoKVVersion: a day of hourly reconciles of a
// stable client after a rotation, with Vault's default max_versions (10).
// Each reconcile sends Affix [current] and writes no version, so the
// version that holds the previous secret is still kept and
// -reaccept-previous works. (Before the claim, each reconcile took and
// released the record's lease: 48 versions a day, and the overlap version
// was pruned about 5 hours after the rotation, so -reaccept-previous
// refused: this test fails with ReconcileClaims off.)
func TestStableReconcileWritesNoKVVersion(t *testing.T) {
	e := newMemHarness(t)
	e.store.SetMaxVersions(e.path, 10)
	op := e.proc("host/once")
	run := e.rotate(op, op.rotator(withClaims(nil)), op.client(), e.once())
	if !e.drive(time.Second, 5*time.Minute, run.finished) || run.err != nil {
		t.Fatalf("rotation: %s; requests %v", run, e.requests())
	}
	_, before, _ := e.store.Latest(e.path)
	posts := len(e.fake.Requests())

	d := e.proc("pod-a")
	e.daemon(d, d.rotator(withClaims(func(o *rotator.Options) { o.ReconcileInterval = time.Hour })), d.client())
	for h := 0; h < 24; h++ {
		e.advance(time.Hour)
	}
	_, after, _ := e.store.Latest(e.path)
	if after != before {
		t.Errorf("a day of reconciles of a stable client wrote %d KV versions, want 0", after-before)
	}
	if n := len(e.fake.Requests()) - posts; n < 23 {
		t.Errorf("%d reconcile requests in 24h at reconcile_interval 1h, want at least 23: %v", n, e.requests()[posts:])
	}
	if v := e.violations(); len(v) > 0 {
		t.Fatalf("%v; requests %v", v, e.requests())
	}
	d.stop()

	a := e.proc("host/action")
	var until time.Time
	act := e.spawn(a, 1, func(ctx context.Context, run *memRun) {
		until, run.err = a.rotator(withClaims(nil)).ReacceptPrevious(ctx, a.client(), time.Minute, rotator.Audit{By: "alice", Reason: "a consumer missed the rotation"})
	})
	// The daemon's last reconcile claim may still be live: the action
	// waits it out on the clock.
	if !e.drive(time.Second, time.Minute, act.finished) || act.err != nil || until.IsZero() {
		t.Fatalf("-reaccept-previous a day after the rotation: %s (the history it needs was pruned?)", act)
	}
	if m := e.mismatch(); m != "" {
		t.Fatalf("after -reaccept-previous: %s", m)
	}
}

// TestReconcileClaimHoldsBackAStaging: a reconciler has claimed, read the
// stable record and is about to send [S0] when a -once stages. The staging
// write is answered with the live claim, so the -once sends nothing until
// the claim has ended (plus the clock-skew margin): the reconciler's [S0]
// cannot land after the -once's [N, S0] and drop the new secret that Vault
// is about to make current. (Without the wait, the -once sends at once and
// the held [S0] lands after it: I1 is violated.)
func TestReconcileClaimHoldsBackAStaging(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0)
	margin := func(o *rotator.Options) { o.ClockSkewMargin = 3 * time.Second }
	rc := e.proc("pod-a")
	held := rc.pauseBefore(isPost(1), false)
	e.rotate(rc, rc.rotator(withClaims(margin)), rc.client(), rotator.Trigger{Reason: rotator.ReasonReconcile, Time: e.clock.Now()})
	held.await()
	claim, _, _ := e.store.Read(e.ctx, e.path)
	if len(claim.Claims) == 0 {
		t.Fatal("the reconciler reached its request without a claim in the record's metadata")
	}

	op := e.proc("host/once")
	run := e.rotate(op, op.rotator(withClaims(margin)), op.client(), e.once())
	e.advance(time.Second)
	if n := len(e.fake.Requests()); n != 0 {
		t.Fatalf("the -once sent %v while a reconcile request was in flight under a live claim", e.requests())
	}
	held.resume() // the reconciler's [S0] lands now
	var first time.Time
	if !e.drive(time.Second, 5*time.Minute, func() bool {
		if first.IsZero() && len(e.fake.Requests()) > 1 {
			first = e.clock.Now()
		}
		if v := e.violations(); len(v) > 0 {
			t.Fatalf("%v; requests %v", v, e.requests())
		}
		return run.finished()
	}) || run.err != nil || run.out.Result != rotator.ResultSuccess {
		t.Fatalf("-once: %s; requests %v", run, e.requests())
	}
	if end := claim.Claims[0].Until.Add(3 * time.Second); first.Before(end) {
		t.Errorf("the -once sent its first request at %s, before the claim's end plus margin %s", first, end)
	}
	if m := e.mismatch(); m != "" {
		t.Fatal(m)
	}
}

// TestClaimedReconcileRepairsItsLateRequest: a reconcile under a claim
// writes nothing, but its request may still land late. Its [S0] gets a
// connection reset at once, within its claim, while the request itself is
// held on the way; a -once waits out the claim, stages and makes N current
// with a 1h grace; then the held [S0] lands, and Affix no longer accepts
// N. The reconciler, whose request got no answer, reads the record moved
// on and re-asserts [N, S0] at once (taking the -once's lease: in overlap
// it is only waiting), instead of following the -once's grace for an hour
// with consumers locked out. (Before the fix, a run that had never written
// skipped that check: found by the adversarial review of the claim.)
func TestClaimedReconcileRepairsItsLateRequest(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0)
	margin := func(o *rotator.Options) { o.ClockSkewMargin = 3 * time.Second }
	rc := e.proc("pod-a")
	reset := &resetOnce{Affix: rc.client().Affix}
	rcClient := rc.client()
	rcClient.Affix = reset
	rrun := e.rotate(rc, rc.rotator(withClaims(margin)), rcClient, rotator.Trigger{Reason: rotator.ReasonReconcile, Time: e.clock.Now()})
	e.quiet()
	if reset.held == nil {
		t.Fatalf("the reconciler sent nothing; requests %v", e.requests())
	}

	op := e.proc("host/once")
	c := op.client()
	c.GracePeriod = time.Hour
	e.rotate(op, op.rotator(withClaims(margin)), c, e.once())
	if !e.drive(time.Second, 5*time.Minute, func() bool { return phaseOf(e.record()) == "overlap" }) {
		t.Fatalf("the -once never reached its overlap; requests %v", e.requests())
	}
	if _, err := e.api.UpdateClient(context.Background(), *reset.held); err != nil { // the held [S0] lands now
		t.Fatal(err)
	}
	if len(e.violations()) == 0 {
		t.Fatalf("test script: the late [S0] should have locked N out; requests %v", e.requests())
	}
	repaired := e.drive(time.Second, 2*time.Minute, func() bool { return len(e.violations()) == 0 && e.mismatch() == "" })
	if !repaired {
		t.Fatalf("2 minutes after the reconciler's late [S0] landed: %v %s; requests %v; reconciler %s", e.violations(), e.mismatch(), e.requests(), rrun)
	}
}

// resetOnce answers the first request with a connection reset at once,
// keeping the request (held) for the test to deliver later; it passes the
// others on.
type resetOnce struct {
	rotator.Affix
	mu   sync.Mutex
	held *affix.UpdateRequest
}

func (r *resetOnce) UpdateClient(ctx context.Context, req affix.UpdateRequest) (*affix.UpdateResponse, error) {
	r.mu.Lock()
	first := r.held == nil
	if first {
		r.held = &req
	}
	r.mu.Unlock()
	if first {
		return nil, errors.New("read tcp: connection reset by peer (the request is on its way)")
	}
	return r.Affix.UpdateClient(ctx, req)
}

// TestClaimedReconcileRecordsA429AtOnce: a reconcile under a claim that
// gets a 429 writes its Retry-After into the record at once, as a run under
// the lease does, so that a process staging meanwhile honours it; before,
// the floor was written only when the run ended, and the reconcile keeps
// retrying until the floor has passed (simulation seed 22: a -once sent into
// the floor).
func TestClaimedReconcileRecordsA429AtOnce(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0)
	e.fake.Inject(affixtest.Fault{Status: 429, RetryAfter: "600"})
	rc := e.proc("pod-a")
	e.rotate(rc, rc.rotator(withClaims(nil)), rc.client(), rotator.Trigger{Reason: rotator.ReasonReconcile, Time: e.clock.Now()})
	e.quiet()
	if got, want := e.recordTime("retry_not_before"), e.start0.Add(600*time.Second); got.Before(want) {
		t.Fatalf("retry_not_before %s while the reconcile waits out a 429 of 600s, want at least %s", got, want)
	}
}
