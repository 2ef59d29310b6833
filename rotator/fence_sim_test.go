package rotator_test

// Regressions the simulation found after issue 9's fixes (seeds 1–12,000 of
// the 12,000-seed run); each test fails on the code before its fix.

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestReconcileWaitsOutAFrozenHoldersLease (seed 11101): a reconcile run
// that found another process's live lease used to end at once, trusting the
// holder to answer for Affix's state; if the holder is frozen, the next
// reconcile came a whole interval later, so drift lasted up to two
// intervals. It now follows the lease and repairs as soon as it ends.
func TestReconcileWaitsOutAFrozenHoldersLease(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0)
	b := e.proc("pod-b")
	e.daemon(b, b.rotator(func(o *rotator.Options) { o.ReconcileInterval = 10 * time.Minute }), b.client())
	e.quiet()
	e.advance(9 * time.Minute)
	// pod-a takes the lease (to re-assert, say) and freezes for good; a
	// late request of some process has meanwhile left Affix accepting a
	// secret the record does not hold.
	rec := e.record()
	rec["lease_owner"], rec["lease_until"] = "pod-a", e.clock.Now().Add(90*time.Second).Format(time.RFC3339Nano)
	e.put(rec)
	e.fake.AddClient(e.key, "client-id-1", e.s0, newSecret(t))
	leaseEnd := e.clock.Now().Add(90 * time.Second)
	e.drive(5*time.Second, 5*time.Minute, func() bool { return e.mismatch() == "" })
	if mm := e.mismatch(); mm != "" {
		t.Fatalf("5m after the drift, pod-a's lease ended at %s: %s (requests %v)", leaseEnd.Sub(e.start0), mm, e.requests())
	}
	if late := e.clock.Now().Sub(leaseEnd); late > time.Minute {
		t.Errorf("drift repaired %s after the frozen holder's lease ended, want within a minute (requests %v)", late, e.requests())
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

// TestLostWriteThenAnnotationReleasesLease (seed 89574 of the 100,000
// run): the overlap write's answer is lost and an operator annotates the
// record before the run reads it again. The run went on under its lease
// (its instance id) without knowing the lease was its own, and a clean
// stop left it in place for the lease to run out.
func TestLostWriteThenAnnotationReleasesLease(t *testing.T) {
	e := newMemHarness(t)
	n1 := newSecret(t)
	graceUntil := e.start0.Add(10 * time.Minute)
	e.put(map[string]any{"client_secret": n1, "previous_client_secret": e.s0, "phase": "overlap",
		"rotation_id": "started-by-pod-b", "grace_until": graceUntil.Format(time.RFC3339Nano)})
	e.fake.AddClient(e.key, "client-id-1", n1, e.s0)
	p := e.proc("pod-a")
	var lost atomic.Bool
	// pod-a takes the released overlap over: that write's answer is lost,
	// and an operator annotates the record right after it.
	takeover := func(c ioCall) bool { return c.op == "write" && c.rec.LeaseOwner == "pod-a" && !lost.Load() }
	p.loseAnswer = func(r vault.Record) bool { return r.LeaseOwner == "pod-a" && lost.CompareAndSwap(false, true) }
	p.hook(&ioHook{after: true, match: takeover, action: func() {
		rec := e.record()
		rec["owner_team"] = "payments" // keeps the lease fields
		e.put(rec)
	}})
	run := e.rotate(p, p.rotator(nil), p.client(), rotator.Trigger{Reason: rotator.ReasonStartup, Time: e.clock.Now()})
	e.advance(3 * time.Second) // past the retry: the run reads the annotated record and waits out the grace
	if !lost.Load() || phaseOf(e.record()) != "overlap" || !e.leaseHeld("pod-a") || run.finished() {
		t.Fatalf("setup: answer lost %v, run %v, record %v", lost.Load(), run, e.record())
	}
	p.stop()
	e.wait(run)
	if e.leaseHeld("pod-a") {
		t.Errorf("pod-a stopped cleanly in the grace and left its lease (until %s) for the next process to wait out", str(e.record(), "lease_until"))
	}
}
