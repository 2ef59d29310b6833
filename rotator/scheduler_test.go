package rotator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/metrictest"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// TestRunCatchesUpMaxAge: at start the daemon rotates at once a client whose
// last rotation is older than max_age, and not one that is recent.
func TestRunCatchesUpMaxAge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		age     time.Duration
		rotates bool
	}{{"old", 40 * 24 * time.Hour, true}, {"recent", 24 * time.Hour, false}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.setRotatedAt(h.clock.Now().Add(-tc.age))
			ctx, cancel := context.WithCancel(ctxT(t))
			defer cancel()
			p, r, reg := h.metered("d1")
			c := p.client()
			c.Schedule, _ = cron.ParseStandard("@every 720h")
			c.MaxAge = 30 * 24 * time.Hour
			ran := h.daemon(ctx, r, c)
			h.asleep(ctx)
			if tc.rotates {
				h.clock.Advance(h.grace)
				h.asleep(ctx) // waiting for the next schedule
				eq(t, "requests", h.requests(), []string{"200[N1,S0]", "200[N1]"})
				if v := metrictest.Value(t, reg, "affix_rotator_rotations_total", "result", rotator.ResultSuccess); v != 1 {
					t.Fatalf("rotations_total{success} = %v", v)
				}
			} else if n := len(h.fake.Requests()); n != 0 {
				t.Fatalf("recent client rotated at start (%d requests)", n)
			}
			next := metrictest.Value(t, reg, "affix_rotator_next_rotation_timestamp_seconds")
			// The schedule is anchored on the record: 720h after rotated_at.
			want := h.clock.Now().Add(720 * time.Hour)
			if !tc.rotates {
				want = want.Add(-tc.age)
			}
			if d := time.Duration((next - float64(want.Unix())) * float64(time.Second)); d < -time.Second || d > time.Second {
				t.Fatalf("next_rotation_timestamp_seconds = %v, want about %v", next, want.Unix())
			}
			cancel()
			<-ran
		})
	}
}

// TestRunResumesAtStart: a client left staged by a dead process is resumed
// at start, before any schedule fires.
func TestRunResumesAtStart(t *testing.T) {
	h := newHarness(t)
	pending := h.stageByOther("d1", time.Hour)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	p := h.process("d1", nil)
	r := p.rotator(nil)
	ran := make(chan struct{})
	go func() { r.Run(ctx, []*rotator.Client{p.client()}); close(ran) }()
	h.asleep(ctx)
	reqs := h.fake.Requests()
	if len(reqs) != 1 || reqs[0].ClientSecret[0] != pending {
		t.Fatalf("not resumed at start: %v", h.requests())
	}
	cancel()
	<-ran
}

// TestScheduleFires: rotations happen on the cron schedule and only then.
func TestScheduleFires(t *testing.T) {
	h := newHarness(t)
	h.setRotatedAt(h.clock.Now())
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	p := h.process("d1", nil)
	r := p.rotator(nil)
	c := p.client() // @every 1h, grace 10s
	ran := h.daemon(ctx, r, c)
	h.asleep(ctx)
	h.clock.Advance(time.Hour - time.Second)
	h.asleep(ctx)
	if n := len(h.fake.Requests()); n != 0 {
		t.Fatalf("%d requests before the schedule", n)
	}
	h.clock.Advance(time.Second)
	h.asleep(ctx)
	h.clock.Advance(h.grace)
	h.asleep(ctx)
	h.clock.Advance(time.Hour)
	h.asleep(ctx)
	h.clock.Advance(h.grace)
	h.asleep(ctx)
	eq(t, "two scheduled rotations", h.requests(), []string{"200[N1,S0]", "200[N1]", "200[N2,N1]", "200[N2]"})
	st := r.Status()
	if len(st) != 1 || st[0].Phase != "stable" || st[0].NextRun == nil || st[0].LastResult != rotator.ResultSuccess {
		t.Fatalf("status %+v", st)
	}
	cancel()
	<-ran
}

// TestMissingRecord: without bootstrap a missing record fails with the
// command that seeds it; with bootstrap the first rotation posts [new] alone.
func TestMissingRecord(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	if err := h.vault.Client().KVv2("secret").DeleteMetadata(ctx, h.path); err != nil {
		t.Fatal(err)
	}
	p := h.process("d1", nil)
	out, err := h.rotate(ctx, p, p.rotator(nil), h.once())
	if err == nil || out.Result != rotator.ResultFailed || !strings.Contains(err.Error(), "vault kv put -cas=0 secret/"+h.path+" client_secret=-") {
		t.Fatalf("missing record: %+v %v", out, err)
	}
	if len(h.fake.Requests()) != 0 {
		t.Fatal("requests sent for a missing record")
	}
	c := p.client()
	c.Bootstrap = true
	h.fake.AddClient(h.key, "client-id-1") // a brand-new Affix client: no secret yet
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	h.drive(dctx, time.Second)
	out, err = p.rotator(nil).Rotate(ctx, c, h.once())
	if err != nil || out.Result != rotator.ResultSuccess {
		t.Fatalf("bootstrap: %+v %v", out, err)
	}
	eq(t, "bootstrap requests", h.requests(), []string{"200[N1]"})
	rec := h.rawRecord()
	if str(rec, "phase") != "stable" || !h.staged[str(rec, "client_secret")] {
		t.Fatalf("bootstrap record: %v", keys(rec))
	}
}

// TestMalformedRecordIsLeftAlone: the rotator fails with a clear error and
// writes nothing.
func TestMalformedRecordIsLeftAlone(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	kv := h.vault.Client().KVv2("secret")
	if _, err := kv.Put(ctx, h.path, map[string]any{"client_secret": h.s0, "pending_client_secret": "x-pending"}); err != nil {
		t.Fatal(err)
	}
	p := h.process("d1", nil)
	out, err := h.rotate(ctx, p, p.rotator(nil), h.once())
	if err == nil || out.Result != rotator.ResultFailed || !strings.Contains(err.Error(), "malformed") || strings.Contains(err.Error(), "x-pending") {
		t.Fatalf("%+v %v", out, err)
	}
	meta, err := kv.GetMetadata(ctx, h.path)
	if err != nil || meta.CurrentVersion != 2 {
		t.Fatalf("record was written (version %d): %v", meta.CurrentVersion, err)
	}
}

// TestFenceScheduleSurvivesRestarts: @every 720h with a daemon restarted
// every 24h: the rotation still happens 720h after rotated_at.
func TestFenceScheduleSurvivesRestarts(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0)
	for day := 0; day < 31; day++ {
		p := e.proc("pod-a")
		run := e.daemon(p, p.rotator(nil), p.client())
		e.advance(24 * time.Hour)
		p.stop()
		e.wait(run)
	}
	reqs := e.fake.Requests()
	if len(reqs) == 0 {
		t.Fatalf("no rotation in 31 days of daily restarts with @every 720h and rotated_at 31 days ago: the schedule counts from the process start, not from rotated_at")
	}
	if due := e.start0.Add(720 * time.Hour); reqs[0].Time.Before(due) || reqs[0].Time.After(due.Add(24*time.Hour)) {
		t.Fatalf("first rotation at %s, want at rotated_at+720h = %s", reqs[0].Time, due)
	}
}

// TestFenceScheduleMissedRunAtStart: a run missed while the daemon was down
// (rotated_at+720h is in the past) happens at start, even without max_age.
func TestFenceScheduleMissedRunAtStart(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0.Add(-800 * time.Hour))
	p := e.proc("pod-a")
	e.daemon(p, p.rotator(nil), p.client())
	e.quiet()
	if got := e.requests(); len(got) == 0 || got[0] != "200[N1,S0]" {
		t.Fatalf("daemon started 80h after a missed @every 720h run (rotated_at 800h ago) and did not rotate at start: requests %v", got)
	}
}

// TestFenceMaxAgeHardBound: a running daemon rotates when max_age is
// reached, before the schedule's next run.
func TestFenceMaxAgeHardBound(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0)
	p := e.proc("pod-a")
	c := p.client()
	c.MaxAge = 240 * time.Hour
	e.daemon(p, p.rotator(nil), c)
	e.advance(240*time.Hour + time.Minute)
	if got := e.requests(); len(got) == 0 {
		t.Fatalf("no rotation 240h+1m after rotated_at with max_age 240h (schedule @every 720h) while the daemon ran: max_age is only checked at start")
	}
	if first := e.fake.Requests()[0].Time; first.After(e.start0.Add(240*time.Hour + time.Minute)) {
		t.Fatalf("first request at %s, after max_age", first)
	}
}

// TestFenceTwoReplicasOneRotationPerPeriod: two replicas (d2 started 30m
// after d1) run one client @every 1h: one rotation per period, not one per
// replica.
func TestFenceTwoReplicasOneRotationPerPeriod(t *testing.T) {
	e := newMemHarness(t)
	e.setRotatedAt(e.start0)
	sched, _ := cron.ParseStandard("@every 1h")
	d1, d2 := e.proc("d1"), e.proc("d2")
	c1, c2 := d1.client(), d2.client()
	c1.Schedule, c2.Schedule = sched, sched
	e.daemon(d1, d1.rotator(nil), c1)
	e.drive(time.Minute, 30*time.Minute, func() bool { return false })
	e.daemon(d2, d2.rotator(nil), c2)
	e.drive(time.Minute, 3*time.Hour, func() bool { return false })
	if n := e.stagedCount(); n != 3 {
		t.Fatalf("%d rotations in 3h30m with @every 1h on two replicas (d2 started 30m after d1), want 3 (one per period): each replica counts the schedule from its own start; requests %v",
			n, e.requests())
	}
}

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

	e.reacceptPrevious(2*time.Hour, nil)
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
