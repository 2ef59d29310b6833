package rotator

import (
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

type never struct{}

func (never) Next(time.Time) time.Time { return time.Time{} }

func TestNextDue(t *testing.T) {
	every := func(d time.Duration) cron.Schedule { return cron.Every(d) }
	rot := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	daily, err := cron.ParseStandard("0 3 * * *")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		sched     cron.Schedule
		maxAge    time.Duration
		rotatedAt time.Time
		want      time.Time
		ok        bool
	}{
		{"anchored on rotated_at", every(720 * time.Hour), 0, rot, rot.Add(720 * time.Hour), true},
		{"overdue is in the past", every(time.Hour), 0, rot, rot.Add(time.Hour), true},
		{"cron after rotated_at", daily, 0, rot, time.Date(2026, 11, 2, 3, 0, 0, 0, time.UTC), true},
		{"max_age caps the schedule", every(720 * time.Hour), 100 * time.Hour, rot, rot.Add(100 * time.Hour), true},
		{"max_age later than the schedule", every(24 * time.Hour), 100 * time.Hour, rot, rot.Add(24 * time.Hour), true},
		{"no rotated_at, no max_age: the daemon's start decides", every(time.Hour), 0, time.Time{}, time.Time{}, false},
		{"no rotated_at with max_age: due now", every(time.Hour), time.Hour, time.Time{}, now, true},
		{"never fires", never{}, 0, rot, time.Time{}, false},
		{"never fires but max_age", never{}, 48 * time.Hour, rot, rot.Add(48 * time.Hour), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := NextDue(tc.sched, tc.maxAge, tc.rotatedAt, now)
			if !got.Equal(tc.want) || ok != tc.ok {
				t.Fatalf("NextDue = %s, %v; want %s, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
