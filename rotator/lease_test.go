package rotator_test

import (
	"context"
	"testing"
	"time"

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
