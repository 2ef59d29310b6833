package rotator_test

// Adversarial tests: each scripts a sequence of events production can
// produce and checks the invariants of DESIGN.md. They reuse the fence
// harness (fence_test.go): vaultmem, the Affix fake through the real affix
// client, a fake clock, processes paused at a chosen I/O call.

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

var operatorAudit = rotator.Audit{By: "alice", Reason: "adversary test"}

// completeRotation runs one full rotation S0 -> N1 with a -once process
// and returns when the record is stable on N1.
func completeRotation(t *testing.T, e *memHarness) {
	t.Helper()
	a := e.proc("host/once-setup")
	run := e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.drive(time.Second, 10*time.Minute, run.finished)
	if !run.finished() || run.err != nil || run.out.Result != rotator.ResultSuccess {
		t.Fatalf("setup rotation: %v", run)
	}
}

// ---------------------------------------------------------------------------
// TestAdversarySameIDReconcileRacesRotation (I1).
//
// Production: pod-a (a StatefulSet pod) runs its reconcile on a stable
// client: it takes the lease and sends [S0]; the request is slow (a proxy
// queue, a partition). Meanwhile pod-a is replaced by a pod with the same
// name (same instance id) while the old one is still alive; the new pod
// finds "its own" lease on the record and, the client being due, rotates:
// [N1,S0] -> 200 -> overlap (current N1). The old pod's [S0] then lands:
// Affix accepts {S0} only. The old pod gets its 200 (well inside its lease)
// and its lease-release write fails with a CAS conflict: that is exactly
// "a CAS conflict right after a 200" (DESIGN §4, detect), which must make it
// re-assert the record's set at once. reassertSet never sets run.posted, so
// writeFailed does not flag it; the old pod adopts the overlap and sleeps.
// Vault's client_secret N1 is rejected by Affix until the grace ends or a
// reconcile runs (up to 1h by default): consumers are locked out.
func TestAdversarySameIDReconcileRacesRotation(t *testing.T) {
	e := newMemHarness(t)
	e.grace = time.Hour
	mod := func(o *rotator.Options) { o.ReconcileInterval = time.Hour; o.ClockSkewMargin = 30 * time.Second }

	old := e.proc("pod-a")
	hold := old.pauseBefore(isPost(1), false)
	runOld := e.rotate(old, old.rotator(mod), old.client(), rotator.Trigger{Reason: rotator.ReasonReconcile, Time: e.clock.Now()})
	hold.await()
	if str(e.record(), "lease_owner") != "pod-a" {
		t.Fatalf("setup: the reconcile did not take the lease: %v", e.record()["lease_owner"])
	}

	// The restarted pod (same instance id): its schedule fires now.
	neu := e.proc("pod-a")
	runNew := e.rotate(neu, neu.rotator(mod), neu.client(), rotator.Trigger{Reason: rotator.ReasonSchedule, Time: e.clock.Now()})
	e.quiet() // the new pod is in its grace
	if phaseOf(e.record()) != "overlap" || runNew.finished() {
		t.Fatalf("setup: new pod not in overlap: %v; requests %v", runNew, e.requests())
	}

	hold.resume() // the old pod's [S0] lands now
	e.quiet()
	e.drive(time.Second, 2*time.Minute, func() bool { return false })
	for _, v := range e.violations() {
		t.Errorf("2m after the old pod's reconcile [S0] landed during the new pod's rotation, and the old pod saw a CAS conflict right after its 200 (DESIGN §4 detect: re-assert at once): %s; requests %v (old pod %v)",
			v, e.requests(), runOld)
	}
}

// ---------------------------------------------------------------------------
// TestAdversaryReacceptUndoneByReconcile (§4 repair / -reaccept-previous).
//
// Production: the daemon's hourly reconcile on a stable client (current N1)
// takes the lease and sends [N1]; the request is slow. An operator runs
// -reaccept-previous 2h (an app broke after the drop): the action ignores
// the daemon's live lease, writes overlap {N1, previous S0}, sends
// [N1,S0] -> 200 and reports success. The daemon's [N1] lands after it:
// Affix accepts {N1} only. The daemon's lease-release write then fails with
// a CAS conflict right after its 200 (DESIGN §4 detect), but no re-assert
// follows (reassertSet never sets run.posted); the daemon takes over the
// overlap and sleeps. The broken app stays broken for up to a whole
// reconcile_interval of the 2h the operator asked for.
func TestAdversaryReacceptUndoneByReconcile(t *testing.T) {
	e := newMemHarness(t)
	completeRotation(t, e)
	e.advance(time.Hour)
	mod := func(o *rotator.Options) { o.ReconcileInterval = time.Hour; o.ClockSkewMargin = 30 * time.Second }

	d := e.proc("pod-a")
	hold := d.pauseBefore(isPost(1), false)
	runD := e.rotate(d, d.rotator(mod), d.client(), rotator.Trigger{Reason: rotator.ReasonReconcile, Time: e.clock.Now()})
	hold.await()

	x := e.proc("host/reaccept-previous-1")
	rx := x.rotator(mod)
	runX := e.spawn(x, 1, func(ctx context.Context, r *memRun) {
		_, r.err = rx.ReacceptPrevious(ctx, x.client(), 2*time.Hour, operatorAudit)
	})
	e.wait(runX)
	if runX.err != nil {
		t.Fatalf("setup: reaccept-previous: %v", runX.err)
	}
	if !e.fake.Accepts(e.key, e.s0) {
		t.Fatalf("setup: reaccept-previous did not make Affix accept S0: %v", e.requests())
	}

	hold.resume()
	e.quiet()
	e.drive(time.Second, 2*time.Minute, func() bool { return false })
	if m := e.mismatch(); m != "" {
		t.Errorf("2m after -reaccept-previous 2h succeeded and the daemon's concurrent reconcile [N1] landed after it (the daemon saw a CAS conflict right after its 200; DESIGN §4 detect/repair: re-assert at once): %s; the previous secret the operator re-accepted is rejected; requests %v (daemon %v)",
			m, e.requests(), runD)
	}
}

// ---------------------------------------------------------------------------
// TestAdversaryEndGraceRevivedByDaemonReconcile (I2, a leaked secret).
//
// Production: the daemon drives an overlap {N1, previous S0} (grace 2h,
// reconcile_interval 10m) and sends its periodic [N1,S0]; the request is
// slow. S0 leaked: an operator runs -end-grace. The action ignores the
// daemon's live lease, sends [N1] -> 200, writes stable and reports
// success. The daemon's [N1,S0] lands after it: Affix accepts the leaked
// S0 again, which the record no longer holds (I2). The daemon's 200 comes
// well inside its lease, and it learns of the move by a read, not a CAS
// conflict: no detection rule fires, it reports "completed by another
// process" and sleeps. EndGrace's own doc says the daemon "sends nothing
// more for this rotation". S0 stays valid until the daemon's next reconcile
// (a full reconcile_interval after; never with reconcile_interval 0).
func TestAdversaryEndGraceRevivedByDaemonReconcile(t *testing.T) {
	e := newMemHarness(t)
	e.grace = 2 * time.Hour
	e.setRotatedAt(e.start0.Add(-800 * time.Hour)) // due at start
	mod := func(o *rotator.Options) { o.ReconcileInterval = 10 * time.Minute; o.ClockSkewMargin = 30 * time.Second }

	d := e.proc("pod-a")
	var armed atomic.Bool
	d.hook(&ioHook{after: true, match: isPost(2), action: func() { armed.Store(true) }})
	hold := d.pauseBefore(func(c ioCall) bool { return c.op == "post" && armed.Load() }, false)
	runD := e.daemon(d, d.rotator(mod), d.client())
	e.drive(time.Minute, 15*time.Minute, hold.isReached)
	hold.await()
	eq(t, "setup: daemon's requests", e.requests(), []string{"200[N1,S0]"})

	x := e.proc("host/end-grace-1")
	rx := x.rotator(mod)
	runX := e.spawn(x, 1, func(ctx context.Context, r *memRun) {
		r.out, r.err = rx.EndGrace(ctx, x.client(), operatorAudit)
	})
	e.wait(runX)
	if runX.err != nil || phaseOf(e.record()) != "stable" || e.fake.Accepts(e.key, e.s0) {
		t.Fatalf("setup: end-grace: %v; phase %s; requests %v", runX, phaseOf(e.record()), e.requests())
	}

	hold.resume()
	e.quiet()
	e.drive(time.Second, 2*time.Minute, func() bool { return false })
	for _, v := range e.violations() {
		t.Errorf("2m after -end-grace reported success (S0 leaked), the daemon's in-flight reconcile [N1,S0] landed and nothing re-asserted [N1]: %s; requests %v (daemon %v)",
			v, e.requests(), runD)
	}
}

// ---------------------------------------------------------------------------
// TestAdversaryReacceptResetsMaxAge (max_age, schedule anchored on the record).
//
// Production: N1 became current at t1 (rotated_at t1), schedule @every
// 720h, max_age 744h. At t1+700h an app breaks and the operator runs
// -reaccept-previous 2h. When the daemon drops S0 again, finish() writes
// rotated_at = now (t1+702h): that is not a rotation, N1 is as old as
// before, yet the schedule and the max_age "hard upper bound" are now
// counted from it. At t1+745h N1 is past max_age and no rotation starts;
// the next one would come at t1+1422h.
func TestAdversaryReacceptResetsMaxAge(t *testing.T) {
	e := newMemHarness(t)
	completeRotation(t, e)
	t1 := e.recordTime("rotated_at")
	n1 := str(e.record(), "client_secret")
	e.advance(700 * time.Hour)

	x := e.proc("host/reaccept-previous-1")
	rx := x.rotator(nil)
	runX := e.spawn(x, 1, func(ctx context.Context, r *memRun) {
		_, r.err = rx.ReacceptPrevious(ctx, x.client(), 2*time.Hour, operatorAudit)
	})
	e.wait(runX)
	if runX.err != nil {
		t.Fatalf("setup: reaccept-previous: %v", runX.err)
	}
	// A daemon ends the new grace.
	b := e.proc("pod-b")
	runB := e.rotate(b, b.rotator(nil), b.client(), rotator.Trigger{Reason: rotator.ReasonStartup, Time: e.clock.Now()})
	e.drive(time.Minute, 3*time.Hour, runB.finished)
	if !runB.finished() || phaseOf(e.record()) != "stable" || e.fake.Accepts(e.key, e.s0) {
		t.Fatalf("setup: the re-accepted grace did not end: %v, requests %v", runB, e.requests())
	}

	e.advance(t1.Add(745 * time.Hour).Sub(e.clock.Now()))
	c := e.proc("pod-c")
	cl := c.client()
	cl.MaxAge = 744 * time.Hour
	runC := e.rotate(c, c.rotator(nil), cl, rotator.Trigger{Reason: rotator.ReasonStartup, Time: e.clock.Now(), MaxAge: cl.MaxAge})
	e.quiet()
	if str(e.record(), "client_secret") == n1 && e.stagedCount() < 2 {
		due, _ := rotator.NextDue(b.client().Schedule, cl.MaxAge, e.recordTime("rotated_at"), e.clock.Now())
		t.Errorf("max_age 744h is a hard upper bound, but N1 (current since %s) is %s old and no rotation started (%v): the drop after -reaccept-previous moved rotated_at to %s, so the next rotation is due only at %s (N1 then %s old)",
			t1.Format(time.RFC3339), e.clock.Now().Sub(t1), runC, e.recordTime("rotated_at").Format(time.RFC3339), due.Format(time.RFC3339), due.Sub(t1))
	}
}

// failStableWrite makes one write of a stable record fail without reaching
// Vault (a leader election, a 503), the first time fail says so.
type failStableWrite struct {
	rotator.Store
	failed atomic.Bool
}

func (s *failStableWrite) Write(ctx context.Context, path string, r vault.Record, cas int) (int, error) {
	if r.Phase == vault.PhaseStable && !r.RotatedAt.IsZero() && s.failed.CompareAndSwap(false, true) {
		return 0, fmt.Errorf("vault: write secret/%s: %w: 503 standby (injected; not applied)", path, vault.ErrUnavailable)
	}
	return s.Store.Write(ctx, path, r, cas)
}

// ---------------------------------------------------------------------------
// TestAdversaryExtendGraceAfterDropVaultBlip (I3).
//
// Production: grace_until passes; the daemon sends the drop [N1] -> 200, but
// its overlap -> stable write fails (Vault 503 during a leader election; not
// applied) and it backs off. Consumers still on S0 start failing, and the
// operator runs -extend-grace 30m: the record is still overlap, so it is
// accepted and reports success. The daemon re-reads, sees the new
// grace_until, and goes back to sleep in awaitGrace: it never re-sends
// [N1,S0]. Affix rejects S0 for the whole extended grace, though the record
// says overlap with grace_until 30m ahead: the old secret is dropped before
// grace_until (I3), and the operator's action is void. The daemon learnt of
// the move by a read after a 200 of its own, which no detection rule covers;
// its reconcile is due a full reconcile_interval (1h) after that 200, after
// the extended grace has ended.
func TestAdversaryExtendGraceAfterDropVaultBlip(t *testing.T) {
	e := newMemHarness(t)
	e.grace = 10 * time.Minute
	mod := func(o *rotator.Options) { o.ReconcileInterval = time.Hour; o.ClockSkewMargin = 30 * time.Second }
	d := e.proc("pod-a")
	fs := &failStableWrite{Store: (*memStore)(d)}
	rd := d.rotator(func(o *rotator.Options) { mod(o); o.Store = fs })
	runD := e.rotate(d, rd, d.client(), e.once())
	e.drive(time.Second, 15*time.Minute, fs.failed.Load)
	e.quiet()
	if !fs.failed.Load() || phaseOf(e.record()) != "overlap" || e.fake.Accepts(e.key, e.s0) {
		t.Fatalf("setup: drop then failed write did not happen: %v; requests %v", runD, e.requests())
	}

	x := e.proc("host/extend-grace-1")
	rx := x.rotator(mod)
	var until time.Time
	runX := e.spawn(x, 1, func(ctx context.Context, r *memRun) {
		until, r.err = rx.ExtendGrace(ctx, x.client(), 30*time.Minute, operatorAudit)
	})
	e.wait(runX)
	if runX.err != nil {
		t.Fatalf("setup: extend-grace: %v", runX.err)
	}
	e.drive(time.Second, 2*time.Minute, func() bool { return false })
	if phaseOf(e.record()) == "overlap" && e.clock.Now().Before(e.recordTime("grace_until")) && !e.fake.Accepts(e.key, e.s0) {
		t.Errorf("I3 violated: 2m after -extend-grace 30m succeeded (grace_until %s), the record is in overlap but Affix rejects the previous secret S0 (it accepts %v): the daemon's drop, sent before the extension, was never undone; requests %v (daemon %v)",
			until.Format(time.RFC3339), e.labels(e.fake.Secrets(e.key)), e.requests(), runD)
	}
}

// ---------------------------------------------------------------------------
// TestAdversaryAbortRetriedByRereadNotRetryMax (liveness / hygiene).
//
// Production: the client's API key was revoked (persistent 401). The daemon
// stages N1, gets a 401, aborts (correctly). The scheduler means to try
// again only after RetryMax (5m; "not at once ... and not only at the next
// scheduled run"), but its reread check (every 30s, trigger startup) comes
// first and returns with no error, after which the overdue schedule fires at
// once: a new secret is generated, stored, sent and aborted every ~30s
// (~2900 a day), each leaving Vault versions that push the overlap history
// -reaccept-previous needs out of the mount's max_versions.
func TestAdversaryAbortRetriedByRereadNotRetryMax(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0.Add(-800 * time.Hour)) // due
	for i := 0; i < 200; i++ {
		e.fake.Inject(affixtest.Fault{Status: 401})
	}
	d := e.proc("pod-a")
	e.daemon(d, d.rotator(func(o *rotator.Options) { o.RetryMax = 5 * time.Minute; o.RereadInterval = 30 * time.Second }), d.client())
	e.drive(10*time.Second, 5*time.Minute, func() bool { return false })
	if n := e.stagedCount(); n > 2 {
		t.Errorf("with a persistent 401 the daemon started %d rotations (each a new secret written to Vault and sent to Affix) in 5m, with RetryMax 5m: aborted rotations are retried every RereadInterval, not after RetryMax; requests %v",
			n, e.requests())
	}
}
