package rotator

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Run is the daemon: one goroutine per client that first resumes whatever
// is in flight, then rotates on the client's cron schedule, jittered,
// sends Affix the set the record implies every ReconcileInterval, and reads
// the record every RereadInterval to pick up an operator's change. It
// returns when ctx ends; every state is in Vault, so nothing is lost.
func (r *Rotator) Run(ctx context.Context, clients []*Client) {
	r.Serve(ctx, clients, nil)
}

// idleRereads: a stable client's record is read every idleRereads ×
// RereadInterval (5m by default), which keeps the idle daemon's CPU within
// its target (docs/PERFORMANCE.md); during a grace, and after a failed run
// (a record missing or malformed, which an operator may restore any
// time), every RereadInterval.
const idleRereads = 10

// due returns when a stable client is next due for rotation (NextDue); a
// record with no rotated_at and no max_age is anchored where it was seeded
// (its seeded_at, or the created_time of its version: a fact that survives
// restarts), or, when even that is unknown, at the daemon's start. Zero:
// never.
func due(c *Client, out Outcome, started, now time.Time) time.Time {
	if at, ok := NextDue(c.Schedule, c.MaxAge, out.RotatedAt, now); ok || !out.RotatedAt.IsZero() {
		return at
	}
	if !out.SeededAt.IsZero() {
		// Never later than this process's start: a created_time after it
		// comes from a clock that disagrees with ours.
		return c.Schedule.Next(earlierOf(out.SeededAt, started))
	}
	return c.Schedule.Next(started)
}

// sleepOrChange waits d on the injected clock, or until changed is
// closed (woken true), or ctx ends.
func (r *Rotator) sleepOrChange(ctx context.Context, d time.Duration, changed <-chan struct{}) (woken bool, err error) {
	t := r.clock.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-t.Chan():
		return false, nil
	case <-changed:
		return true, nil
	}
}

func earlierOf(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (r *Rotator) loop(ctx context.Context, c *Client) {
	rnd := r.newRand()
	started := r.clock.Now()
	trig := Trigger{Reason: ReasonStartup, Time: started, MaxAge: c.MaxAge}
	asserted := started
	var jitterFor, jitterAt time.Time // the due time jittered, and the result
	var hold time.Time                // no new rotation before this, after a failed one
	first := true                     // log the client's schedule once
	for {
		changed := r.changes.wait() // a change during the run wakes the sleep below
		out, err := r.Rotate(ctx, c, trig)
		if ctx.Err() != nil {
			return
		}
		now := r.clock.Now()
		if out.Result == ResultSuccess || trig.Reason == ReasonReconcile {
			asserted = now
		}
		next := due(c, out, started, now)
		if next.IsZero() {
			r.log.Error("schedule has no next run; the client is only reconciled", zap.String("client", c.Name))
		}
		at := next
		if !next.IsZero() && c.Jitter > 0 {
			if !jitterFor.Equal(next) {
				jitterFor, jitterAt = next, next.Add(time.Duration(rnd.Int64N(int64(c.Jitter))))
			}
			at = jitterAt
		}
		if out.Result == ResultSuccess {
			hold = time.Time{}
		}
		if err != nil && (out.Result == ResultFailed || out.Result == ResultAborted) {
			hold = now.Add(r.opt.RetryMax)
		}
		if !at.IsZero() && at.Before(hold) {
			at = hold
		}
		nextTrig := Trigger{Reason: ReasonSchedule, Time: next}
		if !at.IsZero() {
			r.status.nextRun(c.Name, at)
			if r.opt.Metrics != nil {
				r.opt.Metrics.NextRotation(c.Name, at)
			}
		}
		if first {
			// At start: the client's schedule and next run (zero: never).
			first = false
			r.log.Info("client scheduled", zap.String("client", c.Name), zap.String("schedule", c.ScheduleSpec), zap.Duration("grace_period", c.GracePeriod), zap.Time("next_run", at))
		}
		if r.opt.ReconcileInterval > 0 {
			if rec := asserted.Add(r.opt.ReconcileInterval); at.IsZero() || rec.Before(at) {
				at, nextTrig = rec, Trigger{Reason: ReasonReconcile, Time: rec}
			}
		}
		// After a failure (a missing or malformed record, a rejection, a
		// step given up) nothing is tried again before hold: the re-read
		// below resumes a rotation in flight then, and a new one waits too.
		reread := r.opt.RereadInterval
		if out.Result != ResultFailed {
			reread *= idleRereads // the record is stable
		}
		if check := laterOf(now.Add(reread), hold); at.IsZero() || check.Before(at) {
			// Read the record again meanwhile: an operator may have put
			// the client back in overlap (-reaccept-previous) or edited it.
			at, nextTrig = check, Trigger{Reason: ReasonStartup, Time: check}
		}
		r.log.Debug("next run scheduled", zap.String("client", c.Name), zap.Time("at", at), zap.String("reason", nextTrig.Reason))
		woken, err := r.sleepOrChange(ctx, at.Sub(now), changed)
		if err != nil {
			return
		}
		trig = nextTrig
		if woken {
			// Another process changed a record: read this one again now.
			trig = Trigger{Reason: ReasonStartup, Time: r.clock.Now()}
		}
	}
}
