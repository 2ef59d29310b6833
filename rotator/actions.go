package rotator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// Operator actions, the values of last_action.action and of the `action`
// label of operator_actions_total.
const (
	ActionRotate           = "rotate"            // -once, with or without -grace
	ActionEndGrace         = "end-grace"         // overlap: drop the previous secret now
	ActionExtendGrace      = "extend-grace"      // overlap: move grace_until later
	ActionReacceptPrevious = "reaccept-previous" // stable: accept the previous secret again for a while
)

// Audit says who asks for an operator action and why.
type Audit struct {
	By     string // the Vault token's display name (and entity)
	Reason string
}

// PhaseError: the action does not fit the record's phase. It says what to
// do instead.
type PhaseError struct {
	Action string
	Phase  vault.Phase
	Hint   string
}

func (e *PhaseError) Error() string {
	return fmt.Sprintf("%s refused: the record is in phase %s; %s", e.Action, phaseOr(e.Phase), e.Hint)
}

// ChangedError: another operator acted on the record between this action's
// read and its write; nothing was changed by this action.
type ChangedError struct {
	Action string
	Now    vault.Record // the record as it is now (never printed whole: it holds secrets)
}

func (e *ChangedError) Error() string {
	s := fmt.Sprintf("%s not applied: the record changed under it (now phase %s, rotation %s", e.Action, phaseOr(e.Now.Phase), e.Now.RotationID)
	if a := e.Now.LastAction; a != nil {
		s += fmt.Sprintf(", last action %s by %s at %s", a.Action, a.By, a.At.UTC().Format(time.RFC3339))
	}
	return s + "); look at it with -status and decide again"
}

// VersionReader reads one version of a record from its KV history (for
// -reaccept-previous).
type VersionReader interface {
	ReadVersion(ctx context.Context, path string, version int) (vault.Record, error)
}

// historyDepth is how many earlier versions -reaccept-previous searches for
// the overlap that held the previous secret.
const historyDepth = 32

// act applies change to the record with check-and-set, stamping it with
// the action (last_action), and audits it. A conflict with a write of the
// rotator (a lease extension) is retried; a conflict with another
// operator's action is a *ChangedError.
func (r *Rotator) act(ctx context.Context, c *Client, action string, audit Audit, change func(rec vault.Record, ver int, now time.Time) (vault.Record, error)) (vault.Record, int, error) {
	for attempt := 0; ; attempt++ {
		rec, ver, err := r.opt.Store.Read(ctx, c.VaultPath)
		if err != nil {
			return vault.Record{}, 0, err
		}
		now := r.clock.Now()
		next, err := change(rec, ver, now)
		if err != nil {
			return vault.Record{}, 0, err
		}
		next.LastAction = &vault.Action{Action: action, By: audit.By, Reason: audit.Reason, At: now, RotationID: rec.RotationID}
		v, claims, err := r.writeRecord(ctx, c.VaultPath, next, ver)
		if errors.Is(err, vault.ErrConflict) && attempt < 5 {
			now, _, rerr := r.opt.Store.Read(ctx, c.VaultPath)
			if rerr == nil && !sameAction(now.LastAction, rec.LastAction) {
				return vault.Record{}, 0, &ChangedError{Action: action, Now: now}
			}
			continue
		}
		if err != nil {
			return vault.Record{}, 0, fmt.Errorf("%s: %w", action, err)
		}
		r.log.Info("operator action", append(fields(c, next), zap.String("action", action), zap.String("by", audit.By), zap.String("reason", audit.Reason))...)
		stored, derr := vault.Decode(next.Encode())
		if derr != nil {
			return vault.Record{}, 0, derr
		}
		stored.Claims = claims
		r.actionPerformed(c, action)
		r.actionSeen(c, stored)
		r.bumpChanges(ctx, c, action)
		return stored, v, nil
	}
}

func sameAction(a, b *vault.Action) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Action == b.Action && a.By == b.By && a.At.Equal(b.At)
}

// EndGrace drops the previous secret now (phase overlap): the record's
// grace_until becomes now and this process takes the lease, tells Affix to
// accept [current] only and writes the record stable. A daemon waiting in
// the grace sees the lease taken and then the record stable, and sends
// nothing more for this rotation.
func (r *Rotator) EndGrace(ctx context.Context, c *Client, audit Audit) (Outcome, error) {
	st := r.newRun(c, Trigger{Reason: ReasonAction})
	rec, ver, err := r.act(ctx, c, ActionEndGrace, audit, func(rec vault.Record, ver int, now time.Time) (vault.Record, error) {
		if rec.Phase != vault.PhaseOverlap {
			return rec, phaseHint(ActionEndGrace, rec.Phase)
		}
		next := rec
		next.GraceUntil, next.GraceBy = now, st.stamp(now) // grace_until is this action's own
		next.LeaseOwner, next.LeaseUntil = r.opt.InstanceID, now.Add(r.leaseSpan())
		return next, nil
	})
	if err != nil {
		return Outcome{}, err
	}
	st.trig.Time = rec.GraceUntil
	r.adopt(st, rec, ver)
	st.graceOwn = rec.GraceBy // written by this action, answered
	return r.drive(ctx, st)
}

// ExtendGrace moves grace_until later by d (from now, if it has passed):
// both secrets stay accepted that much longer. The process driving the
// grace sees it within RereadInterval.
//
// Affix is then told [current, previous] under this action's lease: the
// process driving the grace may already have sent [current] alone (its
// drop) without having recorded it yet, and an extension that Affix does
// not honour would be a lie. The lease is then released for the daemon.
func (r *Rotator) ExtendGrace(ctx context.Context, c *Client, d time.Duration, audit Audit) (time.Time, error) {
	st := r.newRun(c, Trigger{Reason: ReasonAction, Time: r.clock.Now()})
	rec, ver, err := r.act(ctx, c, ActionExtendGrace, audit, func(rec vault.Record, ver int, now time.Time) (vault.Record, error) {
		if rec.Phase != vault.PhaseOverlap {
			return rec, phaseHint(ActionExtendGrace, rec.Phase)
		}
		next := rec
		next.GraceUntil = laterOf(rec.GraceUntil, now).Add(d)
		next.GraceBy = st.stamp(next.GraceUntil)
		next.LeaseOwner, next.LeaseUntil = r.opt.InstanceID, now.Add(r.leaseSpan())
		return next, nil
	})
	if err != nil {
		return rec.GraceUntil, err
	}
	r.adopt(st, rec, ver)
	st.graceOwn = rec.GraceBy
	st.reassert, st.stopAfterAssert = ReassertAction, true
	if _, err := r.drive(ctx, st); err != nil {
		return rec.GraceUntil, fmt.Errorf("extend-grace: grace_until is moved in the record, but Affix did not confirm [current, previous] (a daemon sends it again within rotation.reconcile_interval): %w", err)
	}
	return rec.GraceUntil, nil
}

// ReacceptPrevious makes Affix accept the previous secret again for d,
// after a completed rotation (phase stable): the secret is taken from the
// record's KV version history (the overlap of the rotation that made the
// current secret), the record goes back to overlap with a new grace_until,
// Affix is told [current, previous], and the lease is released so that a
// daemon drops the previous secret again when the new grace ends.
func (r *Rotator) ReacceptPrevious(ctx context.Context, c *Client, d time.Duration, audit Audit) (time.Time, error) {
	vr, ok := r.opt.Store.(VersionReader)
	if !ok {
		return time.Time{}, errors.New("reaccept-previous: the store cannot read earlier versions")
	}
	st := r.newRun(c, Trigger{Reason: ReasonAction, Time: r.clock.Now()})
	rec, ver, err := r.act(ctx, c, ActionReacceptPrevious, audit, func(rec vault.Record, ver int, now time.Time) (vault.Record, error) {
		if rec.Phase != vault.PhaseStable {
			return rec, phaseHint(ActionReacceptPrevious, rec.Phase)
		}
		prev, err := r.previousSecret(ctx, vr, c, rec, ver)
		if err != nil {
			return rec, err
		}
		next := rec
		next.Phase = vault.PhaseOverlap
		next.PreviousClientSecret = prev
		if next.RotatedID == "" {
			// A record from before rotated_id: this stable record's
			// rotation is the completed one (an aborted one has no overlap
			// in the history, and previousSecret refused it).
			next.RotatedID = rec.RotationID
		}
		next.GraceUntil = now.Add(d)
		next.GraceBy = st.stamp(next.GraceUntil)
		next.LeaseOwner, next.LeaseUntil = r.opt.InstanceID, now.Add(r.leaseSpan())
		return next, nil
	})
	if err != nil {
		return time.Time{}, err
	}
	// Affix is told [current, previous] under this action's lease; then
	// the lease is released for the daemon to end the new grace.
	r.adopt(st, rec, ver)
	st.graceOwn = rec.GraceBy
	st.reassert, st.stopAfterAssert = ReassertAction, true
	if _, err := r.drive(ctx, st); err != nil {
		return rec.GraceUntil, fmt.Errorf("reaccept-previous: the record is back in overlap, but Affix did not confirm [current, previous] (a daemon sends it again within rotation.reconcile_interval): %w", err)
	}
	return rec.GraceUntil, nil
}

// previousSecret finds, in the record's version history below ver (the
// version rec was read at), the overlap of the rotation that made rec's
// current secret, and returns its previous secret.
func (r *Rotator) previousSecret(ctx context.Context, vr VersionReader, c *Client, rec vault.Record, ver int) (secret.Value, error) {
	if rec.RotationID == "" {
		return secret.Value{}, fmt.Errorf("%s refused: the record holds no completed rotation (no rotation_id), so there is no previous secret", ActionReacceptPrevious)
	}
	oldest := max(1, ver-historyDepth)
	for v := ver - 1; v >= oldest; v-- {
		old, err := vr.ReadVersion(ctx, c.VaultPath, v)
		if err != nil {
			continue // deleted, destroyed or malformed: look further back
		}
		if old.Phase == vault.PhaseOverlap && old.RotationID == rec.RotationID && old.ClientSecret.Equal(rec.ClientSecret) && !old.PreviousClientSecret.IsZero() {
			return old.PreviousClientSecret, nil
		}
	}
	return secret.Value{}, fmt.Errorf("%s refused: the previous secret of rotation %s is not in the record's version history (versions %d to %d searched; older ones may have been deleted or destroyed, or cut by the mount's max_versions)", ActionReacceptPrevious, rec.RotationID, oldest, ver-1)
}

// phaseHint is the PhaseError for an action that does not fit phase.
func phaseHint(action string, phase vault.Phase) error {
	hints := map[string]map[vault.Phase]string{
		ActionEndGrace: {
			vault.PhaseStable: "no grace is running (the last rotation is complete); to stop the current secret working, rotate now with -once -grace",
			vault.PhaseStaged: "the new secret is not current yet; wait for phase overlap (-status), then end the grace",
		},
		ActionExtendGrace: {
			vault.PhaseStable: "no grace is running; to make Affix accept the previous secret again, use -reaccept-previous",
			vault.PhaseStaged: "the new secret is not current yet; wait for phase overlap (-status), then extend the grace",
		},
		ActionReacceptPrevious: {
			vault.PhaseOverlap: "the previous secret is still accepted; to keep it longer, use -extend-grace",
			vault.PhaseStaged:  "a rotation is in flight; wait for it (-status)",
		},
	}
	return &PhaseError{Action: action, Phase: phase, Hint: hints[action][phaseOr(phase)]}
}

// adopt starts a run from a record this process just wrote at ver.
func (r *Rotator) adopt(st *run, rec vault.Record, ver int) {
	r.ownVersion(st, rec, ver)
	st.wrote = &snapshot{rec: rec, ver: ver}
	st.seen, st.seenVer = rec, ver
}
