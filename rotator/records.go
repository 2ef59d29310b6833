package rotator

import (
	"time"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// The records each transition writes, as pure functions of the record it
// writes over: what the record says after the move is decided here, and
// nowhere else (records_test.go).

// stagedRecord is stable → staged: pending is the new secret and id the new
// rotation's, stored before anyone else learns of them (I2). The grace
// travels with the rotation: the operator's -once -grace, or the client's.
func stagedRecord(rec vault.Record, pending secret.Value, id string, now time.Time, p policy, clientGrace time.Duration, trig Trigger) vault.Record {
	next := rec
	next.Phase = vault.PhaseStaged
	next.PendingClientSecret = pending
	next.RotationID = id
	next.StagedAt = now
	next.GracePeriod = clientGrace
	if trig.Grace > 0 {
		next.GracePeriod = trig.Grace
	}
	next.GraceBy = ""
	next.LastError, next.StepError, next.FailingSince = "", "", time.Time{}
	next.LeaseOwner, next.LeaseUntil = p.instance, now.Add(p.leaseSpan())
	if a := trig.Audit; a != nil {
		next.LastAction = &vault.Action{Action: ActionRotate, By: a.By, Reason: a.Reason, At: now, RotationID: id}
	}
	return next
}

// confirmedRecord is staged → overlap once Affix accepts [new, current]:
// new is current from now, and the grace runs from now (a slow Affix must
// not shorten it); or staged → stable for a bootstrap, which has nothing to
// overlap with. The leaked-secret -once caps the grace of any rotation it
// confirms, its own or one it found staged, and the record says so.
func confirmedRecord(rec vault.Record, now time.Time, p policy, clientGrace time.Duration, k known) vault.Record {
	next := rec
	next.PendingClientSecret = secret.Value{}
	next.ClientSecret = rec.PendingClientSecret
	next.LastError, next.StepError, next.FailingSince = "", "", time.Time{}
	next.RetryNotBefore = futureOnly(rec.RetryNotBefore, now)
	if rec.ClientSecret.IsZero() {
		next.Phase = vault.PhaseStable
		next.RotatedAt, next.RotatedID = now, rec.RotationID
		next.GracePeriod = 0
		next.LeaseOwner, next.LeaseUntil = "", time.Time{}
		return next
	}
	next.Phase = vault.PhaseOverlap
	next.PreviousClientSecret = rec.ClientSecret
	grace := clientGrace
	if rec.GracePeriod > 0 {
		grace = rec.GracePeriod
	}
	if g := k.trig.Grace; g > 0 && g < grace && k.trig.Reason == ReasonOnce {
		grace = g
		next.GracePeriod = g
	}
	next.GraceUntil = now.Add(grace)
	next.GraceBy = k.stamp(next.GraceUntil)
	next.LeaseOwner, next.LeaseUntil = p.instance, next.GraceUntil.Add(p.leaseSpan())
	return next
}

// finishedRecord is overlap → stable once Affix accepts [current] alone:
// rotated_at is now, unless the overlap is a grace an operator reopened
// after the rotation completed (its rotated_at anchors the schedule).
func finishedRecord(rec vault.Record, now time.Time) vault.Record {
	next := rec
	next.Phase = vault.PhaseStable
	next.PreviousClientSecret = secret.Value{}
	next.GraceUntil, next.GracePeriod, next.GraceBy = time.Time{}, 0, ""
	if !completedBefore(rec) {
		next.RotatedAt, next.RotatedID = now, rec.RotationID
	}
	next.LeaseOwner, next.LeaseUntil = "", time.Time{}
	next.LastError, next.StepError, next.FailingSince = "", "", time.Time{}
	next.RetryNotBefore = futureOnly(rec.RetryNotBefore, now)
	return next
}

// abortedRecord is staged → stable with the old secret after Affix
// definitely rejected the new one: the pending secret is discarded, and
// the aborted rotation satisfies no -once (it was never staged, as far as
// staged_at goes). why is the redacted reason, kept in last_error.
func abortedRecord(rec vault.Record, why string) vault.Record {
	next := rec
	next.Phase = vault.PhaseStable
	next.PendingClientSecret = secret.Value{}
	next.LeaseOwner, next.LeaseUntil = "", time.Time{}
	next.StagedAt, next.GracePeriod, next.StepError, next.FailingSince = time.Time{}, 0, "", time.Time{}
	next.LastError = why
	return next
}
