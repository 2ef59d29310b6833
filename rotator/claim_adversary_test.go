package rotator_test

// Adversarial tests of the reconcile claim (claim.go, docs/design.md "The
// reconcile claim"). Each test failed on the code it was written against
// (one claim key, an unbounded wait, only ErrDenied falling back); its doc
// comment says the attack, what broke, and why. They pass since the claims
// are one key per instance, the wait is bounded by MaxClaimSpan after the
// stager's first write, and any refusal other than an unreachable Vault
// falls back to the lease.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// advSkewClock is the shared fake clock as seen by a host whose clock is off
// by d (timers still run on the shared clock: only readings are skewed).
type advSkewClock struct {
	*clockwork.FakeClock
	d time.Duration
}

func (c advSkewClock) Now() time.Time                  { return c.FakeClock.Now().Add(c.d) }
func (c advSkewClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c advSkewClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }

func isClaim(c ioCall) bool { return c.op == "claim" }

// reconcileTrigger is a daemon's periodic reconcile.
func (e *memHarness) reconcileTrigger() rotator.Trigger {
	return rotator.Trigger{Reason: rotator.ReasonReconcile, Time: e.clock.Now()}
}

// TestAdvClaimOverwrittenByEarlierUntil: the claim is one metadata key that
// the last PATCH wins, and a claim's `until` is computed from the clock
// reading at the start of the step, before the PATCH is sent. So a
// reconciler frozen between that reading and its PATCH (a VM freeze, a long
// GC: the threat model of "The lease is not a fence"), or whose PATCH Vault
// applies late, replaces a later reconciler's live claim with an `until`
// earlier than that reconciler's request deadline. It needs only to be
// delayed more than request_timeout + clock_skew_margin.
//
// Script (request timeout 5s, so until = now + 10s; margin 1s):
//   - t0: reconciler B reads the stable record, computes until t0+10s, and
//     freezes before its claim PATCH.
//   - t0+8s: reconciler A claims (until t0+18s), reads the record (stable,
//     unchanged) and sends [S0]; Affix is slow, but answers within A's
//     request deadline (t0+8s + 5s).
//   - B wakes: its PATCH lands, and the claim says until t0+10s. B reads
//     the record (unchanged), sends [S0], done.
//   - a -once stages: its write is answered with B's claim (t0+10s), so it
//     waits only until t0+11s, then sends [N, S0] and makes N current.
//   - t0+12s: A's [S0] is applied and answered (before A's deadline and
//     its until, so A is not even "late" and detects nothing).
//
// What breaks: I1. Affix accepts [S0] only while Vault's client_secret is
// N: consumers are locked out, and no process notices (A's answer was in
// time, the -once's request was confirmed). It lasts until a reconcile of
// the overlap or the grace's end.
//
// Why: the stager sees only the last claim written, and a claim PATCH can
// lower `until` below another live claim's. (Fix ideas: a metadata key per
// claimant, so that no claim hides another, the stager waiting for every
// live one; or a reconciler that reads the record again after its request
// and re-asserts if it moved meanwhile.)
func TestAdvClaimOverwrittenByEarlierUntil(t *testing.T) {
	e := newMemHarness(t)
	e.grace = time.Hour // the stager's finish must not mask the drift
	e.setRotatedAt(e.start0)
	margin := func(o *rotator.Options) { o.ClockSkewMargin = time.Second }
	const requestTimeout = 5 * time.Second // the env's

	b := e.proc("pod-b")
	bClaim := b.pauseBefore(isClaim, false)
	runB := e.rotate(b, b.rotator(withClaims(margin)), b.client(), e.reconcileTrigger())
	bClaim.await()

	e.advance(8 * time.Second)
	a := e.proc("pod-a")
	aPost := a.pauseBefore(isPost(1), false)
	aStart := e.clock.Now()
	runA := e.rotate(a, a.rotator(withClaims(margin)), a.client(), e.reconcileTrigger())
	aPost.await()
	if c, _, _ := e.store.Read(e.ctx, e.path); len(c.Claims) == 0 || !c.Claims[0].Until.Equal(e.start0.Add(18*time.Second)) {
		t.Fatalf("A's claim: %+v, want until t0+18s", c.Claims)
	}

	bClaim.resume()
	if !e.drive(100*time.Millisecond, time.Second, runB.finished) || runB.err != nil {
		t.Fatalf("reconciler B: %s", runB)
	}
	c, _, _ := e.store.Read(e.ctx, e.path)
	t.Logf("claim after B's late PATCH: %s (A's request may be in flight until %s)", c.Claims, aStart.Add(requestTimeout).Format(time.RFC3339))

	op := e.proc("host/once")
	run := e.rotate(op, op.rotator(withClaims(margin)), op.client(), e.once())
	var violations []string
	check := func() {
		if v := e.violations(); len(v) > 0 && violations == nil {
			violations = append(v, "at t0+"+e.clock.Now().Sub(e.start0).String())
		}
	}
	// Until t0+12s: the -once may send whatever the claim it saw allows.
	e.drive(500*time.Millisecond, e.start0.Add(12*time.Second).Sub(e.clock.Now()), func() bool { check(); return false })
	if now := e.clock.Now(); now.After(aStart.Add(requestTimeout)) {
		t.Fatalf("test script: A's request must be answered within its deadline (%s), now %s", aStart.Add(requestTimeout), now)
	}
	aPost.resume() // A's [S0] is applied and answered now, within A's deadline
	e.drive(time.Second, 2*time.Minute, func() bool { check(); return runA.finished() && e.clock.Now().After(e.start0.Add(time.Minute)) })
	if violations != nil {
		t.Errorf("a late claim PATCH hid a live claim: the -once's [N, S0] crossed reconciler A's [S0]: %v; requests %v", violations, e.requests())
	}
	if m := e.mismatch(); m != "" {
		t.Errorf("a minute later, still: %s; -once %s; reconciler A %s", m, run, runA)
	}
}

// TestAdvClaimFromClockAheadBlocksRotations: one replica's clock runs a day
// ahead (a broken NTP, a VM restored from a snapshot). It reconciles the
// stable client as usual: claim, read, [S0], done. Its claim says
// until = its now + 10s, a day ahead of everyone else, and unlike a lease
// it is never released: it stays in the metadata.
//
// Then an operator's -once stages: its write is answered with that claim,
// which is "another run's and may still be live", so it waits until the
// claim's until + margin: a day. Nothing caps the wait, and the replica
// writes a fresh claim a day ahead at every reconcile (hourly), so no
// staging and no -reaccept-previous of the client ever sends anything: a
// rotation never completes (the leaked-secret -once included), and the
// record stays staged with the new secret pending.
//
// Why: postGate trusts the claim's until as written; elsewhere a time in
// the record beyond now + clock_skew_margin is taken as now (trustedAt,
// record_future_times_total). Under the lease protocol the skewed replica
// released its lease when done and held nobody back. (Fix idea: a claim
// found in a write's answer can only belong to a request that started
// before that write, and a legitimate claim lasts at most 2 × the request
// timeout: wait at most from the write's time 2 × request_timeout +
// margin, and count a claim beyond that as from a clock running ahead.)
func TestAdvClaimFromClockAheadBlocksRotations(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0)
	margin := func(o *rotator.Options) { o.ClockSkewMargin = 5 * time.Second }

	z := e.proc("pod-z")
	ahead := advSkewClock{FakeClock: e.clock, d: 24 * time.Hour}
	rz := e.rotate(z, z.rotator(withClaims(func(o *rotator.Options) { margin(o); o.Clock = ahead })), z.client(),
		rotator.Trigger{Reason: rotator.ReasonReconcile, Time: ahead.Now()})
	if !e.drive(time.Second, time.Minute, rz.finished) || rz.err != nil {
		t.Fatalf("reconcile of the replica running ahead: %s", rz)
	}
	c, _, _ := e.store.Read(e.ctx, e.path)
	t.Logf("claim left in the metadata: %s (now %s)", c.Claims, e.clock.Now().Format(time.RFC3339))

	op := e.proc("host/once")
	run := e.rotate(op, op.rotator(withClaims(margin)), op.client(), e.once())
	if !e.drive(10*time.Second, 30*time.Minute, run.finished) || run.err != nil || run.out.Result != rotator.ResultSuccess {
		t.Errorf("-once after a reconcile by a replica whose clock runs a day ahead: %s after 30 minutes (request timeout 5s); phase %q; requests %v",
			run, phaseOf(e.record()), e.requests())
	}
}

// TestAdvClaimShorterRequestTimeoutHidesLiveClaim: the same hole as
// TestAdvClaimOverwrittenByEarlierUntil with nothing slow but Affix, within
// its deadline: two replicas during a rolling change of
// rotation.request_timeout (here 5s → 1s). Replica A (5s) claims
// until t0+10s and sends [S0], which Affix takes 4.5s to apply (inside A's
// 5s deadline). Replica B (1s) reconciles meanwhile: its claim, until
// t0+1s+2s, replaces A's. A -once staging now finds B's claim, waits until
// t0+3s + margin, sends [N, S0] and makes N current; A's [S0] then lands,
// in time as far as A knows.
//
// What breaks: I1 (Affix accepts [S0], Vault's current is N), undetected:
// A's answer came before its until, the -once's request was confirmed.
//
// Why: the claim key holds only the last claim, whose until may be earlier
// than a claim it replaced; the stager waits for the last one only.
func TestAdvClaimShorterRequestTimeoutHidesLiveClaim(t *testing.T) {
	e := newMemHarness(t)
	e.grace = time.Hour
	e.setRotatedAt(e.start0)
	margin := func(o *rotator.Options) { o.ClockSkewMargin = time.Second }

	a := e.proc("pod-a")
	aPost := a.pauseBefore(isPost(1), false)
	runA := e.rotate(a, a.rotator(withClaims(margin)), a.client(), e.reconcileTrigger())
	aPost.await()

	e.advance(time.Second)
	b := e.proc("pod-b")
	runB := e.rotate(b, b.rotator(withClaims(func(o *rotator.Options) { margin(o); o.RequestTimeout = time.Second })), b.client(), e.reconcileTrigger())
	if !e.drive(100*time.Millisecond, time.Second, runB.finished) || runB.err != nil {
		t.Fatalf("replica B: %s", runB)
	}
	c, _, _ := e.store.Read(e.ctx, e.path)
	t.Logf("claim after B's reconcile: %s; A's claim said t0+10s, its request may run until t0+5s", c.Claims)

	op := e.proc("host/once")
	run := e.rotate(op, op.rotator(withClaims(margin)), op.client(), e.once())
	var violations []string
	check := func() {
		if v := e.violations(); len(v) > 0 && violations == nil {
			violations = append(v, "at t0+"+e.clock.Now().Sub(e.start0).String())
		}
	}
	e.drive(500*time.Millisecond, e.start0.Add(4500*time.Millisecond).Sub(e.clock.Now()), func() bool { check(); return false })
	if now := e.clock.Now(); now.After(e.start0.Add(5 * time.Second)) {
		t.Fatalf("test script: A's request must be answered within its 5s deadline, now %s", now)
	}
	aPost.resume() // Affix applies A's [S0] at t0+4.5s, inside A's 5s deadline
	e.drive(time.Second, 2*time.Minute, func() bool { check(); return runA.finished() && e.clock.Now().After(e.start0.Add(time.Minute)) })
	if violations != nil {
		t.Errorf("B's shorter claim replaced A's live one: the -once's [N, S0] crossed A's [S0]: %v; requests %v", violations, e.requests())
	}
	if m := e.mismatch(); m != "" {
		t.Errorf("a minute later, still: %s; -once %s; replica A %s", m, run, runA)
	}
}

// noPatchStore is a Vault whose KV engine has no metadata PATCH (it came
// with Vault 1.10, hashicorp/vault#13215; before, the PATCH is answered 405
// "unsupported operation", while data writes and reads work), or one that refuses the claim for any reason
// other than a policy (400: custom_metadata already holds its 64 keys, or a
// value too long): vault.Store.Claim then returns what classify makes of a
// ResponseError that is neither 403 nor 5xx.
type noPatchStore struct{ *memStore }

func (s noPatchStore) Claim(ctx context.Context, path string, _ vault.Claim, _ []string) error {
	return errors.New("vault: claim secret/" + path + ": 405 1 error occurred: * unsupported operation")
}

// TestAdvClaimRefusedNotDeniedStarvesSchedule: only a Vault that *denies*
// the claim's PATCH (ErrDenied) makes the reconcile fall back to the lease.
// Any other permanent refusal (a Vault without KV metadata PATCH, which
// answers 405; custom_metadata full, 400) is retried like an outage, for
// ever in the daemon (GiveUpAfter 0). The daemon's client loop runs one
// Rotate at a time, so its first reconcile never returns: the client's
// scheduled rotation never starts (nor max_age's), and no [current] is ever
// sent to repair drift — although Vault's data path and Affix both work,
// and the lease protocol (or the fallback) would reconcile fine.
//
// Script: a stable record due for rotation at t0+90m (@every 720h),
// a daemon with reconcile_interval 1h on a Vault whose metadata PATCH
// answers 405. At t0+1h the reconcile starts and never ends; at t0+3h the
// rotation has not happened.
//
// Why: reconcileStable treats only vault.ErrDenied as "the claim is not
// available here"; every other error goes to r.retry. (Fix idea: fall back
// to the lease for any claim error that is not transient — not
// ErrUnavailable — or after the claim has failed for a while; and never let
// a reconcile run block the schedule indefinitely.)
func TestAdvClaimRefusedNotDeniedStarvesSchedule(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0.Add(-720*time.Hour + 90*time.Minute))
	d := e.proc("pod-a")
	e.daemon(d, d.rotator(withClaims(func(o *rotator.Options) {
		o.Store = noPatchStore{(*memStore)(d)}
		o.ReconcileInterval = time.Hour
	})), d.client())
	for e.clock.Now().Before(e.start0.Add(3 * time.Hour)) {
		e.advance(5 * time.Minute)
	}
	if n := e.stagedCount(); n == 0 || phaseOf(e.record()) != "stable" || e.recordTime("rotated_at").Before(e.start0) {
		t.Errorf("3h after start, 90m past the scheduled rotation: phase %q, rotated_at %s, rotations staged %d, requests %v (the reconcile at t0+1h never ended: its claim PATCH is refused with a 405)",
			phaseOf(e.record()), e.recordTime("rotated_at").Format(time.RFC3339), n, e.requests())
	}
}
