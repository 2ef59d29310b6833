package rotator

import (
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestRecords pins what each transition writes: the record facts the
// next decision, by any process, reads.
func TestRecords(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	p := policy{instance: "me", lease: time.Minute, request: 5 * time.Second}
	cur, prev, pend := secret.New("current"), secret.New("previous"), secret.New("pending")
	seeded := now.Add(-72 * time.Hour)
	stable := vault.Record{Phase: vault.PhaseStable, ClientSecret: cur, RotationID: "r1", SeededAt: seeded,
		LastError: "rotation r0 aborted", Extra: map[string]any{"owner": "team-a"}}
	staged := vault.Record{Phase: vault.PhaseStaged, ClientSecret: cur, PendingClientSecret: pend, RotationID: "r2", StagedAt: now.Add(-time.Minute),
		GracePeriod: 24 * time.Hour, LeaseOwner: "me", LeaseUntil: now.Add(time.Minute), StepError: "affix: 503", FailingSince: now.Add(-time.Minute),
		RetryNotBefore: now.Add(-time.Second)}
	overlap := vault.Record{Phase: vault.PhaseOverlap, ClientSecret: cur, PreviousClientSecret: prev, RotationID: "r2", RotatedAt: now.Add(-48 * time.Hour),
		GraceUntil: now.Add(-time.Second), GracePeriod: time.Hour, GraceBy: "x@y", LeaseOwner: "me", LeaseUntil: now.Add(time.Minute), RetryNotBefore: now.Add(time.Hour)}
	schedule := known{trig: Trigger{Reason: ReasonSchedule, Time: now}, token: "tok"}
	leaked := known{trig: Trigger{Reason: ReasonOnce, Time: now, Grace: 30 * time.Second, Audit: &Audit{By: "alice", Reason: "leaked"}}, token: "tok"}

	t.Run("staged: the operator's grace and audit travel with the rotation; the anchor and annotations are kept", func(t *testing.T) {
		got := stagedRecord(stable, pend, "r2", now, p, 24*time.Hour, leaked.trig)
		switch {
		case got.Phase != vault.PhaseStaged || !got.PendingClientSecret.Equal(pend) || !got.ClientSecret.Equal(cur) || got.RotationID != "r2":
			t.Fatalf("%+v", got)
		case got.GracePeriod != 30*time.Second || !got.StagedAt.Equal(now):
			t.Fatalf("grace_period %s staged_at %s, want the operator's 30s, now", got.GracePeriod, got.StagedAt)
		case got.LastAction == nil || got.LastAction.By != "alice" || got.LastAction.RotationID != "r2":
			t.Fatalf("last_action %+v, want alice's rotate of r2", got.LastAction)
		case got.LeaseOwner != "me" || !got.LeaseUntil.Equal(now.Add(time.Minute)):
			t.Fatalf("lease %s until %s", got.LeaseOwner, got.LeaseUntil)
		case got.LastError != "" || !got.SeededAt.Equal(seeded) || got.Extra["owner"] != "team-a":
			t.Fatalf("last_error %q seeded_at %s extra %v: want cleared, kept, kept", got.LastError, got.SeededAt, got.Extra)
		}
		if g := stagedRecord(stable, pend, "r2", now, p, 24*time.Hour, schedule.trig); g.GracePeriod != 24*time.Hour || g.LastAction != nil {
			t.Fatalf("a scheduled staging: grace_period %s last_action %+v, want the client's, none", g.GracePeriod, g.LastAction)
		}
	})
	t.Run("confirmed: new is current, the grace runs from now and is this run's", func(t *testing.T) {
		got := confirmedRecord(staged, now, p, time.Hour, schedule)
		switch {
		case got.Phase != vault.PhaseOverlap || !got.ClientSecret.Equal(pend) || !got.PreviousClientSecret.Equal(cur) || !got.PendingClientSecret.IsZero():
			t.Fatalf("%+v", got)
		case !got.GraceUntil.Equal(now.Add(24*time.Hour)) || got.GraceBy != schedule.stamp(got.GraceUntil):
			t.Fatalf("grace_until %s by %q, want the staged 24h from now, stamped by this run", got.GraceUntil, got.GraceBy)
		case !got.LeaseUntil.Equal(got.GraceUntil.Add(time.Minute)):
			t.Fatalf("lease until %s, want through the grace", got.LeaseUntil)
		case got.StepError != "" || !got.FailingSince.IsZero() || !got.RetryNotBefore.IsZero():
			t.Fatalf("step_error %q failing_since %s retry_not_before %s: want cleared (the floor has passed)", got.StepError, got.FailingSince, got.RetryNotBefore)
		}
	})
	t.Run("confirmed by the leaked-secret -once: its grace caps the rotation's, and the record says so", func(t *testing.T) {
		got := confirmedRecord(staged, now, p, time.Hour, leaked)
		if got.GracePeriod != 30*time.Second || !got.GraceUntil.Equal(now.Add(30*time.Second)) {
			t.Fatalf("grace_period %s grace_until %s, want 30s", got.GracePeriod, got.GraceUntil)
		}
	})
	t.Run("confirmed bootstrap: stable at once, nothing to overlap with", func(t *testing.T) {
		boot := staged
		boot.ClientSecret = secret.Value{}
		got := confirmedRecord(boot, now, p, time.Hour, schedule)
		if got.Phase != vault.PhaseStable || !got.RotatedAt.Equal(now) || got.RotatedID != "r2" || got.LeaseOwner != "" || !got.PreviousClientSecret.IsZero() {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("finished: rotated_at is now; a floor still in force is kept", func(t *testing.T) {
		got := finishedRecord(overlap, now)
		switch {
		case got.Phase != vault.PhaseStable || !got.PreviousClientSecret.IsZero() || !got.GraceUntil.IsZero() || got.GraceBy != "" || got.GracePeriod != 0:
			t.Fatalf("%+v", got)
		case !got.RotatedAt.Equal(now) || got.RotatedID != "r2" || got.LeaseOwner != "":
			t.Fatalf("rotated_at %s rotated_id %q lease %q", got.RotatedAt, got.RotatedID, got.LeaseOwner)
		case !got.RetryNotBefore.Equal(overlap.RetryNotBefore):
			t.Fatalf("retry_not_before %s, want the floor in force kept", got.RetryNotBefore)
		}
	})
	t.Run("finished, a grace reopened after the rotation completed: rotated_at is kept", func(t *testing.T) {
		reopened := overlap
		reopened.RotatedID = "r2"
		if got := finishedRecord(reopened, now); !got.RotatedAt.Equal(overlap.RotatedAt) {
			t.Fatalf("rotated_at %s, want %s kept (no new secret was made)", got.RotatedAt, overlap.RotatedAt)
		}
	})
	t.Run("aborted: the old secret stays, the pending one is gone, no -once counts it", func(t *testing.T) {
		got := abortedRecord(staged, "rotation r2 aborted: 401")
		switch {
		case got.Phase != vault.PhaseStable || !got.ClientSecret.Equal(cur) || !got.PendingClientSecret.IsZero() || got.LeaseOwner != "":
			t.Fatalf("%+v", got)
		case !got.StagedAt.IsZero() || got.GracePeriod != 0 || got.StepError != "" || got.LastError != "rotation r2 aborted: 401":
			t.Fatalf("staged_at %s grace_period %s step_error %q last_error %q", got.StagedAt, got.GracePeriod, got.StepError, got.LastError)
		}
	})
}
