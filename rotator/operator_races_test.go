package rotator_test

// Operators' commands racing each other, the daemon and clocks: the
// leaked-secret -once facing rotations in every phase, an action's request
// landing after another process moved on, the schedule's anchor across a
// reopened grace, a clock stepped back, and records written by an older
// release. Each test is a scenario that once broke a documented promise or
// an invariant (found by an adversarial review), among them an operator's
// action undone or voided by a daemon's request in flight (a reconcile, a
// drop whose record write failed). They run on the in-memory harness
// (memHarness, harness_test.go).

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestIncidentResumingAStagedRotationEndsItsGrace: the leaked-secret
// incident (`-once -grace 30s -reason …`) while an older rotation is
// *staged* and nobody drives it (the daemon that staged it was killed
// before its [new, old] request; its lease has run out). The -once resumes
// that rotation: it confirms it (Affix accepts [N1, S0], S0 the secret
// current when the operator ran the command) and writes grace_until from
// the rotation's own grace (the daemon's 1h), with grace_by = the -once's
// own run token. From then on st.incident() is false (rec.GraceBy ==
// st.token), so the incident never ends that grace: S0, the leaked
// secret, stays accepted for the whole hour instead of the operator's 30s.
// Trigger.Grace promises "a grace in flight of a rotation staged before
// Time is ended at once (the secret current at Time must stop being
// accepted within Grace)"; the same scenario with the daemon alive (it
// confirms, the -once ends that grace) is retired within a minute.
func TestIncidentResumingAStagedRotationEndsItsGrace(t *testing.T) {
	e := newMemHarness(t)
	d := e.proc("pod-a")
	dc := d.client()
	dc.GracePeriod = time.Hour
	d.hook(&ioHook{match: isPost(2), action: d.kill}) // killed before Affix hears of N1
	run := e.rotate(d, d.rotator(nil), dc, rotator.Trigger{Reason: rotator.ReasonSchedule, Time: e.clock.Now()})
	e.drive(time.Second, time.Minute, run.finished)
	if phaseOf(e.record()) != "staged" {
		t.Fatalf("setup: the daemon was not killed in staged: phase %s, requests %v", phaseOf(e.record()), e.requests())
	}
	leaked := str(e.record(), "client_secret") // S0: current when the operator runs the incident
	e.advance(2 * time.Minute)                 // the dead daemon's lease (1m) has run out

	op := e.proc("host/once-1")
	c := op.client()
	c.GracePeriod = 30 * time.Second // as the CLI does with -grace
	start := e.clock.Now()
	once := e.rotate(op, op.rotator(func(o *rotator.Options) { o.ClockSkewMargin = 30 * time.Second }), c,
		rotator.Trigger{Reason: rotator.ReasonOnce, Time: start, Grace: 30 * time.Second, Audit: incidentAudit})
	retired := e.retired(leaked, 3*time.Minute)
	bound := 30*time.Second + 30*time.Second + 30*time.Second // grace + skew margin + slack, as the sibling test
	if retired.IsZero() {
		t.Fatalf("-once -grace 30s facing a staged rotation: the secret current when it ran (S0) is still accepted %s later (want at most %s): the -once confirmed the older rotation with its 1h grace and never ended it (grace_until %s); -once %s; requests %v",
			e.clock.Now().Sub(start), bound, str(e.record(), "grace_until"), once, e.requests())
	}
	if retired.Sub(start) > bound {
		t.Fatalf("the leaked secret was accepted for %s after -once -grace 30s, want at most %s", retired.Sub(start), bound)
	}
}

// TestLegacyReacceptThenEndGraceKeepsRotatedAt: the day after the
// upgrade every record was completed by the old code and has no staged_at.
// An operator runs -reaccept-previous 1h (an app broke), then -end-grace
// (it is fixed). completedBefore() falls back to "the last action says
// it" for a record without staged_at, but -end-grace has just overwritten
// last_action with end-grace: the finish takes the reopened grace for a new
// rotation and sets rotated_at = now. No new secret was made, yet the
// schedule's anchor (and max_age, last_success) moved: the very bug that
// TestReacceptThenEndGraceKeepsRotatedAt pins, still there for every
// record written before staged_at existed ("must survive the end of the
// reopened grace, whatever operator action came in between").
func TestLegacyReacceptThenEndGraceKeepsRotatedAt(t *testing.T) {
	e := newMemHarness(t)
	a := e.proc("pod-a")
	run := e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.drive(time.Second, 5*time.Minute, run.finished)
	if run.err != nil || str(e.record(), "rotated_at") == "" {
		t.Fatalf("setup: no completed rotation: %s", run)
	}
	// Rewrite the rotation's overlap and stable versions as the code before
	// 5cdf345 wrote them (no staged_at, grace_period, grace_by, seeded_at).
	var overlap map[string]any
	for _, v := range e.store.History(e.path) {
		if phaseOf(v) == "overlap" {
			overlap = v
		}
	}
	legacy := func(m map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			switch k {
			case "staged_at", "grace_period", "grace_by", "seeded_at", "step_error", "failing_since":
			default:
				out[k] = v
			}
		}
		return out
	}
	final := e.record()
	e.put(legacy(overlap))
	e.put(legacy(final))
	rotated := str(e.record(), "rotated_at")
	if str(e.record(), "staged_at") != "" || phaseOf(e.record()) != "stable" {
		t.Fatalf("setup: not a legacy stable record: %v", e.record()["phase"])
	}

	e.advance(time.Hour)
	act := e.reacceptThenEndGrace()
	if act.err != nil || phaseOf(e.record()) != "stable" {
		t.Fatalf("reaccept then end-grace on a legacy record: %s, phase %s", act, phaseOf(e.record()))
	}
	if got := str(e.record(), "rotated_at"); got != rotated {
		t.Fatalf("legacy record (no staged_at): -reaccept-previous then -end-grace moved rotated_at from %s to %s although no new secret was made (the schedule's anchor reset)", rotated, got)
	}
}

// skewedClock is the shared fake clock as read on a host whose clock runs
// d ahead (timers are relative, so they are the fake clock's own).
type skewedClock struct {
	*clockwork.FakeClock
	d time.Duration
}

func (c skewedClock) Now() time.Time                  { return c.FakeClock.Now().Add(c.d) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c skewedClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }

// TestRotatedAtOfARotationAfterASkewedOneIsKept: pod-a's clock runs
// 20s ahead (inside rotation.clock_skew_margin, 30s: a skew the design
// tolerates). It completes a rotation; rotated_at is written 20s "ahead".
// Five seconds later an operator runs -once (1h grace) on a host with a
// correct clock: its rotation is staged at a staged_at earlier than the
// record's rotated_at. An hour later it drops the old secret, but
// finish() reads rotated_at > staged_at as "a grace an operator reopened
// (-reaccept-previous)" (completedBefore) and keeps the previous
// rotation's rotated_at. rotated_at ("the time the last rotation
// completed", the schedule's anchor, max_age, last_success) is then an
// hour before the rotation that really completed: the schedule and
// max_age fire an hour early, and the record says the current secret is
// an hour older than it is. No grace was reopened; only 20s of skew.
func TestRotatedAtOfARotationAfterASkewedOneIsKept(t *testing.T) {
	e := newMemHarness(t)
	a := e.proc("pod-a")
	ac := a.client()
	ac.GracePeriod = 2 * time.Minute
	ra := a.rotator(func(o *rotator.Options) {
		o.Clock, o.ClockSkewMargin = skewedClock{e.clock, 20 * time.Second}, 30*time.Second
	})
	runA := e.rotate(a, ra, ac, rotator.Trigger{Reason: rotator.ReasonSchedule, Time: e.clock.Now().Add(20 * time.Second)})
	e.drive(time.Second, 10*time.Minute, runA.finished)
	if runA.err != nil || runA.out.Result != rotator.ResultSuccess || phaseOf(e.record()) != "stable" {
		t.Fatalf("setup: pod-a's rotation: %s", runA)
	}
	first := str(e.record(), "rotated_at")
	e.advance(5 * time.Second)

	op := e.proc("host/once-1")
	c := op.client()
	c.GracePeriod = time.Hour
	once := e.rotate(op, op.rotator(func(o *rotator.Options) { o.ClockSkewMargin = 30 * time.Second }), c, e.once())
	var dropped time.Time
	e.drive(time.Minute, 3*time.Hour, func() bool {
		if dropped.IsZero() && e.stagedCount() == 2 && phaseOf(e.record()) == "stable" {
			dropped = e.clock.Now()
		}
		return once.finished()
	})
	if once.err != nil || once.out.Result != rotator.ResultSuccess || once.out.ByOther || e.stagedCount() != 2 {
		t.Fatalf("-once: %s, %d rotations; requests %v", once, e.stagedCount(), e.requests())
	}
	got := e.recordTime("rotated_at")
	if dropped.Sub(got) > 2*time.Minute {
		t.Fatalf("the -once's rotation completed (old secret dropped) at about %s, but rotated_at is %s (still the previous rotation's, %s): a rotated_at written 20s ahead (within the skew margin) made finish() take a fresh rotation for a reopened grace",
			dropped.Format(time.RFC3339), got.Format(time.RFC3339), first)
	}
}

// TestExtendGraceStaleRequestIsRepaired: -extend-grace now sends
// Affix [current, previous] itself (5cdf345). No daemon runs (the process
// that confirmed the rotation stopped cleanly). Operator 1 runs
// -extend-grace 30m: its record write lands, then its laptop freezes just
// before its [N1, S0] request leaves, for 2 minutes (past its 1m lease).
// Operator 2 runs -end-grace: Affix is told [N1], the record is stable on
// N1, and it exits 0. Operator 1's laptop wakes; its [N1, S0] lands and is
// answered 200 after its lease ended, and from a record version another
// process has since moved on from: both are signs the design lists
// ("a stale request of mine may have landed"; the process "re-asserts that
// set at once"). But an action's run stops right after its request
// (stopAfterAssert) and exits 0: Affix accepts S0 again, which the stable
// record does not hold (I2), and with no daemon nothing ever drops it
// (design: with only one-shot runs, the drift lasts "until the stale
// process wakes and detects it"; it woke and did not).
func TestExtendGraceStaleRequestIsRepaired(t *testing.T) {
	e := newMemHarness(t)
	ext, freeze := e.heldExtendGrace()
	e.advance(2 * time.Minute) // op1's 1m lease ends while it is frozen

	op2 := e.proc("host/endgrace-1")
	r2 := op2.rotator(nil)
	end := e.spawn(op2, 1, func(ctx context.Context, run *memRun) {
		run.out, run.err = r2.EndGrace(ctx, op2.client(), rotator.Audit{By: "carol", Reason: "S0 leaked"})
	})
	e.drive(time.Second, time.Minute, end.finished)
	if end.err != nil || phaseOf(e.record()) != "stable" {
		t.Fatalf("setup: end-grace: %s, phase %s", end, phaseOf(e.record()))
	}
	freeze.resume()
	e.drive(time.Second, 5*time.Minute, ext.finished)
	e.drive(time.Second, 5*time.Minute, func() bool { return false }) // give it every chance to repair
	if v := e.violations(); len(v) > 0 {
		t.Fatalf("after a frozen -extend-grace's late request (extend-grace %s): %v; requests %v", ext, v, e.requests())
	}
}

// TestOnceAfterAClockStepBackTerminates: an operator starts -once on a
// laptop whose clock runs 1h ahead (a dual-boot RTC kept in local time, a
// VM resumed before NTP); runOnce takes Trigger.Time from it. Seconds
// later NTP steps the clock back to the right time, before the rotation is
// staged. Every rotation this -once stages now has a staged_at earlier
// than its own trigger time, so satisfiedBy() never holds: finish() says
// "a rotation staged before the -once: the -once runs its own" about its
// own rotation, and stages another, and another, each dropping the
// secret the consumers just picked up after one grace, until the real
// clock catches up an hour later. A -once must be satisfied by the
// rotation it staged itself; after 3 minutes it is still rotating.
func TestOnceAfterAClockStepBackTerminates(t *testing.T) {
	e := newMemHarness(t)
	op := e.proc("host/once-1")
	trig := rotator.Trigger{Reason: rotator.ReasonOnce, Time: e.clock.Now().Add(time.Hour)} // read before the step back
	run := e.rotate(op, op.rotator(func(o *rotator.Options) { o.ClockSkewMargin = 30 * time.Second }), op.client(), trig)
	e.drive(time.Second, 3*time.Minute, run.finished)
	if !run.finished() || e.stagedCount() != 1 {
		t.Fatalf("-once after its host's clock was stepped back 1h: %d rotations in %s and %s (want one rotation, its own, then exit); first requests %v",
			e.stagedCount(), e.clock.Now().Sub(e.start0), run, firstN(e.requests(), 8))
	}
}

// TestExtendGraceStaleRequestDuringIncidentLocksOut: the same blind
// spot as TestExtendGraceStaleRequestIsRepaired, turned into a
// lockout (I1). Operator 1 runs -extend-grace 30m; its record write lands
// and its [N1, S0] request is held up on the way (a slow proxy, a laptop
// lid closed). Operator 2, who learnt that S0 leaked, runs
// `-once -grace 10m`: the incident ends the grace in flight (it ignores
// leases, as -end-grace does), drops S0, stages N2 and confirms
// [N2, N1]: Vault's client_secret is N2. Operator 1's request now lands:
// Affix accepts {N1, S0}, and N2, the secret every consumer is told to
// use, is refused. Operator 1's run gets its 200 from a record version
// two rotations behind and exits 0 without re-reading (stopAfterAssert);
// the incident's run has no request in flight to suspect. Nobody repairs
// it: consumers are locked out until the incident's drop 10 minutes later
// (with the leaked S0 accepted again meanwhile).
func TestExtendGraceStaleRequestDuringIncidentLocksOut(t *testing.T) {
	e := newMemHarness(t)
	ext, held := e.heldExtendGrace()

	op2 := e.proc("host/once-2")
	c2 := op2.client()
	c2.GracePeriod = 10 * time.Minute
	inc := e.rotate(op2, op2.rotator(nil), c2,
		rotator.Trigger{Reason: rotator.ReasonOnce, Time: e.clock.Now(), Grace: 10 * time.Minute, Audit: incidentAudit})
	e.drive(time.Second, time.Minute, func() bool { return e.stagedCount() == 2 && phaseOf(e.record()) == "overlap" })
	if e.stagedCount() != 2 || phaseOf(e.record()) != "overlap" {
		t.Fatalf("setup: the incident did not reach its own overlap: phase %s, %s; requests %v", phaseOf(e.record()), inc, e.requests())
	}
	held.resume()
	e.drive(time.Second, time.Minute, ext.finished)
	if !ext.finished() || ext.err != nil {
		t.Fatalf("setup: extend-grace %s", ext)
	}
	e.drive(time.Second, time.Minute, func() bool { return false }) // a minute for anyone to notice
	if v := e.violations(); len(v) > 0 {
		t.Fatalf("a minute after -extend-grace's held-up request landed during an incident rotation (extend-grace exited 0): %v; requests %v", v, e.requests())
	}
}

// TestIncidentSatisfiedByALongGraceRotation: the leaked-secret
// incident (`-once -grace 30s`) and the daemon's scheduled rotation start
// at the same moment; both try to stage with CAS on the stable record and
// the daemon's write lands first. Its rotation is staged at (not before)
// the incident's trigger time, so satisfiedBy() holds: the incident ends
// nothing and follows the daemon's rotation, whose grace is the
// configured 24h. S0, the secret current when the operator said it
// leaked, stays accepted for 24h, and the -once will eventually report
// "completed by another process". Trigger.Grace promises "the secret
// current at Time must stop being accepted within Grace" (and the sibling
// TestOnceWithGraceDuringOverlapRetiresTheLeakedSecret checks it within
// grace + margins); a rotation that started a moment after the incident,
// with another process's grace, does not keep it.
func TestIncidentSatisfiedByALongGraceRotation(t *testing.T) {
	e := newMemHarness(t)
	leaked := e.s0
	op := e.proc("host/once-1")
	c := op.client()
	c.GracePeriod = 30 * time.Second
	race := op.pauseBefore(func(fc ioCall) bool { return fc.op == "write" && fc.rec.Phase == "staged" }, false)
	start := e.clock.Now()
	once := e.rotate(op, op.rotator(func(o *rotator.Options) { o.ClockSkewMargin = 30 * time.Second }), c,
		rotator.Trigger{Reason: rotator.ReasonOnce, Time: start, Grace: 30 * time.Second, Audit: incidentAudit})
	race.await() // the incident is about to write its staged record...

	d := e.proc("pod-a")
	dc := d.client()
	dc.GracePeriod = 24 * time.Hour
	e.rotate(d, d.rotator(func(o *rotator.Options) { o.ClockSkewMargin = 30 * time.Second }), dc,
		rotator.Trigger{Reason: rotator.ReasonSchedule, Time: start})
	e.drive(time.Second, time.Minute, func() bool { return phaseOf(e.record()) == "overlap" }) // ...the daemon's lands first
	race.resume()

	retired := e.retired(leaked, 3*time.Minute)
	if bound := 90 * time.Second; retired.IsZero() || retired.Sub(start) > bound {
		t.Fatalf("-once -grace 30s whose stage lost the CAS race to the daemon's scheduled rotation (24h grace): the secret current when it ran (S0) is still accepted %s later (want at most %s); grace_until %s; -once %s; requests %v",
			e.clock.Now().Sub(start), bound, str(e.record(), "grace_until"), once, e.requests())
	}
}

// TestRotationStagedByAnOlderReplicaUpdatesRotatedAt: a rolling
// upgrade (or a rollback and re-upgrade) runs the code before 5cdf345 next
// to this one. The old code does not know staged_at, so, as design.md
// promises for any field it does not own, it carries it over unchanged:
// when an old replica stages the next rotation (N2), the record keeps the
// staged_at of the previous rotation (N1), and rotated_at (N1's end) is
// later than it. The old pod is replaced mid-grace (SIGTERM: lease
// released) and a new one finishes the rotation: completedBefore() takes
// rotated_at > staged_at for "a grace an operator reopened" and keeps
// N1's rotated_at. The record says the current secret N2 is 720h old the
// moment it is made current: with @every 720h the schedule is due at
// once, and the new daemon starts yet another rotation right away.
func TestRotationStagedByAnOlderReplicaUpdatesRotatedAt(t *testing.T) {
	e := newMemHarness(t)
	a := e.proc("pod-a")
	run := e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.drive(time.Second, 5*time.Minute, run.finished)
	r1 := str(e.record(), "rotated_at")
	if run.err != nil || r1 == "" || str(e.record(), "staged_at") == "" {
		t.Fatalf("setup: N1's rotation: %s", run)
	}
	e.advance(720 * time.Hour) // N1's 720h are up: the old replica's schedule fires

	// The old replica (pod-old) stages N2 and confirms it, as bf7ad79 did:
	// its writes keep every field it does not own, staged_at included.
	n1 := str(e.record(), "client_secret")
	n2 := newSecret(t)
	now := e.clock.Now()
	staged := e.record()
	staged["phase"], staged["pending_client_secret"], staged["rotation_id"] = "staged", n2, "r-old-2"
	staged["lease_owner"], staged["lease_until"] = "pod-old", now.Add(time.Minute).Format(time.RFC3339Nano)
	e.put(staged)
	if _, err := e.api.UpdateClient(e.ctx, affix.UpdateRequest{ClientSecret: []secret.Value{secret.New(n2), secret.New(n1)}}); err != nil {
		t.Fatal(err)
	}
	overlap := e.record()
	delete(overlap, "pending_client_secret")
	overlap["phase"], overlap["client_secret"], overlap["previous_client_secret"] = "overlap", n2, n1
	overlap["grace_until"] = now.Add(e.grace).Format(time.RFC3339Nano)
	e.put(overlap)
	// SIGTERM during the rollout: the old pod releases its lease.
	released := e.record()
	delete(released, "lease_owner")
	delete(released, "lease_until")
	e.put(released)
	if v := e.violations(); len(v) > 0 {
		t.Fatalf("setup: %v", v)
	}

	b := e.proc("pod-b") // the upgraded replica
	e.daemon(b, b.rotator(nil), b.client())
	e.drive(time.Second, 2*time.Minute, func() bool { return false })
	var got string
	for _, v := range e.store.History(e.path) {
		if str(v, "rotation_id") == "r-old-2" && phaseOf(v) == "stable" {
			got = str(v, "rotated_at")
		}
	}
	if got == "" {
		t.Fatalf("the upgraded daemon did not complete N2's rotation; requests %v", e.requests())
	}
	if got == r1 || e.stagedCount() != 2 {
		t.Fatalf("the upgraded daemon completed N2's rotation (staged by an old replica at %s) but recorded rotated_at %s, N1's, 720h earlier: taken for a reopened grace; %d rotations staged (want 2: the schedule, anchored 720h back, fired again at once); requests %v",
			now.Format(time.RFC3339), got, e.stagedCount(), e.requests())
	}
}

// heldExtendGrace: a rotation in a 1h grace whose driver then stopped
// cleanly (no daemon from here on; its lease is released), and an operator's
// -extend-grace 30m whose record write landed and whose [N1, S0] request is
// held just before it reaches Affix.
func (e *memHarness) heldExtendGrace() (*memRun, *memPause) {
	e.t.Helper()
	a, runA, _ := e.inOverlap("pod-a", time.Hour)
	a.stop()
	e.wait(runA)
	e.quiet()
	op1 := e.proc("host/extend-1")
	held := op1.pauseBefore(isPost(2), false)
	r1 := op1.rotator(nil)
	ext := e.spawn(op1, 1, func(ctx context.Context, run *memRun) {
		_, run.err = r1.ExtendGrace(ctx, op1.client(), 30*time.Minute, rotator.Audit{By: "bob", Reason: "partner late"})
	})
	held.await()
	return ext, held
}

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

	e.reacceptPrevious(2*time.Hour, mod)
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
