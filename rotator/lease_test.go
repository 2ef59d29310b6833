package rotator_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// stageByOther writes a staged record as if process owner had staged it and
// died, with its lease running until leaseFor from now.
func (h *harness) stageByOther(owner string, leaseFor time.Duration) string {
	h.t.Helper()
	ctx := context.Background()
	rec, v, err := h.store.Read(ctx, h.path)
	if err != nil {
		h.t.Fatal(err)
	}
	pending, _ := secret.Generate()
	rec.Phase, rec.PendingClientSecret, rec.RotationID = vault.PhaseStaged, pending, "other-rotation"
	rec.LeaseOwner, rec.LeaseUntil = owner, h.clock.Now().Add(leaseFor)
	if _, err := h.store.Write(ctx, h.path, rec, v); err != nil {
		h.t.Fatal(err)
	}
	return pending.Reveal()
}

// TestForeignLeaseIsWaitedOut: a rotation staged by another live process is
// left alone until its lease ends, then resumed with its secret (I4, I6).
func TestForeignLeaseIsWaitedOut(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	pending := h.stageByOther("other", 2*time.Minute)
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, rotator.Trigger{Reason: rotator.ReasonStartup, Time: h.clock.Now()})
	h.asleep(ctx)
	h.clock.Advance(2*time.Minute - time.Second)
	h.asleep(ctx)
	if n := len(h.fake.Requests()); n != 0 {
		t.Fatalf("%d requests sent while another process held the lease", n)
	}
	h.drive(ctx, time.Second)
	res := h.wait(ctx, done)
	if res.err != nil || res.out.Result != rotator.ResultSuccess {
		t.Fatalf("%+v", res)
	}
	reqs := h.fake.Requests()
	if len(reqs) != 2 || reqs[0].ClientSecret[0] != pending || reqs[0].Time.Before(h.clock.Now().Add(-time.Hour)) {
		t.Fatalf("resumed with another secret or too early: %v", h.requests())
	}
	if str(h.rawRecord(), "client_secret") != pending {
		t.Fatal("final secret is not the one staged by the other process")
	}
}

// TestOwnLeaseIsTakenOverAtOnce: a restarted daemon (same instance id)
// resumes at once, without waiting for its old lease.
func TestOwnLeaseIsTakenOverAtOnce(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	pending := h.stageByOther("d1", time.Hour)
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, h.once())
	h.asleep(ctx) // grace
	reqs := h.fake.Requests()
	if len(reqs) != 1 || reqs[0].ClientSecret[0] != pending {
		t.Fatalf("did not resume at once with the staged secret: %v", h.requests())
	}
	h.drive(ctx, time.Second)
	if res := h.wait(ctx, done); res.err != nil {
		t.Fatal(res.err)
	}
}

// TestTwoProcessesRace: two daemons and a one-shot run fire at the same
// instant on one client: exactly one secret is generated and one rotation
// runs; the others wait and report it done (I4).
func TestTwoProcessesRace(t *testing.T) {
	for i := 0; i < 5; i++ {
		h := newHarness(t)
		ctx := ctxT(t)
		trig := rotator.Trigger{Reason: rotator.ReasonSchedule, Time: h.clock.Now()}
		var dones []chan result
		for _, id := range []string{"d1", "d2", "host/once-1"} {
			p := h.process(id, nil)
			dones = append(dones, h.start(ctx, p.rotator(nil), p, trig))
		}
		h.drive(ctx, time.Second)
		byOther := 0
		for _, d := range dones {
			res := h.wait(ctx, d)
			if res.err != nil || res.out.Result != rotator.ResultSuccess {
				t.Fatalf("round %d: %+v", i, res)
			}
			if res.out.ByOther {
				byOther++
			}
		}
		if len(h.staged) != 1 || byOther != 2 {
			t.Fatalf("round %d: %d secrets generated, %d processes saw another's rotation (want 1, 2); requests %v", i, len(h.staged), byOther, h.requests())
		}
		eq(t, "requests", h.requests(), []string{"200[N1,S0]", "200[N1]"})
	}
}

// TestFenceAbortAfterTakeoverKeepsSecret: A stages N1 and gets a 429; it is
// then frozen (VM pause) before its next I/O call, past its lease. B (a
// -once) takes the lease and sends [N1,S0]; Affix applies it but the answer
// is lost, and B dies. A resumes, takes the lease back and gets a lasting
// 401. Since B drove the rotation, N1 may be accepted: A must keep it
// (staged, retrying), not abort and drop it from Vault (I2).
func TestFenceAbortAfterTakeoverKeepsSecret(t *testing.T) {
	e := newMemHarness(t)
	e.fake.Inject(affixtest.Fault{Status: 429, RetryAfter: "30"})
	a := e.proc("pod-a")
	var armed atomic.Bool
	a.hook(&ioHook{after: true, match: isPost(2), action: func() { armed.Store(true) }})
	freeze := a.pauseBefore(func(ioCall) bool { return armed.Load() }, false)
	runA := e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.drive(time.Second, 2*time.Minute, freeze.isReached)
	freeze.await()
	eq(t, "A's request", e.requests(), []string{"429[N1,S0]"})

	e.advance(2 * time.Minute) // A's lease (1m) is over while it is frozen
	b := e.proc("host/once-1")
	b.hook(&ioHook{after: true, match: isPost(2), action: b.kill})
	e.fake.Inject(affixtest.Fault{ApplyThenDrop: true})
	runB := e.rotate(b, b.rotator(nil), b.client(), e.once())
	e.wait(runB)
	eq(t, "after B", e.requests(), []string{"429[N1,S0]", "0[N1,S0]"})
	if !e.fake.Accepts(e.key, str(e.record(), "pending_client_secret")) {
		t.Fatal("setup: B's [N1,S0] was not applied")
	}

	for i := 0; i < 30; i++ {
		e.fake.Inject(affixtest.Fault{Status: 401})
	}
	e.advance(2 * time.Minute) // B's lease has ended too
	freeze.resume()
	e.drive(time.Second, time.Minute, func() bool { return runA.finished() || len(e.fake.Requests()) > 2 })
	e.quiet()
	if n := len(e.fake.Requests()); n < 3 {
		t.Fatalf("setup: A did not try again (requests %v)", e.requests())
	}
	for _, v := range e.violations() {
		t.Errorf("after A's 401 on a rotation B had taken over and sent: %s (requests %v)", v, e.requests())
	}
	if runA.finished() && runA.out.Result == rotator.ResultAborted {
		t.Errorf("A aborted the rotation (%v) although B, which took it over, may have had [N1,S0] applied; want it kept staged and retried", runA.err)
	}
}

// TestFenceCleanStopReleasesLease: a daemon stopped cleanly (ctx cancelled)
// releases its lease, so another process proceeds at once.
func TestFenceCleanStopReleasesLease(t *testing.T) {
	t.Run("staged", func(t *testing.T) {
		e := newMemHarness(t)
		e.fake.Inject(affixtest.Fault{Status: 500})
		a := e.proc("pod-a")
		runA := e.rotate(a, a.rotator(nil), a.client(), e.once())
		e.quiet() // backing off after the 500
		a.stop()
		e.wait(runA)
		if e.leaseHeld("pod-a") {
			t.Errorf("after pod-a stopped cleanly, the record still names it lease owner until %s", str(e.record(), "lease_until"))
		}
		b := e.proc("pod-b")
		e.rotate(b, b.rotator(nil), b.client(), e.once())
		e.quiet()
		eq(t, "requests once pod-b started, with no time passing", e.requests(), []string{"500[N1,S0]", "200[N1,S0]"})
	})
	t.Run("overlap", func(t *testing.T) {
		e := newMemHarness(t)
		a := e.proc("pod-a")
		runA := e.rotate(a, a.rotator(nil), a.client(), e.once())
		e.quiet() // in the grace
		a.stop()
		e.wait(runA)
		if e.leaseHeld("pod-a") {
			t.Errorf("after pod-a stopped cleanly in overlap, the record still names it lease owner until %s", str(e.record(), "lease_until"))
		}
		graceUntil := e.recordTime("grace_until")
		b := e.proc("pod-b")
		runB := e.rotate(b, b.rotator(nil), b.client(), e.once())
		e.drive(time.Second, 5*time.Minute, runB.finished)
		reqs := e.fake.Requests()
		if len(reqs) != 2 || reqs[1].Time.After(graceUntil.Add(5*time.Second)) {
			t.Errorf("pod-b should drop the old secret at grace_until %s, as pod-a released its lease; requests %v, last at %s",
				graceUntil, e.requests(), reqs[len(reqs)-1].Time)
		}
	})
}

// TestFenceGiveUpReleasesLease: a -once run that gives up (GiveUpAfter)
// releases its lease.
func TestFenceGiveUpReleasesLease(t *testing.T) {
	e := newMemHarness(t)
	for i := 0; i < 50; i++ {
		e.fake.Inject(affixtest.Fault{Status: 500})
	}
	p := e.proc("host/once-1")
	run := e.rotate(p, p.rotator(func(o *rotator.Options) { o.GiveUpAfter = 30 * time.Second }), p.client(), e.once())
	e.drive(time.Second, 5*time.Minute, run.finished)
	if !run.finished() || run.out.Result != rotator.ResultFailed {
		t.Fatalf("setup: the -once run did not give up: %+v %v", run.out, run.err)
	}
	if e.leaseHeld("host/once-1") {
		t.Errorf("the -once run gave up and exited, but the record still names it lease owner until %s (another process sits idle until then)",
			str(e.record(), "lease_until"))
	}
}
