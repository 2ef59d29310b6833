package rotator_test

// "The record is the whole truth": each test pins a fact that once lived in
// one process's memory, or nowhere, and now lives in the Vault record, so
// that a restarted process, a replica or an operator's command decides the
// same. They run on the in-memory harness (memHarness, harness_test.go):
// the real rotator, the in-memory KV v2 store and the Affix fake, on a fake
// clock.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/metrictest"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

var incidentAudit = &rotator.Audit{By: "alice", Reason: "secret pasted in a chat"}

// The leaked-secret incident: `-once -grace 30s` while a rotation is in its
// 24h grace. It must end with a new secret current and the secret current
// when it ran no longer accepted, within the grace plus the margins, and
// never report success while that secret is still accepted. (On bf7ad79 it
// waited out the 24h grace and reported "completed by another process".)
func TestOnceWithGraceDuringOverlapRetiresTheLeakedSecret(t *testing.T) {
	e := newMemHarness(t)
	_, _, leaked := e.inOverlap("pod-a", 24*time.Hour)
	op := e.proc("host/once-1")
	c := op.client()
	c.GracePeriod = 30 * time.Second
	start := e.clock.Now()
	run := e.rotate(op, op.rotator(func(o *rotator.Options) { o.ClockSkewMargin = 30 * time.Second }), c,
		rotator.Trigger{Reason: rotator.ReasonOnce, Time: start, Grace: 30 * time.Second, Audit: incidentAudit})
	retired := time.Time{}
	e.drive(time.Second, 10*time.Minute, func() bool {
		if retired.IsZero() && !e.fake.Accepts(e.key, leaked) {
			retired = e.clock.Now()
		}
		if v := e.violations(); len(v) > 0 {
			t.Fatalf("%v; requests %v", v, e.requests())
		}
		return run.finished()
	})
	if !run.finished() || run.err != nil || run.out.Result != rotator.ResultSuccess || run.out.ByOther {
		t.Fatalf("-once -grace 30s in a 24h overlap: %s; want its own rotation completed; requests %v", run, e.requests())
	}
	if e.fake.Accepts(e.key, leaked) {
		t.Fatalf("-once -grace 30s reported success while the secret current when it ran is still accepted; requests %v", e.requests())
	}
	if bound := 30*time.Second + 30*time.Second + 30*time.Second; retired.Sub(start) > bound {
		t.Fatalf("the leaked secret was accepted for %s after -once -grace 30s, want at most %s (grace + skew margin + slack)", retired.Sub(start), bound)
	}
	a := e.record()["last_action"]
	if s, _ := a.(string); !strings.Contains(s, `"rotate"`) || !strings.Contains(s, "alice") {
		t.Errorf("last_action %v, want the operator's rotate", a)
	}
}

// A plain -once (no -grace) during an overlap waits for that grace, and is
// satisfied only by a rotation staged at or after it: it runs a new one.
func TestOnceIsSatisfiedOnlyByARotationStagedAfterIt(t *testing.T) {
	e := newMemHarness(t)
	_, _, current := e.inOverlap("pod-a", time.Hour)
	op := e.proc("host/once-1")
	run := e.rotate(op, op.rotator(nil), op.client(), e.once())
	e.drive(time.Minute, 3*time.Hour, run.finished)
	if !run.finished() || run.err != nil || run.out.ByOther {
		t.Fatalf("-once during an overlap: %s; want a rotation of its own; requests %v", run, e.requests())
	}
	if n := e.stagedCount(); n != 2 {
		t.Fatalf("%d rotations staged, want 2 (the one in flight and the -once's own); requests %v", n, e.requests())
	}
	if e.fake.Accepts(e.key, current) {
		t.Fatalf("-once succeeded while the secret current when it ran is still accepted")
	}
}

// An operator's -grace travels with the rotation: a -once -grace 5m killed
// after staging, before Affix saw anything, is resumed by a daemon whose
// own grace is 24h; the overlap it confirms lasts 5m. (On bf7ad79 the 5m
// lived in the -once's memory only, and the daemon used 24h.)
func TestOperatorGraceTravelsWithTheRotation(t *testing.T) {
	e := newMemHarness(t)
	op := e.proc("host/once-1")
	c := op.client()
	c.GracePeriod = 5 * time.Minute
	op.hook(&ioHook{match: isPost(2), action: op.kill})
	run := e.rotate(op, op.rotator(nil), c, rotator.Trigger{Reason: rotator.ReasonOnce, Time: e.clock.Now(), Grace: 5 * time.Minute, Audit: incidentAudit})
	e.drive(time.Second, time.Minute, run.finished)
	if phaseOf(e.record()) != "staged" {
		t.Fatalf("setup: the -once was not killed in staged: phase %s, requests %v", phaseOf(e.record()), e.requests())
	}
	d := e.proc("pod-a")
	dc := d.client()
	dc.GracePeriod = 24 * time.Hour
	e.daemon(d, d.rotator(nil), dc)
	var confirmedAt time.Time
	e.drive(time.Second, 10*time.Minute, func() bool {
		if phaseOf(e.record()) == "overlap" {
			confirmedAt = e.clock.Now()
			return true
		}
		return false
	})
	if confirmedAt.IsZero() {
		t.Fatalf("the daemon did not resume the staged rotation; requests %v", e.requests())
	}
	if g := e.recordTime("grace_until").Sub(confirmedAt); g > 5*time.Minute+time.Second {
		t.Fatalf("the daemon confirmed the operator's -grace 5m rotation with a grace of %s: the operator's grace was dropped", g)
	}
}

// -extend-grace after the driving process sent [new] (its drop) but could
// not record it: its writes failed twice with a read in between. The
// extension must be honoured by Affix, not only by the record. (On
// bf7ad79 Affix rejected the previous secret for the whole extended grace.)
func TestExtendGraceAfterAnUnrecordedDropIsHonoured(t *testing.T) {
	e := newMemHarness(t)
	a := e.proc("pod-a")
	c := a.client()
	c.GracePeriod = time.Minute
	failing := false
	a.failWrite = func(r vault.Record) bool { return failing }
	a.hook(&ioHook{after: true, match: isPost(1), action: func() { failing = true }})
	e.rotate(a, a.rotator(nil), c, e.once())
	prev := ""
	e.drive(time.Second, 5*time.Minute, func() bool {
		if p := str(e.record(), "previous_client_secret"); p != "" {
			prev = p
		}
		return failing && !e.fake.Accepts(e.key, prev)
	})
	if !failing || prev == "" {
		t.Fatalf("setup: no drop sent; requests %v", e.requests())
	}
	e.advance(3 * time.Second) // a failed write, a read, another failed write
	e.advance(3 * time.Second)
	op := e.proc("host/op-1")
	r := op.rotator(nil)
	var until time.Time
	run := e.spawn(op, 1, func(ctx context.Context, run *memRun) {
		until, run.err = r.ExtendGrace(ctx, op.client(), 30*time.Minute, rotator.Audit{By: "bob", Reason: "partner late"})
	})
	e.drive(time.Second, time.Minute, run.finished)
	if run.err != nil {
		t.Fatalf("extend-grace: %v", run.err)
	}
	failing = false
	e.advance(10 * time.Second)
	if !e.fake.Accepts(e.key, prev) {
		t.Fatalf("-extend-grace 30m reported success (grace until %s), but Affix rejects the previous secret; requests %v", until, e.requests())
	}
}

// -reaccept-previous, then -end-grace: the rotation completed before, so
// rotated_at (the schedule's anchor) must not move. (On bf7ad79 the
// end-grace action overwrote last_action, which was the only trace.)
func TestReacceptThenEndGraceKeepsRotatedAt(t *testing.T) {
	e := newMemHarness(t)
	a := e.proc("pod-a")
	run := e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.drive(time.Second, 5*time.Minute, run.finished)
	rotated := str(e.record(), "rotated_at")
	if rotated == "" {
		t.Fatalf("setup: no completed rotation: %s", run)
	}
	e.advance(time.Hour)
	act := e.reacceptThenEndGrace()
	if act.err != nil || phaseOf(e.record()) != "stable" {
		t.Fatalf("reaccept then end-grace: %s, phase %s", act, phaseOf(e.record()))
	}
	if got := str(e.record(), "rotated_at"); got != rotated {
		t.Fatalf("rotated_at moved from %s to %s although no new secret was made", rotated, got)
	}
}

// A record time written by a clock running ahead is not trusted: a -once
// facing a rotated_at and staged_at 10 days in the future rotates (on
// bf7ad79 it did nothing and reported success), and the daemon counts it.
func TestFutureRecordTimesAreNotTrusted(t *testing.T) {
	e := newMemHarness(t)
	rec := e.record()
	future := e.clock.Now().Add(240 * time.Hour).UTC().Format(time.RFC3339Nano)
	rec["rotated_at"], rec["staged_at"] = future, future
	e.put(rec)
	metered, reg := withMetrics()
	op := e.proc("host/once-1")
	run := e.rotate(op, op.rotator(func(o *rotator.Options) { metered(o); o.ClockSkewMargin = 30 * time.Second }), op.client(), e.once())
	e.drive(time.Second, 5*time.Minute, run.finished)
	if e.stagedCount() != 1 || run.out.ByOther {
		t.Fatalf("-once with rotated_at 10 days ahead: %s, %d rotations; want one of its own", run, e.stagedCount())
	}
	if n := metrictest.Value(t, reg, "affix_rotator_record_future_times_total", "field", "rotated_at"); n < 1 {
		t.Fatalf("record_future_times_total{field=rotated_at} = %v, want at least 1", n)
	}
}

// Why a rotation in flight is stuck belongs to that rotation: after a
// rotation aborted on a 401, the next one stuck on 500s shows the 500 in
// step_error, with failing_since, and no stale last_error. (On bf7ad79
// -status showed the previous rotation's 401.)
func TestStepErrorBelongsToItsRotation(t *testing.T) {
	e := newMemHarness(t)
	e.fake.Inject(affixtest.Fault{Status: 401})
	a := e.proc("pod-a")
	run := e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.drive(time.Second, time.Minute, run.finished)
	if run.out.Result != rotator.ResultAborted || str(e.record(), "last_error") == "" {
		t.Fatalf("setup: want an abort on 401 recorded in last_error: %s", run)
	}
	for range 20 {
		e.fake.Inject(affixtest.Fault{Status: 500})
	}
	b := e.proc("pod-b")
	e.rotate(b, b.rotator(nil), b.client(), e.once())
	e.drive(time.Second, time.Minute, func() bool { return str(e.record(), "step_error") != "" })
	rec := e.record()
	if phaseOf(rec) != "staged" || !strings.Contains(str(rec, "step_error"), "500") || str(rec, "failing_since") == "" {
		t.Fatalf("a rotation stuck on 500s: phase %s, step_error %q, failing_since %q; want staged, the 500, and since when",
			phaseOf(rec), str(rec, "step_error"), str(rec, "failing_since"))
	}
	if le := str(rec, "last_error"); le != "" {
		t.Fatalf("a rotation stuck on 500s still shows the previous rotation's last_error %q", le)
	}
}

// A record seeded by hand (no rotated_at) is anchored where it was seeded,
// a fact from Vault's metadata: @every 1m with a daemon restarted every
// 40s rotates within 3 minutes. (On bf7ad79 each start re-anchored the
// schedule, so it never rotated.)
func TestSeededRecordRotatesDespiteRestarts(t *testing.T) {
	e := newMemHarness(t)
	sched, _ := cron.ParseStandard("@every 1m")
	for i := 0; i < 5 && e.stagedCount() == 0; i++ {
		p := e.proc("pod-a")
		c := p.client()
		c.Schedule = sched
		run := e.daemon(p, p.rotator(nil), c)
		e.drive(time.Second, 40*time.Second, func() bool { return false })
		p.stop()
		e.wait(run)
	}
	if e.stagedCount() == 0 || e.clock.Now().Sub(e.start0) > 3*time.Minute {
		t.Fatalf("a seeded record with @every 1m and a daemon restarted every 40s: %d rotations in %s", e.stagedCount(), e.clock.Now().Sub(e.start0))
	}
}

// markedStore is a process's store with the change marker (ChangeMarker):
// a daemon on it runs one more goroutine, the marker's watcher.
type markedStore struct{ *memStore }

func (s markedStore) ChangesVersion(ctx context.Context) (int, error) {
	return s.e.store.ChangesVersion(ctx)
}

func (s markedStore) BumpChanges(ctx context.Context, client, what string) error {
	return s.e.store.BumpChanges(ctx, client, what)
}

// An operator's change reaches a daemon within reread_interval in every
// phase, stable included, through the change marker; the action is
// counted once, by the process that performed it, and the daemon's gauge
// reflects the record. (On bf7ad79 a stable record was read every
// 10 × reread_interval: -reaccept-previous 1m kept the previous secret
// accepted minutes past grace_until, and the daemon counted what it
// happened to see.)
func TestOperatorChangeReachesTheDaemonWithinRereadInterval(t *testing.T) {
	e := newMemHarness(t)
	a := e.proc("pod-a")
	first := e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.drive(time.Second, 5*time.Minute, first.finished)
	if phaseOf(e.record()) != "stable" || e.stagedCount() != 1 {
		t.Fatalf("setup: %s", first)
	}
	const reread, margin = 30 * time.Second, 30 * time.Second
	marked := func(p *memProc, reg *prometheus.Registry) *rotator.Rotator {
		return p.rotator(func(o *rotator.Options) {
			o.Changes, o.RereadInterval, o.ClockSkewMargin, o.Metrics = markedStore{(*memStore)(p)}, reread, margin, rotator.NewMetrics(reg)
		})
	}
	regD, regOp := prometheus.NewRegistry(), prometheus.NewRegistry()
	d := e.proc("pod-d")
	rd := marked(d, regD)
	e.spawn(d, 2, func(ctx context.Context, _ *memRun) { rd.Run(ctx, []*rotator.Client{d.client()}) })
	e.drive(time.Second, time.Minute, func() bool { return false })

	op := e.proc("host/op-1")
	rop := marked(op, regOp)
	var until time.Time
	act := e.spawn(op, 1, func(ctx context.Context, run *memRun) {
		until, run.err = rop.ReacceptPrevious(ctx, op.client(), time.Minute, rotator.Audit{By: "bob", Reason: "partner broke"})
	})
	e.drive(time.Second, time.Minute, act.finished)
	if act.err != nil {
		t.Fatalf("reaccept-previous: %v", act.err)
	}
	prev := str(e.store.History(e.path)[len(e.store.History(e.path))-1], "previous_client_secret")
	acted := e.clock.Now()
	seen := time.Time{}
	dropped := e.drive(time.Second, 10*time.Minute, func() bool {
		if st := rd.Status(); seen.IsZero() && len(st) == 1 && st[0].Phase == "overlap" {
			seen = e.clock.Now()
		}
		return !e.fake.Accepts(e.key, prev)
	})
	if seen.IsZero() || seen.Sub(acted) > reread+time.Second {
		t.Errorf("the daemon's /status showed the reopened grace %s after the action, want within reread_interval %s", seen.Sub(acted), reread)
	}
	if bound := until.Add(reread + margin + time.Second); !dropped || e.clock.Now().After(bound) {
		t.Fatalf("-reaccept-previous 1m: the previous secret was dropped at %s (dropped %v), want by grace_until + reread_interval + clock_skew_margin = %s",
			e.clock.Now(), dropped, bound)
	}
	if n := metrictest.Value(t, regOp, "affix_rotator_operator_actions_total", "action", "reaccept-previous"); n != 1 {
		t.Errorf("the acting process counted %v reaccept-previous actions, want 1", n)
	}
	if n := metrictest.Value(t, regD, "affix_rotator_operator_actions_total", "action", "reaccept-previous"); n != 0 {
		t.Errorf("the daemon counted %v reaccept-previous actions it only read, want 0 (counted once, by the process that acts)", n)
	}
	if g := metrictest.Value(t, regD, "affix_rotator_last_operator_action_timestamp_seconds", "action", "reaccept-previous"); g == 0 {
		t.Errorf("the daemon's last_operator_action_timestamp_seconds{action=reaccept-previous} is unset: its metrics do not reflect the record")
	}
}

// reacceptThenEndGrace runs -reaccept-previous 1h, then -end-grace, as one
// operator's process, and waits for it.
func (e *memHarness) reacceptThenEndGrace() *memRun {
	op := e.proc("host/op-1")
	r := op.rotator(nil)
	act := e.spawn(op, 1, func(ctx context.Context, run *memRun) {
		_, run.err = r.ReacceptPrevious(ctx, op.client(), time.Hour, rotator.Audit{By: "bob", Reason: "partner"})
		if run.err == nil {
			run.out, run.err = r.EndGrace(ctx, op.client(), rotator.Audit{By: "bob", Reason: "done"})
		}
	})
	e.drive(time.Second, time.Minute, act.finished)
	return act
}
