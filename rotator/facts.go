package rotator

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/vault"
)

// This file holds the facts a decision reads from the record, and the
// small pure rules over them, so that a restarted process, a replica or an
// operator's command decides the same as the process that wrote them.

// graceOf is the grace of the rotation in rec: the one written when it was
// staged (an operator's -once -grace travels with the rotation), or the
// client's configured grace for a record written before that field.
func graceOf(rec vault.Record, c *Client) time.Duration {
	if rec.GracePeriod > 0 {
		return rec.GracePeriod
	}
	return c.GracePeriod
}

// completedBefore reports whether the overlap in rec belongs to a rotation
// that was completed once already (an operator reopened its grace with
// -reaccept-previous): its rotated_at, later than its staged_at, anchors
// the schedule and must survive the end of the reopened grace, whatever
// operator action came in between.
func completedBefore(rec vault.Record) bool {
	if rec.RotatedID != "" {
		return rec.RotatedID == rec.RotationID
	}
	// A record written before rotated_id existed: the last action says it.
	a := rec.LastAction
	return a != nil && a.Action == ActionReacceptPrevious && a.RotationID == rec.RotationID
}

// satisfied reports whether a stable rec ends a -once: it holds a
// completed rotation other than the one this run first saw (that one's
// current secret, or the one before it if it was staged, is what the
// operator wants gone, and any later completed rotation dropped it), or,
// for a plain -once, one staged at or after the -once's trigger time (a
// -once restarted with the same trigger finishes the rotation it started
// and makes no other: I6). The leaked-secret -once trusts no clock here: a
// staged_at written by a clock running ahead must not make an older
// rotation look new (simulation seed 968).
func (st known) satisfied(rec vault.Record, now time.Time, margin time.Duration) bool {
	// An aborted rotation is no rotation: abort clears staged_at.
	if rec.Phase != vault.PhaseStable || rec.RotationID == "" || rec.StagedAt.IsZero() {
		return false
	}
	if st.firstSeen && rec.RotationID != st.firstID {
		return true
	}
	if rec.RotationID == st.firstID && st.firstAhead {
		// Staged by a clock running ahead, before this run first saw it
		// in flight (simulation seed 182: a staged_at 9 minutes ahead
		// made an older rotation look staged after the -once).
		return false
	}
	t := st.trig
	return t.Grace == 0 && !rec.StagedAt.Before(t.Time) && !rec.StagedAt.After(now.Add(margin))
}

// incident reports whether this run is the leaked-secret incident (-once
// with an operator's grace) facing a grace it must cut: the grace of the
// rotation it first saw (whose current secret is the leaked one: a new
// rotation must start at once), or any grace, not its own, that would keep
// the leaked secret accepted past the operator's deadline (its start plus
// its grace).
func (st known) incident(rec vault.Record, now time.Time) bool {
	t := st.trig
	if t.Reason != ReasonOnce || t.Grace <= 0 || t.Audit == nil || st.graceMine(rec) || !now.Before(rec.GraceUntil) {
		return false
	}
	return rec.RotationID == st.firstID || rec.GraceUntil.After(t.Time.Add(t.Grace))
}

// endGraceForIncident ends the grace in flight now, recording the
// operator's action, and takes the lease to drop the previous secret (as
// -end-grace does). The step after it drops; the stable record then
// starts the incident's own rotation with the operator's grace.
func (r *Rotator) endGraceForIncident(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) decision {
	next := rec
	next.GraceUntil, next.GraceBy = now, st.stamp(now)
	next.LeaseOwner, next.LeaseUntil = r.opt.InstanceID, now.Add(r.leaseSpan())
	a := st.trig.Audit
	next.LastAction = &vault.Action{Action: ActionRotate, By: a.By, Reason: a.Reason, At: now, RotationID: rec.RotationID}
	return r.transition(ctx, st, rec, next, ver, func() decision {
		st.graceOwn = next.GraceBy
		r.actionPerformed(st.c, ActionRotate)
		r.log.Warn("leaked-secret rotation: the grace of the rotation in flight is ended now, then a new rotation runs with the operator's grace",
			append(fields(st.c, rec), zap.Time("grace_until_was", rec.GraceUntil), zap.Duration("grace_period", st.trig.Grace), zap.String("by", a.By), zap.String("reason", a.Reason))...)
		return again
	})
}

// carry puts into next the facts a write must not lose: the anchor of a
// record seeded by hand, until its first rotation completes.
func (st *run) carry(next *vault.Record) {
	if next.RotatedAt.IsZero() && next.SeededAt.IsZero() && !st.seedAnchor.IsZero() && !next.ClientSecret.IsZero() {
		next.SeededAt = st.seedAnchor
	}
}

// stepErrorText is what the record keeps of a step's failure: the error's
// text, which the affix and vault packages never let hold a secret, cut
// to a bounded length.
func stepErrorText(err error) string {
	const maxLen = 512
	s := keyNote(err) + err.Error()
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	return s
}

// trusted is trustedAt with this rotator's clock-skew margin.
func (r *Rotator) trusted(t, now time.Time) time.Time {
	return trustedAt(t, now, r.opt.ClockSkewMargin)
}

// checkFuture logs and counts the record's times that lie in the future
// beyond the clock-skew margin (a host whose clock runs ahead wrote them),
// and reports whether there were any.
func (r *Rotator) checkFuture(c *Client, rec vault.Record) bool {
	now := r.clock.Now()
	found := false
	for _, f := range []struct {
		name string
		t    time.Time
	}{{vault.FieldRotatedAt, rec.RotatedAt}, {vault.FieldStagedAt, rec.StagedAt}, {vault.FieldSeededAt, rec.SeededAt}} {
		if f.t.After(now.Add(r.opt.ClockSkewMargin)) {
			r.log.Warn("a time in the record lies in the future beyond the clock-skew margin (written by a clock running ahead); it is taken as now",
				append(fields(c, rec), zap.String("field", f.name), zap.Time("value", f.t), zap.Duration("ahead_by", f.t.Sub(now)))...)
			if r.opt.Metrics != nil {
				r.opt.Metrics.FutureTime(c.Name, f.name)
			}
			found = true
		}
	}
	return found
}

// stamp is the grace_by this run writes with a grace_until of t: its
// token and the very time it vouches for, so that a grace_until moved by
// anyone else afterwards (an operator's `vault kv patch`, which leaves
// grace_by alone) is no longer this run's.
func (st known) stamp(t time.Time) string {
	return st.token + "@" + t.UTC().Format(time.RFC3339Nano)
}

// graceMine reports whether rec's grace_until was written by this run, not
// moved since, and known to this run to have landed (graceOwn: the write
// answered, or was recognised after a lost answer, so its lateness was
// made up for): it is read against this run's own clock, with no
// clock-skew margin. A write of this run whose answer was lost and never
// recognised is like another process's: its grace_until gets the margin
// (simulation seed 10561: the overlap write landed 2.4s late, unnoticed,
// and the run dropped at its own grace_until).
func (st known) graceMine(rec vault.Record) bool {
	return rec.GraceBy != "" && rec.GraceBy == st.stamp(rec.GraceUntil) && rec.GraceBy == st.graceOwn
}

// redact removes the secrets in play from text written into the record.
func (r *Rotator) redact(text string) string {
	if r.opt.Redact == nil {
		return text
	}
	return r.opt.Redact(text)
}
