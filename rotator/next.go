package rotator

import (
	"time"

	"github.com/robfig/cron/v3"

	"github.com/affix-rotator/affix-rotator/vault"
)

// NextDue returns when a stable client is next due for rotation, from its
// record alone (docs/design.md, Schedule): the schedule is anchored on the
// record, so the client is due at schedule.Next(rotatedAt), and maxAge
// (0: none) is a hard bound on top: rotatedAt+maxAge at the latest.
//
// ok is false when the record does not decide it:
//   - no rotated_at (a record seeded by hand) and no maxAge: the daemon
//     anchors the schedule at its own start, schedule.Next(start);
//   - the schedule never fires again and there is no maxAge: never.
//
// A record with no rotated_at and a maxAge is due at once (its age is
// unknown, so too old): NextDue returns now. The time returned may be in
// the past: the client is overdue and a daemon rotates it at once.
func NextDue(schedule cron.Schedule, maxAge time.Duration, rotatedAt, now time.Time) (time.Time, bool) {
	if rotatedAt.IsZero() {
		if maxAge > 0 {
			return now, true
		}
		return time.Time{}, false
	}
	at := schedule.Next(rotatedAt)
	if maxAge > 0 && (at.IsZero() || rotatedAt.Add(maxAge).Before(at)) {
		at = rotatedAt.Add(maxAge)
	}
	return at, !at.IsZero()
}

// SeedAnchor is where the schedule of a record with no rotated_at (seeded
// by hand) counts from: its seeded_at, else the created_time Vault gave the
// version read. Zero when neither is known.
func SeedAnchor(rec vault.Record) time.Time {
	if !rec.SeededAt.IsZero() {
		return rec.SeededAt
	}
	return rec.VersionTime
}

// recordNext shows, while a rotation is in flight, the run after it in
// /status (next_run) and next_rotation_timestamp_seconds: the schedule
// anchored where this rotation will complete (grace_until in overlap, or
// the record's rotated_at when an operator reopened a grace; now plus the
// grace while staged). Without it both kept the time that started the
// rotation, in the past for the whole grace. In stable the daemon's loop
// sets them, jitter included.
func (r *Rotator) recordNext(c *Client, rec vault.Record) {
	if c.Schedule == nil {
		return
	}
	now := r.clock.Now()
	var end time.Time
	switch {
	case rec.Phase == vault.PhaseOverlap && rec.LastAction != nil && rec.LastAction.Action == ActionReacceptPrevious && rec.LastAction.RotationID == rec.RotationID:
		end = rec.RotatedAt
	case rec.Phase == vault.PhaseOverlap:
		end = laterOf(rec.GraceUntil, now)
	case rec.Phase == vault.PhaseStaged:
		end = now.Add(c.GracePeriod)
	default:
		return
	}
	at, ok := NextDue(c.Schedule, c.MaxAge, end, now)
	if !ok {
		return
	}
	r.status.nextRun(c.Name, at)
	if r.opt.Metrics != nil {
		r.opt.Metrics.NextRotation(c.Name, at)
	}
}
