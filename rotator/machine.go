package rotator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/backoff"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// run is the memory of one call to Rotate. It only ever saves work (a
// repeated POST) or picks the safer branch; correctness never depends on it,
// since every decision starts from the record just read.
type run struct {
	c    *Client
	trig Trigger
	bo   *backoff.Backoff

	failingSince time.Time // first failure of the current step
	// stagedHere is the rotation id this run staged: no request carrying its
	// pending secret was sent before this run's own.
	stagedHere string
	// unknown marks rotation ids for which a request carrying the new
	// secret may have been applied: a 200, or an answer we never got
	// (timeout, dropped connection, 5xx).
	unknown map[string]bool
	// posted is the record version whose step request Affix confirmed, so a
	// failed Vault write is retried without sending the request again.
	posted int
	// rejected is the record version whose staging Affix definitely rejected.
	rejected    int
	rejectedErr error
	followed    string // the rotation id last seen driven by another process
	// wrote is the record this run just wrote, with its new version. The
	// next step starts from it instead of reading it back: any later
	// change by another process makes the next CAS write fail, which
	// re-reads. It is dropped before every wait, so a step after a sleep
	// (the grace, a backoff) always starts from a fresh read.
	wrote *snapshot
	// lateID is a rotation whose new secret this run made current later
	// than the grace_until it wrote assumed (the write took longer than
	// maxLateCurrent: a paused process, a slow Vault); lateAt is when the
	// write returned. awaitGrace moves grace_until so that the consumers
	// get the whole grace from then.
	lateID string
	lateAt time.Time
}

// maxLateCurrent is how much of the grace a slow overlap write may take
// before grace_until is moved to make up for it.
const maxLateCurrent = time.Second

type snapshot struct {
	rec vault.Record
	ver int
}

type decision struct {
	wait     time.Duration
	progress *Progress
	done     bool
	outcome  Outcome
	err      error
}

var again = decision{}

// Rotate drives c until its record is stable: it resumes a rotation in
// flight (never generating another secret), and starts one if trig asks for
// it. It returns when the client is stable, the rotation was aborted or has
// failed, or ctx ends (the record then stays where it is, to be resumed).
func (r *Rotator) Rotate(ctx context.Context, c *Client, trig Trigger) (Outcome, error) {
	st := &run{c: c, trig: trig, unknown: map[string]bool{}, posted: -1, rejected: -1,
		bo: backoff.New(r.opt.RetryInitial, r.opt.RetryMax, r.opt.Rand)}
	for {
		release, err := r.acquire(ctx)
		if err != nil {
			return Outcome{}, err
		}
		d := r.step(ctx, st)
		release()
		if ctx.Err() != nil {
			return Outcome{}, ctx.Err()
		}
		if d.done {
			r.status.result(c.Name, d.outcome.Result, d.err, r.clock.Now())
			return d.outcome, d.err
		}
		if d.wait > 0 {
			st.wrote = nil
			if d.progress != nil && r.opt.Progress != nil {
				r.opt.Progress(*d.progress)
			}
			if err := r.sleep(ctx, d.wait, d.progress); err != nil {
				return Outcome{}, err
			}
		}
	}
}

// step reads the record (or takes the one this run just wrote) and takes at
// most one transition.
func (r *Rotator) step(ctx context.Context, st *run) decision {
	c := st.c
	rec, ver, err := r.current(ctx, st)
	now := r.clock.Now()
	if err != nil {
		var me *vault.MalformedError
		switch {
		case errors.Is(err, vault.ErrNotFound) && c.Bootstrap:
			return r.stage(ctx, st, vault.Record{}, ver, now)
		case errors.Is(err, vault.ErrNotFound), errors.As(err, &me):
			return r.fail(st, vault.Record{}, err)
		default:
			return r.retry(st, vault.Record{Phase: vault.PhaseStable}, err)
		}
	}
	r.observe(c, rec)

	if rec.Phase != vault.PhaseStable && rec.LeaseOwner != "" && rec.LeaseOwner != r.opt.InstanceID && now.Before(rec.LeaseUntil) {
		if st.followed != rec.RotationID {
			r.log.Info("another process is driving this rotation; waiting for it", append(fields(c, rec), zap.String("lease_owner", rec.LeaseOwner), zap.Time("lease_until", rec.LeaseUntil))...)
		}
		st.followed = rec.RotationID
		// Nothing changes in overlap before grace_until: look again just
		// after it; otherwise every FollowInterval; never past the lease.
		next := r.opt.FollowInterval
		if rec.Phase == vault.PhaseOverlap && rec.GraceUntil.After(now) {
			next = rec.GraceUntil.Sub(now) + time.Second
		}
		wait := min(rec.LeaseUntil.Sub(now), next)
		why := fmt.Sprintf("rotation driven by %s (lease until %s)", rec.LeaseOwner, rec.LeaseUntil.UTC().Format(time.RFC3339))
		r.status.waiting(c.Name, why)
		return decision{wait: wait, progress: &Progress{Client: c.Name, Phase: rec.Phase, RotationID: rec.RotationID, GraceUntil: rec.GraceUntil, Now: now, Waiting: why}}
	}

	switch rec.Phase {
	case vault.PhaseStable:
		if st.trig.wantsNew(rec, now) {
			return r.stage(ctx, st, rec, ver, now)
		}
		if st.trig.Reason != ReasonStartup && !rec.RotatedAt.Before(st.trig.Time) {
			// Someone else (a replica, the daemon while -once waited)
			// completed a rotation after the trigger: it is satisfied.
			return decision{done: true, outcome: Outcome{Result: ResultSuccess, RotationID: rec.RotationID, ByOther: true}}
		}
		return decision{done: true}
	case vault.PhaseStaged:
		return r.confirm(ctx, st, rec, ver, now)
	case vault.PhaseOverlap:
		if now.Before(rec.GraceUntil) || st.lateID == rec.RotationID {
			return r.awaitGrace(ctx, st, rec, ver, now)
		}
		return r.finish(ctx, st, rec, ver, now)
	}
	return r.fail(st, rec, fmt.Errorf("rotator: unknown phase %q", rec.Phase))
}

// stage: stable → staged. The new secret is in Vault before anything else
// learns of it (I2).
func (r *Rotator) stage(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) decision {
	pending, err := secret.Generate()
	if err != nil {
		return r.fail(st, rec, err)
	}
	next := rec
	next.Phase = vault.PhaseStaged
	next.PendingClientSecret = pending
	next.RotationID = newRotationID()
	next.LeaseOwner, next.LeaseUntil = r.opt.InstanceID, now.Add(r.leaseSpan())
	if err := r.write(ctx, st, next, ver); err != nil {
		return r.writeFailed(st, rec, err)
	}
	st.stagedHere = next.RotationID
	r.progressed(st)
	r.observe(st.c, next)
	reason := st.trig.Reason
	if rec.ClientSecret.IsZero() {
		reason = "bootstrap"
	}
	r.log.Info("rotation started: new secret stored as pending", append(fields(st.c, next), zap.String("trigger", reason))...)
	r.progress(st.c, next, "")
	return again
}

// confirm: staged → overlap. Affix is told to accept [new, old]; only when it
// confirms exactly that set does new become current (I1).
func (r *Rotator) confirm(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) decision {
	c := st.c
	if st.rejected == ver {
		return r.abort(ctx, st, rec, ver, st.rejectedErr)
	}
	if d, ok := r.holdLease(ctx, st, rec, ver, now); !ok {
		return d
	}
	if st.posted != ver {
		sent := []secret.Value{rec.PendingClientSecret}
		if !rec.ClientSecret.IsZero() {
			sent = append(sent, rec.ClientSecret)
		}
		resp, err := r.post(ctx, c, sent)
		if ctx.Err() != nil {
			return decision{done: true, err: ctx.Err()}
		}
		var mm *affix.MismatchError
		switch {
		case err == nil:
			// Affix accepts the new secret now: from here on, no later
			// rejection may discard it (found by the simulation, seed 816:
			// a CAS race after this 200 made the step re-run and a 401
			// then aborted, leaving Affix accepting a secret Vault dropped).
			st.unknown[rec.RotationID] = true
			st.posted = ver
			if resp.ClientID != "" {
				rec.ClientID = resp.ClientID
			}
		case errors.As(err, &mm):
			// Affix applied something other than what we sent; its answer
			// is its state now. Abort only if that keeps the current secret
			// and holds no trace of the new one; otherwise send [new, old]
			// again.
			if !rec.ClientSecret.IsZero() && mm.Contains(1) && !mm.Contains(0) {
				return r.rejectedBy(ctx, st, rec, ver, err)
			}
			st.unknown[rec.RotationID] = true
			return r.retry(st, rec, err)
		case affix.Definite(err):
			if st.mayHaveApplied(rec) || rec.ClientSecret.IsZero() {
				// An earlier request carrying the new secret may have been
				// applied: dropping it from Vault could leave Affix
				// accepting a secret nobody records (I2). Keep it staged.
				r.log.Error("affix rejected the update, but an earlier attempt may have been applied; keeping the rotation staged (fix the cause; it resumes)", append(fields(c, rec), zap.Error(err))...)
				return r.retry(st, rec, err)
			}
			return r.rejectedBy(ctx, st, rec, ver, err)
		default:
			// A 429, or a request that never left, cannot have been
			// applied; anything else (5xx, no answer) may have been.
			if affix.StatusLabel(err) != "429" && !errors.Is(err, affix.ErrNotSent) {
				st.unknown[rec.RotationID] = true
			}
			return r.retry(st, rec, err)
		}
	}
	// The grace runs from now, when the new secret is about to become
	// current in Vault, not from before the request: a slow Affix must not
	// shorten the consumers' grace (found by the chaos test).
	now = r.clock.Now()
	next := rec
	next.PendingClientSecret = secret.Value{}
	next.ClientSecret = rec.PendingClientSecret
	next.LastError = ""
	var msg string
	if rec.ClientSecret.IsZero() { // bootstrap: nothing to overlap with
		next.Phase = vault.PhaseStable
		next.RotatedAt = now
		next.LeaseOwner, next.LeaseUntil = "", time.Time{}
		msg = "bootstrap rotation complete: new secret is current"
	} else {
		next.Phase = vault.PhaseOverlap
		next.PreviousClientSecret = rec.ClientSecret
		next.GraceUntil = now.Add(c.GracePeriod)
		next.LeaseOwner, next.LeaseUntil = r.opt.InstanceID, next.GraceUntil.Add(r.leaseSpan())
		msg = "affix accepts [new, old]: new secret is current; grace period started"
	}
	if err := r.write(ctx, st, next, ver); err != nil {
		return r.writeFailed(st, rec, err)
	}
	if next.Phase == vault.PhaseOverlap && r.clock.Since(now) > maxLateCurrent {
		st.lateID, st.lateAt = next.RotationID, r.clock.Now()
	}
	r.progressed(st)
	r.observe(c, next)
	if r.opt.Metrics != nil && !st.trig.Time.IsZero() && st.stagedHere == rec.RotationID {
		r.opt.Metrics.RotationOverlap(c.Name, now.Sub(st.trig.Time))
	}
	r.log.Info(msg, append(fields(c, next), zap.Time("grace_until", next.GraceUntil))...)
	r.progress(c, next, "")
	if next.Phase == vault.PhaseStable {
		return r.succeeded(st, next)
	}
	return again
}

// awaitGrace holds the lease through the grace period and sleeps until it ends.
func (r *Rotator) awaitGrace(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) decision {
	graceUntil := rec.GraceUntil
	if st.lateID == rec.RotationID {
		graceUntil = laterOf(graceUntil, st.lateAt.Add(st.c.GracePeriod))
	}
	want := graceUntil.Add(r.leaseSpan())
	if graceUntil != rec.GraceUntil || rec.LeaseOwner != r.opt.InstanceID || rec.LeaseUntil.Before(want) {
		next := rec
		next.GraceUntil = graceUntil
		next.LeaseOwner, next.LeaseUntil = r.opt.InstanceID, want
		if err := r.write(ctx, st, next, ver); err != nil {
			return r.writeFailed(st, rec, err)
		}
		if graceUntil != rec.GraceUntil {
			r.log.Warn("making the new secret current took longer than expected; grace_until moved so that consumers get the whole grace period",
				append(fields(st.c, next), zap.Time("grace_until", graceUntil), zap.Time("was", rec.GraceUntil))...)
			r.observe(st.c, next)
		}
		st.lateID = ""
		r.progressed(st)
		rec = next
	}
	why := "grace period"
	r.status.waiting(st.c.Name, why)
	return decision{wait: rec.GraceUntil.Sub(now), progress: &Progress{Client: st.c.Name, Phase: rec.Phase, RotationID: rec.RotationID, GraceUntil: rec.GraceUntil, Now: now, Waiting: why}}
}

// finish: overlap → stable, at or after grace_until (I3). A failure here is
// safe (Affix accepts both secrets) and is retried.
func (r *Rotator) finish(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) decision {
	c := st.c
	if d, ok := r.holdLease(ctx, st, rec, ver, now); !ok {
		return d
	}
	if st.posted != ver {
		_, err := r.post(ctx, c, []secret.Value{rec.ClientSecret})
		if ctx.Err() != nil {
			return decision{done: true, err: ctx.Err()}
		}
		if err != nil {
			return r.retry(st, rec, err)
		}
		st.posted = ver
	}
	now = r.clock.Now() // rotated_at: when the old secret stopped working
	next := rec
	next.Phase = vault.PhaseStable
	next.PreviousClientSecret = secret.Value{}
	next.GraceUntil = time.Time{}
	next.RotatedAt = now
	next.LeaseOwner, next.LeaseUntil = "", time.Time{}
	next.LastError = ""
	if err := r.write(ctx, st, next, ver); err != nil {
		return r.writeFailed(st, rec, err)
	}
	r.observe(c, next)
	r.log.Info("rotation complete: old secret dropped", fields(c, next)...)
	r.progress(c, next, "")
	return r.succeeded(st, next)
}

func (r *Rotator) succeeded(st *run, rec vault.Record) decision {
	if r.opt.Metrics != nil {
		r.opt.Metrics.RotationDone(st.c.Name, ResultSuccess)
	}
	return decision{done: true, outcome: Outcome{Result: ResultSuccess, RotationID: rec.RotationID}}
}

// rejectedBy remembers a definite rejection and aborts.
func (r *Rotator) rejectedBy(ctx context.Context, st *run, rec vault.Record, ver int, err error) decision {
	st.rejected, st.rejectedErr = ver, err
	return r.abort(ctx, st, rec, ver, err)
}

// abort: staged → stable with the old secret, after Affix definitely
// rejected the new one. The pending secret is discarded.
func (r *Rotator) abort(ctx context.Context, st *run, rec vault.Record, ver int, cause error) decision {
	next := rec
	next.Phase = vault.PhaseStable
	next.PendingClientSecret = secret.Value{}
	next.LeaseOwner, next.LeaseUntil = "", time.Time{}
	next.LastError = fmt.Sprintf("rotation %s aborted at %s: %v", rec.RotationID, r.clock.Now().UTC().Format(time.RFC3339), cause)
	if err := r.write(ctx, st, next, ver); err != nil {
		return r.writeFailed(st, rec, err)
	}
	r.observe(st.c, next)
	r.log.Error("rotation aborted: affix rejected the new secret; the old secret stays current", append(fields(st.c, rec), zap.Error(cause))...)
	if r.opt.Metrics != nil {
		r.opt.Metrics.RotationDone(st.c.Name, ResultAborted)
	}
	return decision{done: true, outcome: Outcome{Result: ResultAborted, RotationID: rec.RotationID}, err: fmt.Errorf("%w: %v", ErrAborted, cause)}
}

// holdLease makes sure this process holds the record's lease for longer than
// one request can take, extending it if needed (one CAS write).
func (r *Rotator) holdLease(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) (decision, bool) {
	minLeft := max(r.opt.LeaseDuration/2, 2*r.opt.RequestTimeout)
	if rec.LeaseOwner == r.opt.InstanceID && rec.LeaseUntil.Sub(now) >= minLeft {
		return decision{}, true
	}
	next := rec
	next.LeaseOwner, next.LeaseUntil = r.opt.InstanceID, now.Add(r.leaseSpan())
	if err := r.write(ctx, st, next, ver); err != nil {
		return r.writeFailed(st, rec, err), false
	}
	if rec.LeaseOwner != r.opt.InstanceID {
		r.log.Info("took over the rotation", append(fields(st.c, rec), zap.String("previous_owner", rec.LeaseOwner))...)
	}
	return again, false // re-read: the version moved
}

// current returns the record this run just wrote, if any, or reads it.
func (r *Rotator) current(ctx context.Context, st *run) (vault.Record, int, error) {
	if w := st.wrote; w != nil {
		st.wrote = nil
		return w.rec, w.ver, nil
	}
	return r.opt.Store.Read(ctx, st.c.VaultPath)
}

// write stores next with check-and-set on ver and remembers it, so the next
// step needs no read.
func (r *Rotator) write(ctx context.Context, st *run, next vault.Record, ver int) error {
	st.wrote = nil
	v, err := r.opt.Store.Write(ctx, st.c.VaultPath, next, ver)
	if err != nil {
		return err
	}
	// Keep what a read would return: the stored form (UTC, no monotonic
	// clock reading), so the next step decides exactly as after a read.
	stored, err := vault.Decode(next.Encode())
	if err != nil {
		return nil // written, but not as read back: let the next step read it
	}
	st.wrote = &snapshot{rec: stored, ver: v}
	return nil
}

func (r *Rotator) leaseSpan() time.Duration {
	return max(r.opt.LeaseDuration, 3*r.opt.RequestTimeout)
}

// mayHaveApplied reports whether Affix may already hold rec's pending secret.
func (st *run) mayHaveApplied(rec vault.Record) bool {
	return st.stagedHere != rec.RotationID || st.unknown[rec.RotationID]
}

// post sends one update to Affix and records its metrics.
func (r *Rotator) post(ctx context.Context, c *Client, secrets []secret.Value) (*affix.UpdateResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opt.RequestTimeout)
	defer cancel()
	start := r.clock.Now()
	resp, err := c.Affix.UpdateClient(ctx, affix.UpdateRequest{
		ClientSecret: secrets, Name: c.AppName, RedirectURIs: c.RedirectURIs, WebhookURI: c.WebhookURI,
	})
	if r.opt.Metrics != nil && !errors.Is(err, affix.ErrNotSent) {
		r.opt.Metrics.AffixRequest(c.Name, affix.StatusLabel(err), r.clock.Since(start))
	}
	return resp, err
}

// writeFailed handles a failed CAS write: a conflict means another process
// moved the record (re-read at once); anything else is retried.
func (r *Rotator) writeFailed(st *run, rec vault.Record, err error) decision {
	if errors.Is(err, vault.ErrConflict) {
		r.log.Info("record changed under us; re-reading", append(fields(st.c, rec), zap.Error(err))...)
		return again
	}
	return r.retry(st, rec, err)
}

// retry schedules another attempt at the step leaving rec.Phase after a
// transient failure: capped exponential backoff with jitter, never sooner
// than a Retry-After floor.
func (r *Rotator) retry(st *run, rec vault.Record, err error) decision {
	now := r.clock.Now()
	if st.failingSince.IsZero() {
		st.failingSince = now
	}
	if r.opt.Metrics != nil {
		r.opt.Metrics.StepError(st.c.Name, phaseOr(rec.Phase))
	}
	if r.opt.GiveUpAfter > 0 && now.Sub(st.failingSince) >= r.opt.GiveUpAfter {
		return r.fail(st, rec, fmt.Errorf("giving up after %s of failures (the record stays in phase %s and will be resumed): %w", r.opt.GiveUpAfter, phaseOr(rec.Phase), err))
	}
	d := st.bo.Next()
	if ra, ok := affix.RetryAfter(err); ok && ra > d {
		d = ra
	}
	var ae *affix.APIError
	if errors.As(err, &ae) && ae.RetryAfterNote != "" {
		r.log.Warn("affix Retry-After header: "+ae.RetryAfterNote, fields(st.c, rec)...)
	}
	r.log.Warn("rotation step failed; will retry", append(fields(st.c, rec), zap.Error(err), zap.Duration("retry_in", d))...)
	why := fmt.Sprintf("retrying in %s after: %v", d.Round(time.Millisecond), err)
	r.status.attemptFailed(st.c.Name, err, now)
	return decision{wait: d, progress: &Progress{Client: st.c.Name, Phase: rec.Phase, RotationID: rec.RotationID, GraceUntil: rec.GraceUntil, Now: now, Waiting: why}}
}

// fail ends the rotation without a transition (missing or malformed record,
// or given up); the record is left exactly as it is.
func (r *Rotator) fail(st *run, rec vault.Record, err error) decision {
	r.log.Error("rotation failed", append(fields(st.c, rec), zap.Error(err))...)
	if r.opt.Metrics != nil {
		r.opt.Metrics.RotationDone(st.c.Name, ResultFailed)
	}
	return decision{done: true, outcome: Outcome{Result: ResultFailed, RotationID: rec.RotationID}, err: err}
}

func (r *Rotator) progressed(st *run) {
	st.bo.Reset()
	st.failingSince = time.Time{}
}

// observe mirrors the record into metrics and /status.
func (r *Rotator) observe(c *Client, rec vault.Record) {
	if r.opt.Metrics != nil {
		r.opt.Metrics.ObserveRecord(c.Name, rec.Phase, rec.GraceUntil, rec.RotatedAt)
	}
	r.status.record(c.Name, rec)
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func phaseOr(p vault.Phase) vault.Phase {
	if p == "" {
		return vault.PhaseStable
	}
	return p
}
