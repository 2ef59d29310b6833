package rotator

import (
	"time"

	"github.com/robfig/cron/v3"
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
