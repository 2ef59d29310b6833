package rotator

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/backoff"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/notify"
	"github.com/affix-rotator/affix-rotator/vault"
)

// run is the memory of one call to Rotate. It only ever saves work (a
// repeated POST) or picks the safer branch; correctness never depends on it,
// since every decision starts from the record just read, and what another
// process did is learnt from the record (a version this run did not write).
type run struct {
	// known is what a decision reads of this run (decide.go).
	known
	c  *Client
	bo *backoff.Backoff

	failingSince time.Time // first failure of the current step
	// mine is the record version this run last wrote (or recognised as
	// its own after a lost answer); -1 before its first write. A version
	// read that is not mine was written by someone else.
	mine int
	// stagedHere is the rotation id this run staged: no request carrying its
	// pending secret was sent before this run's own.
	stagedHere string
	// shared marks rotation ids of which this run saw a version written by
	// another process while it was staged: that process may have sent the
	// pending secret to Affix, so a later rejection must not discard it.
	shared map[string]bool
	// unknown marks rotation ids for which a request carrying the new
	// secret may have been applied: a 200, or an answer we never got
	// (timeout, dropped connection, 5xx).
	unknown map[string]bool
	// unanswered maps rotation ids to the phase of a request of this run
	// whose outcome is unknown: if the rotation moves on, that request may
	// still land late.
	unanswered map[string]vault.Phase
	// seedAnchor is the created_time of the first version read of a record
	// with no rotated_at and no seeded_at; the next write records it as
	// seeded_at (a fact from Vault's metadata, carried into the record).
	seedAnchor time.Time
	// stopAfterAssert ends the run once the set is re-asserted (an
	// operator action that hands the rotation back to the daemon).
	stopAfterAssert bool
	// effect is the record version a request of this run was sent from
	// whose effect on Affix no write of this run has yet built on (a 200,
	// or no answer); -1 when none. If another process writes the record
	// first, the request may have landed after that process moved on.
	effect int
	// effectSet is what that request sent.
	effectSet []secret.Value
	// posted is the record version whose step request Affix confirmed, so a
	// failed Vault write is retried without sending the request again.
	posted int
	// late says the last request's answer (or lack of one) came after the
	// lease it was sent under had ended.
	late bool
	// lateAt is when the slow overlap write of lateID returned.
	lateAt time.Time
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
	// lost is a write whose answer never came (Vault may have applied it):
	// if the next read finds exactly it at the version it would have, the
	// run carries on as if the write had answered.
	lost *lostWrite
	// myLease is the lease_until this run last wrote with its own lease;
	// floor is the latest Retry-After floor a 429 gave this run. Both are
	// for the release on exit.
	myLease time.Time
	floor   time.Time
	// seen is the last record read or written (for Outcome.RotatedAt).
	seen    vault.Record
	seenVer int
	// futureVer is the last version whose future times this run logged
	// and counted (once per version).
	futureVer int
	// claimRefused: Vault refused this run's reconcile claim (a policy
	// without "patch" on the metadata path, a Vault without metadata
	// PATCH); it reconciles under the record's lease instead (the protocol
	// from before the claim).
	claimRefused bool
}

// maxLateCurrent is how much of the grace a slow overlap write may take
// before grace_until is moved to make up for it.
const maxLateCurrent = time.Second

type snapshot struct {
	rec vault.Record
	ver int
}

type lostWrite struct {
	snapshot
	after func() decision // what the transition does once written
}

type decision struct {
	wait     time.Duration
	progress *Progress
	done     bool
	outcome  Outcome
	err      error
}

var again = decision{}

// errLeaseShort: the lease was found too short just before a request; the
// request is not sent and the step starts over (extending the lease).
var errLeaseShort = errors.New("lease too short to send a request")

// Rotate drives c until its record is stable: it resumes a rotation in
// flight (never generating another secret), and starts one if trig asks for
// it. It returns when the client is stable, the rotation was aborted or has
// failed, or ctx ends (the record then stays where it is, to be resumed).
// On the way out it releases a lease it still holds, so that another
// process can go on at once.
func (r *Rotator) Rotate(ctx context.Context, c *Client, trig Trigger) (Outcome, error) {
	return r.drive(ctx, r.newRun(c, trig))
}

func (r *Rotator) newRun(c *Client, trig Trigger) *run {
	st := &run{known: known{trig: trig, token: newRotationID(), assertedAt: r.assertedSince(c.Name, r.clock.Now())},
		c: c, mine: -1, posted: -1, rejected: -1, seenVer: -1, effect: -1, futureVer: -1,
		shared: map[string]bool{}, unknown: map[string]bool{}, unanswered: map[string]vault.Phase{},
		bo: backoff.New(r.opt.RetryInitial, r.opt.RetryMax, r.newRand())}
	if trig.Reason == ReasonReconcile {
		st.reassert = ReassertReconcile
	}
	return st
}

// drive takes steps until one is final or ctx ends, sleeping between them.
func (r *Rotator) drive(ctx context.Context, st *run) (Outcome, error) {
	c := st.c
	defer r.release(ctx, st)
	for {
		release, err := r.acquire(ctx)
		if err != nil {
			return Outcome{}, err
		}
		// Taken before the step reads: a change made after that read
		// wakes the wait below.
		changed := r.changes.wait()
		d := r.step(ctx, st)
		release()
		if ctx.Err() != nil {
			return Outcome{}, ctx.Err()
		}
		if d.done {
			now := r.clock.Now()
			d.outcome.RotatedAt = r.trusted(st.seen.RotatedAt, now)
			if d.outcome.RotatedAt.IsZero() {
				d.outcome.SeededAt = st.seen.SeededAt
				if d.outcome.SeededAt.IsZero() {
					d.outcome.SeededAt = st.seedAnchor
				}
			}
			r.status.result(c.Name, d.outcome.Result, d.err, r.clock.Now())
			return d.outcome, d.err
		}
		if d.wait > 0 {
			st.wrote = nil
			if d.progress != nil && r.opt.Progress != nil {
				r.opt.Progress(*d.progress)
			}
			// Another process's change (the change marker moved) ends any
			// wait, a backoff included: the step reads the record again
			// at once (simulation seed 7377: a daemon waiting out a 429's
			// 10 minutes missed a -once's whole rotation).
			if err := r.sleep(ctx, d.wait, d.progress, changed); err != nil {
				return Outcome{}, err
			}
		}
	}
}

// release gives up the lease this run holds, if the record still carries
// the lease it wrote (CAS, best effort, on a context of its own since ctx
// may have ended): a clean stop must not keep another process idle until
// the lease runs out. It also records a 429's floor this run could not
// record yet, so that whoever goes on honours it.
func (r *Rotator) release(ctx context.Context, st *run) {
	rec, ver := st.seen, st.seenVer
	lost := st.lost
	if lost != nil && lost.rec.LeaseOwner == r.opt.InstanceID {
		// A write of ours whose answer was lost may hold our lease; only
		// a read can tell (a CAS on the version it would have had is not
		// enough: another process may have written that version).
		st.myLease, ver = lost.rec.LeaseUntil, -1
	}
	// A 429's floor binds every process that sends with this API key,
	// whoever holds the lease now: record it even on a record this run no
	// longer leases (a -once that gives up, a run whose lease was taken).
	owesFloor := st.floor.After(r.clock.Now()) && st.floor.After(rec.RetryNotBefore)
	if st.myLease.IsZero() && !owesFloor {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		mine := true
		if attempt > 0 || ver < 0 || ver != st.mine {
			// Written since by someone (an annotation, a taker), or
			// unknown: look again.
			var err error
			if rec, ver, err = r.opt.Store.Read(wctx, st.c.VaultPath); err != nil {
				return
			}
			if lost != nil && ver == lost.ver && !sameRecord(rec, lost.rec) {
				mine = false
			}
		}
		mine = mine && !st.myLease.IsZero() && rec.LeaseOwner == r.opt.InstanceID && rec.LeaseUntil.Equal(st.myLease)
		next := rec
		if mine {
			next.LeaseOwner, next.LeaseUntil = "", time.Time{}
		}
		next.RetryNotBefore = laterOf(rec.RetryNotBefore, st.floor)
		if !mine && next.RetryNotBefore.Equal(rec.RetryNotBefore) {
			return // someone else's lease now, and the floor is recorded
		}
		_, err := r.opt.Store.Write(wctx, st.c.VaultPath, next, ver)
		switch {
		case err == nil && mine:
			r.log.Info("lease released", fields(st.c, rec)...)
			return
		case err == nil:
			r.log.Info("affix's Retry-After recorded for the process that goes on", append(fields(st.c, rec), zap.Time("retry_not_before", st.floor))...)
			return
		case errors.Is(err, vault.ErrConflict) && attempt < 2:
			continue
		case mine:
			r.log.Warn("could not release the lease; another process waits until it runs out", append(fields(st.c, rec), zap.Time("lease_until", rec.LeaseUntil), zap.Error(err))...)
		default:
			r.log.Warn("could not record affix's Retry-After in the record; another process may send before it ends", append(fields(st.c, rec), zap.Time("retry_not_before", st.floor), zap.Error(err))...)
		}
		return
	}
}

// step reads the record (or takes the one this run just wrote), notes what
// the read says of this run's own requests and writes, lets decide choose
// the move, and makes it: at most one transition.
func (r *Rotator) step(ctx context.Context, st *run) decision {
	c := st.c
	fresh := st.wrote == nil
	rec, ver, err := r.current(ctx, st)
	now := r.clock.Now()
	if err == nil && ver < st.seenVer {
		r.recreated(st, rec, ver)
	}
	if err == nil {
		if fresh && ver == st.effect {
			// Read after the answer, and nobody wrote since the request was
			// sent: whatever moves the record later comes after it.
			st.effect = -1
		}
		if fresh && ver != st.mine {
			if d, ok := r.otherVersion(st, rec, ver); ok {
				return d
			}
		}
		r.observe(st, rec, ver)
	}
	ch := decide(rec, ver, err, now, r.policy(c), st.known)
	st.reassert, st.steal = ch.reassert, ch.steal
	switch ch.move {
	case moveFail:
		return r.fail(st, rec, ch.err)
	case moveRetry:
		return r.retry(st, vault.Record{Phase: vault.PhaseStable}, ch.err)
	case moveBootstrap:
		return r.stage(ctx, st, vault.Record{}, ver, now)
	case moveDone:
		return decision{done: true, outcome: ch.outcome}
	case moveIncident:
		return r.endGraceForIncident(ctx, st, rec, ver, now)
	case moveFollow:
		if st.followed != rec.RotationID {
			r.log.Info("another process is driving this rotation; waiting for it", append(fields(c, rec), zap.String("lease_owner", rec.LeaseOwner), zap.Time("lease_until", rec.LeaseUntil))...)
		}
		st.followed = rec.RotationID
		return r.waitFor(st, rec, now, ch.wait, ch.why)
	case moveReassert:
		return r.reassertSet(ctx, st, rec, ver, now)
	case moveStage:
		return r.stage(ctx, st, rec, ver, now)
	case moveConfirm:
		return r.confirm(ctx, st, rec, ver, now)
	case moveAwaitGrace:
		return r.awaitGrace(ctx, st, rec, ver, now, ch.dropAt)
	case moveFinish:
		return r.finish(ctx, st, rec, ver, now)
	}
	return r.fail(st, rec, fmt.Errorf("rotator: no step for move %s", ch.move))
}

// recreated forgets what this run keyed by version numbers when a read
// finds a version lower than one it saw: the path's metadata was deleted
// and the record written again, so the numbers start over and a number
// this run knows may now name another record (simulation seeds 15768,
// 15975, 18977: a run's "Affix confirmed the request from version N"
// matched a new version N of a reseeded record, and it made a secret
// current that Affix had never been sent). Whatever it sent before may
// still land: it re-asserts the set the new record implies.
func (r *Rotator) recreated(st *run, rec vault.Record, ver int) {
	r.log.Warn("the record's versions start over (its metadata was deleted and it was written again); this run forgets what it knew of the old versions",
		append(fields(st.c, rec), zap.Int("version", ver), zap.Int("was", st.seenVer))...)
	st.mine, st.posted, st.rejected, st.effect, st.futureVer = -1, -1, -1, -1, -1
	st.lost, st.wrote, st.myLease = nil, nil, time.Time{}
	st.wroteAt, st.wroteFor = time.Time{}, ""
	st.seedAnchor = time.Time{} // the new record's own, from its first read
	st.seenVer = ver
	if st.reassert == "" {
		st.reassert = ReassertStale
	}
}

// otherVersion handles a record version this run did not (knowingly)
// write: its own write whose answer was lost, or another process's.
func (r *Rotator) otherVersion(st *run, rec vault.Record, ver int) (decision, bool) {
	if l := st.lost; l != nil {
		st.lost = nil
		if ver == l.ver && sameRecord(rec, l.rec) {
			r.log.Info("vault applied a write whose answer was lost; carrying on from it", fields(st.c, rec)...)
			r.ownVersion(st, rec, ver)
			r.observe(st, rec, ver)
			return l.after(), true
		}
		if ver > l.ver && landedUnder(rec, l.rec) {
			// The write landed and someone wrote after it changing only
			// what is not the rotation's (an operator's annotation, a
			// 429's floor): carry on from it as if it had answered, so
			// that its follow-up (events, metrics, the lease to release)
			// is not lost; the later version is read again next step.
			r.log.Info("vault applied a write whose answer was lost; carrying on from it", fields(st.c, rec)...)
			r.ownVersion(st, l.rec, l.ver)
			r.observe(st, rec, ver)
			return l.after(), true
		}
	}
	if st.mine < 0 && st.effect < 0 && len(st.unanswered) == 0 {
		// This run has neither written nor sent anything yet (a reconcile
		// under a claim writes nothing, but may have sent).
		return decision{}, false
	}
	if st.effect >= 0 && implies(rec, st.effectSet) {
		// Someone wrote the record after a request of ours that may have
		// been applied, but the record still implies what we sent (a
		// replica took the lease to re-assert the same set): wherever our
		// request lands, it is not stale yet. Keep watching: a later
		// version that implies another set is.
	} else if st.effect >= 0 {
		// Someone wrote the record after a request of ours that may have
		// been applied (a CAS conflict right after a 200, an operator's
		// action that ignored our lease): if it landed after their move, it
		// sent a stale set.
		st.effect = -1
		st.reassert, st.steal = ReassertStale, true
		r.log.Warn("the record was changed by another process after a request of this process that may have been applied; the set the record implies is sent again", fields(st.c, rec)...)
	}
	if rec.Phase == vault.PhaseStaged {
		// Whoever wrote it may have sent the pending secret to Affix.
		st.shared[rec.RotationID] = true
	}
	for id, ph := range st.unanswered {
		if id != rec.RotationID || ph != rec.Phase {
			// A request of ours with no answer belongs to a rotation that
			// has moved on: if it lands late, it sends a stale set.
			st.reassert, st.steal = ReassertStale, true
			clear(st.unanswered)
			r.log.Warn("a request of this process got no answer and its rotation has since moved on; it may land late, so the set the record implies is sent again", fields(st.c, rec)...)
			break
		}
	}
	return decision{}, false
}

// ownVersion notes that version ver, holding rec, is this run's own write.
func (r *Rotator) ownVersion(st *run, rec vault.Record, ver int) {
	st.mine = ver
	if st.wroteAt.IsZero() || st.wroteFor != rec.RotationID {
		st.wroteAt, st.wroteFor = r.clock.Now(), rec.RotationID
	}
	st.effect = -1
	// A write of ours whose answer was lost is behind us now: it is this
	// version, or it was superseded (a later CAS write succeeded over it,
	// or it never landed and cannot now).
	st.lost = nil
	st.myLease = time.Time{}
	if rec.LeaseOwner == r.opt.InstanceID {
		st.myLease = rec.LeaseUntil.UTC().Round(0)
	}
}

// implies reports whether rec, stable or in overlap, implies exactly the
// set of secrets set (in any order): Affix must accept [current] when
// stable, [current, previous] in overlap.
func implies(rec vault.Record, set []secret.Value) bool {
	want := []secret.Value{rec.ClientSecret}
	switch rec.Phase {
	case vault.PhaseStable:
	case vault.PhaseOverlap:
		want = append(want, rec.PreviousClientSecret)
	default:
		return false
	}
	if len(set) != len(want) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(set, func(s secret.Value) bool { return s.Equal(w) }) {
			return false
		}
	}
	return true
}

// landedUnder reports whether rec is written, a version later, over
// the record wrote: equal but for what is not the rotation's (the
// operators' fields, a 429's floor).
func landedUnder(rec, wrote vault.Record) bool {
	rec.Extra, wrote.Extra = nil, nil
	rec.RetryNotBefore, wrote.RetryNotBefore = time.Time{}, time.Time{}
	return sameRecord(rec, wrote)
}

// sameRecord reports whether two records hold the same fields.
func sameRecord(a, b vault.Record) bool {
	return reflect.DeepEqual(a.Encode(), b.Encode())
}

// stage: stable → staged. The new secret is in Vault before anything else
// learns of it (I2).
func (r *Rotator) stage(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) decision {
	pending, err := secret.Generate()
	if err != nil {
		return r.fail(st, rec, err)
	}
	next := stagedRecord(rec, pending, newRotationID(), now, r.policy(st.c), st.c.GracePeriod, st.trig)
	if a := st.trig.Audit; a != nil {
		r.log.Info("operator action", append(fields(st.c, next), zap.String("action", ActionRotate), zap.String("by", a.By), zap.String("reason", a.Reason), zap.Duration("grace_period", next.GracePeriod))...)
	}
	return r.transition(ctx, st, rec, next, ver, func() decision {
		if st.trig.Audit != nil {
			r.actionPerformed(st.c, ActionRotate)
		}
		r.bumpOnce(ctx, st, "staged")
		st.stagedHere = next.RotationID
		r.progressed(st)
		reason := st.trig.Reason
		if rec.ClientSecret.IsZero() {
			reason = "bootstrap"
		}
		r.log.Info("rotation started: new secret stored as pending", append(fields(st.c, next), zap.String("trigger", reason))...)
		r.emit(notify.EventRotationStarted, st.c, next, func(e *Event) { e.Trigger = reason })
		r.progress(st.c, next, "")
		return again
	})
}

// confirm: staged → overlap. Affix is told to accept [new, old]; only when it
// confirms exactly that set does new become current (I1).
func (r *Rotator) confirm(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) decision {
	c := st.c
	if st.rejected == ver {
		return r.abort(ctx, st, rec, ver, st.rejectedErr)
	}
	if d, ok := r.mayPost(ctx, st, rec, ver, now, st.posted != ver); !ok {
		return d
	}
	if st.posted != ver {
		sent := []secret.Value{rec.PendingClientSecret}
		if !rec.ClientSecret.IsZero() {
			sent = append(sent, rec.ClientSecret)
		}
		resp, err := r.post(ctx, st, rec, sent)
		if ctx.Err() != nil {
			return decision{done: true, err: ctx.Err()}
		}
		if errors.Is(err, errLeaseShort) {
			return again
		}
		v := confirmVerdict(err, rec, st.mayHaveApplied(rec), st.shared[rec.RotationID])
		if v.mayHold {
			// Affix may hold the new secret now: from here on, no later
			// rejection may discard it (found by the simulation, seed 816:
			// a CAS race after a 200 made the step re-run and a 401 then
			// aborted, leaving Affix accepting a secret Vault dropped).
			st.unknown[rec.RotationID] = true
		}
		switch v.next {
		case answerAbort:
			return r.rejectedBy(ctx, st, rec, ver, err)
		case answerKeepStaged:
			r.log.Error(keyNote(err)+"affix refused the update, but an earlier request carrying the new secret may have been applied; keeping the rotation staged (fix the cause; it resumes)", append(fields(c, rec), zap.Error(err))...)
			return r.backoff(ctx, st, rec, ver, err)
		case answerRetry:
			return r.backoff(ctx, st, rec, ver, err)
		}
		st.posted = ver
		if !st.late { // [new, old] is what the record will imply
			st.reassert, st.steal = "", false
		}
		if resp.ClientID != "" {
			rec.ClientID = resp.ClientID
		}
	}
	// The grace runs from now, when the new secret is about to become
	// current in Vault, not from before the request: a slow Affix must not
	// shorten the consumers' grace (found by the chaos test).
	now = r.clock.Now()
	next := confirmedRecord(rec, now, r.policy(c), c.GracePeriod, st.known)
	msg := "affix accepts [new, old]: new secret is current; grace period started"
	if next.Phase == vault.PhaseStable {
		msg = "bootstrap rotation complete: new secret is current"
	}
	return r.transition(ctx, st, rec, next, ver, func() decision {
		if next.Phase == vault.PhaseOverlap {
			st.graceOwn = next.GraceBy
			if r.clock.Since(now) > maxLateCurrent {
				st.lateID, st.lateAt = next.RotationID, r.clock.Now()
			}
		}
		r.progressed(st)
		if r.opt.Metrics != nil && !st.trig.Time.IsZero() && st.stagedHere == rec.RotationID {
			r.opt.Metrics.RotationOverlap(c.Name, now.Sub(st.trig.Time))
		}
		r.log.Info(msg, append(fields(c, next), zap.Time("grace_until", next.GraceUntil))...)
		r.bumpOnce(ctx, st, string(next.Phase))
		// rotation.overlap says "the new secret is current in Vault":
		// consumers that refresh when told need it on a bootstrap too.
		r.emit(notify.EventRotationOverlap, c, next, nil)
		r.progress(c, next, "")
		if next.Phase == vault.PhaseStable {
			return r.succeeded(st, next)
		}
		return again
	})
}

// awaitGrace holds the lease through the grace period and sleeps until it
// ends (dropAt), reading the record again every RereadInterval and sending
// Affix [current, previous] again every ReconcileInterval.
func (r *Rotator) awaitGrace(ctx context.Context, st *run, rec vault.Record, ver int, now, dropAt time.Time) decision {
	graceUntil := rec.GraceUntil
	if st.lateID == rec.RotationID {
		graceUntil = laterOf(graceUntil, st.lateAt.Add(graceOf(rec, st.c)))
		dropAt = laterOf(dropAt, graceUntil)
	}
	want := dropAt.Add(r.leaseSpan())
	if graceUntil != rec.GraceUntil || rec.LeaseOwner != r.opt.InstanceID || rec.LeaseUntil.Before(want) {
		next := rec
		next.GraceUntil = graceUntil
		next.LeaseOwner, next.LeaseUntil = r.opt.InstanceID, want
		moved := graceUntil != rec.GraceUntil
		if moved {
			next.GraceBy = st.stamp(graceUntil)
		}
		return r.transition(ctx, st, rec, next, ver, func() decision {
			if moved {
				st.graceOwn = next.GraceBy
				r.log.Warn("making the new secret current took longer than expected; grace_until moved so that consumers get the whole grace period",
					append(fields(st.c, next), zap.Time("grace_until", graceUntil), zap.Time("was", rec.GraceUntil))...)
			}
			st.lateID = ""
			r.progressed(st)
			return again
		})
	}
	if r.opt.ReconcileInterval > 0 && now.Sub(st.assertedAt) >= r.opt.ReconcileInterval {
		st.reassert = ReassertReconcile
		return again
	}
	why := "grace period"
	r.status.waiting(st.c.Name, why)
	wait := min(dropAt.Sub(now), r.opt.RereadInterval)
	if r.opt.ReconcileInterval > 0 {
		wait = min(wait, st.assertedAt.Add(r.opt.ReconcileInterval).Sub(now))
	}
	return decision{wait: max(wait, time.Millisecond), progress: &Progress{Client: st.c.Name, Phase: rec.Phase, RotationID: rec.RotationID, GraceUntil: rec.GraceUntil, Now: now, Waiting: why}}
}

// finish: overlap → stable, at or after grace_until (I3). A failure here is
// safe (Affix accepts both secrets) and is retried.
func (r *Rotator) finish(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) decision {
	c := st.c
	if d, ok := r.mayPost(ctx, st, rec, ver, now, false); !ok {
		return d
	}
	if st.posted != ver {
		if d, ok := r.send(ctx, st, rec, ver, []secret.Value{rec.ClientSecret}); !ok {
			return d
		}
		st.posted = ver
	}
	now = r.clock.Now() // rotated_at: when the old secret stopped working
	next := finishedRecord(rec, now)
	return r.transition(ctx, st, rec, next, ver, func() decision {
		r.log.Info("rotation complete: old secret dropped", fields(c, next)...)
		r.bumpOnce(ctx, st, "stable")
		r.progress(c, next, "")
		d := r.succeeded(st, next)
		if st.trig.Reason == ReasonOnce && !st.satisfied(next, r.clock.Now(), r.opt.ClockSkewMargin) {
			// A rotation staged before the -once: the -once runs its own.
			return again
		}
		return d
	})
}

// reassertSet sends Affix the set the record implies (stable: [current];
// overlap: [current, previous]) under this process's lease: after a request
// of ours may have landed late (taking the lease even from a live holder,
// which in these phases is only waiting), or periodically. In stable the
// lease is released afterwards.
func (r *Rotator) reassertSet(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time) decision {
	if cs, ok := r.opt.Store.(claimStore); ok && r.opt.ReconcileClaims && !st.claimRefused && rec.Phase == vault.PhaseStable && st.reassert == ReassertReconcile && !st.steal &&
		(rec.LeaseOwner == "" || !now.Before(rec.LeaseUntil)) {
		return r.reconcileStable(ctx, st, cs, rec, ver, now)
	}
	// An action's record may have left stable (-reaccept-previous).
	if d, ok := r.mayPost(ctx, st, rec, ver, now, st.reassert == ReassertAction); !ok {
		return d
	}
	set := []secret.Value{rec.ClientSecret}
	if rec.Phase == vault.PhaseOverlap {
		set = append(set, rec.PreviousClientSecret)
	}
	reason := st.reassert
	if d, ok := r.send(ctx, st, rec, ver, set); !ok {
		return d
	}
	if !st.late { // a late answer to this very request calls for another
		st.reassert, st.steal = "", false
	}
	if st.stopAfterAssert {
		// An action's own request may land after another process moved
		// on (held on the way, answered late): read the record once more
		// before stopping, and if someone wrote meanwhile, send the set it
		// implies (otherVersion); stop on a read that shows no one did.
		st.verify = true
		return again
	}
	if r.opt.Metrics != nil && reason != ReassertAction {
		r.opt.Metrics.Reassert(st.c.Name, reason)
	}
	if reason == ReassertStale {
		r.log.Warn("affix was sent the set the record implies again, in case a late request of this process changed it", fields(st.c, rec)...)
	} else {
		r.log.Debug("reconciled: affix was sent the set the record implies", fields(st.c, rec)...)
	}
	if rec.Phase == vault.PhaseStable {
		next := rec
		next.LeaseOwner, next.LeaseUntil = "", time.Time{}
		return r.transition(ctx, st, rec, next, ver, func() decision { return again })
	}
	return again
}

func (r *Rotator) succeeded(st *run, rec vault.Record) decision {
	if r.opt.Metrics != nil {
		r.opt.Metrics.RotationDone(st.c.Name, ResultSuccess)
		if !st.trig.Time.IsZero() && st.stagedHere == rec.RotationID {
			r.opt.Metrics.RotationCompleted(st.c.Name, r.clock.Since(st.trig.Time))
		}
	}
	r.emit(notify.EventRotationCompleted, st.c, rec, nil)
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
	next := abortedRecord(rec, r.redact(fmt.Sprintf("rotation %s aborted at %s: %s%v", rec.RotationID, r.clock.Now().UTC().Format(time.RFC3339), keyNote(cause), cause)))
	return r.transition(ctx, st, rec, next, ver, func() decision {
		msg := "rotation aborted: affix rejected the new secret; the old secret stays current"
		if affix.StatusLabel(cause) == "401" {
			msg = "rotation aborted: affix refused the API key (401); the old secret stays current: check the client's API key"
		}
		r.log.Error(msg, append(fields(st.c, rec), zap.Error(cause))...)
		if r.opt.Metrics != nil {
			r.opt.Metrics.RotationDone(st.c.Name, ResultAborted)
		}
		r.emit(notify.EventRotationAborted, st.c, next, func(e *Event) { e.Error = next.LastError })
		return decision{done: true, outcome: Outcome{Result: ResultAborted, RotationID: rec.RotationID}, err: fmt.Errorf("%w: %s%v", ErrAborted, keyNote(cause), cause)}
	})
}

// transition writes next over ver and then runs after. When the write's
// answer is lost, after runs later if the next read finds the write applied.
func (r *Rotator) transition(ctx context.Context, st *run, rec, next vault.Record, ver int, after func() decision) decision {
	st.carry(&next)
	if err := r.write(ctx, st, next, ver); err != nil {
		r.lostWrite(st, next, ver, err, after)
		return r.writeFailed(st, rec, err)
	}
	return after()
}

// lostWrite remembers a write that failed other than by a CAS conflict:
// Vault may have applied it and lost the answer.
func (r *Rotator) lostWrite(st *run, next vault.Record, ver int, err error, after func() decision) {
	if errors.Is(err, vault.ErrConflict) {
		return
	}
	if stored, derr := vault.Decode(next.Encode()); derr == nil {
		st.lost = &lostWrite{snapshot{stored, ver + 1}, after}
	}
}

// mayPost makes sure this process may send a request from rec now
// (postGate): if not, it takes or extends the lease (one CAS write, and the
// step starts over) or waits.
func (r *Rotator) mayPost(ctx context.Context, st *run, rec vault.Record, ver int, now time.Time, checkClaim bool) (decision, bool) {
	g := postGate(rec, ver, st.mine, now, r.policy(st.c), st.claimant(r.opt.InstanceID), checkClaim, st.wroteAt, st.floor)
	switch {
	case g.ok:
		return decision{}, true
	case g.lease != nil:
		return r.transition(ctx, st, rec, *g.lease, ver, func() decision {
			if rec.LeaseOwner != r.opt.InstanceID && rec.LeaseOwner != "" {
				r.log.Info("took over the rotation", append(fields(st.c, rec), zap.String("previous_owner", rec.LeaseOwner))...)
			}
			return again
		}), false
	}
	return r.waitFor(st, rec, now, g.wait, g.why), false
}

// waitFor waits d for the reason why, saying so in /status and progress.
func (r *Rotator) waitFor(st *run, rec vault.Record, now time.Time, d time.Duration, why string) decision {
	r.status.waiting(st.c.Name, why)
	return decision{wait: d, progress: &Progress{Client: st.c.Name, Phase: rec.Phase, RotationID: rec.RotationID, GraceUntil: rec.GraceUntil, Now: now, Waiting: why}}
}

// send posts secrets for a step whose every failure is retried (dropping
// the old secret, re-asserting a set); ok when Affix confirmed them.
func (r *Rotator) send(ctx context.Context, st *run, rec vault.Record, ver int, secrets []secret.Value) (decision, bool) {
	_, err := r.post(ctx, st, rec, secrets)
	switch {
	case ctx.Err() != nil:
		return decision{done: true, err: ctx.Err()}, false
	case errors.Is(err, errLeaseShort):
		return again, false
	case err != nil:
		return r.backoff(ctx, st, rec, ver, err), false
	}
	return decision{}, true
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
	v, claims, err := r.writeRecord(ctx, st.c.VaultPath, next, ver)
	if err != nil {
		return err
	}
	r.ownVersion(st, next, v)
	// Keep what a read would return: the stored form (UTC, no monotonic
	// clock reading), so the next step decides exactly as after a read.
	stored, err := vault.Decode(next.Encode())
	if err != nil {
		return nil // written, but not as read back: let the next step read it
	}
	stored.Claims = claims
	st.wrote = &snapshot{rec: stored, ver: v}
	r.observe(st, stored, v)
	return nil
}

func (r *Rotator) leaseSpan() time.Duration {
	return policy{lease: r.opt.LeaseDuration, request: r.opt.RequestTimeout}.leaseSpan()
}

// mayHaveApplied reports whether Affix may already hold rec's pending secret.
func (st *run) mayHaveApplied(rec vault.Record) bool {
	return st.stagedHere != rec.RotationID || st.unknown[rec.RotationID] || st.shared[rec.RotationID]
}

// post sends one update to Affix under this process's lease and records its
// metrics. The lease is checked against a fresh clock reading right before
// the request, and the request's deadline never outlives the lease. An
// answer that comes after the lease ended, or none at all, may mean the
// request lands (or landed) after another process moved on: the run then
// re-asserts the set the record implies.
func (r *Rotator) post(ctx context.Context, st *run, rec vault.Record, secrets []secret.Value) (*affix.UpdateResponse, error) {
	if rec.LeaseOwner != r.opt.InstanceID {
		return nil, errLeaseShort
	}
	return r.postUnder(ctx, st, rec, secrets, rec.LeaseUntil)
}

// postUnder is post under a fence that ends at until (the lease, or a
// reconcile claim).
func (r *Rotator) postUnder(ctx context.Context, st *run, rec vault.Record, secrets []secret.Value, until time.Time) (*affix.UpdateResponse, error) {
	c := st.c
	start := r.clock.Now()
	left := until.Sub(start)
	if left <= 0 {
		return nil, errLeaseShort
	}
	ctx, cancel := context.WithTimeout(ctx, min(r.opt.RequestTimeout, left))
	defer cancel()
	resp, err := c.Affix.UpdateClient(ctx, affix.UpdateRequest{
		ClientSecret: secrets, Name: c.AppName, RedirectURIs: c.RedirectURIs, WebhookURI: c.WebhookURI,
	})
	end := r.clock.Now()
	if r.opt.Metrics != nil && !errors.Is(err, affix.ErrNotSent) {
		r.opt.Metrics.AffixRequest(c.Name, affix.StatusLabel(err), end.Sub(start))
	}
	mayLand := err == nil || !(affix.Definite(err) || errors.Is(err, affix.ErrNotSent) || affix.StatusLabel(err) == "429")
	var mm *affix.MismatchError
	if errors.As(err, &mm) {
		mayLand = true
	}
	if mayLand {
		st.effect, st.effectSet = st.seenVer, secrets
	}
	if ra, ok := affix.RetryAfter(err); ok && ra > 0 && affix.StatusLabel(err) == "429" {
		st.floor = laterOf(st.floor, end.Add(ra))
	}
	switch {
	case err == nil:
		st.assertedAt = end
		r.confirmed(c.Name, end)
		delete(st.unanswered, rec.RotationID)
	case mayLand:
		st.unanswered[rec.RotationID] = rec.Phase
	}
	st.late = mayLand && end.After(until)
	if st.late {
		st.reassert, st.steal = ReassertStale, true
		r.log.Warn("affix answered after this process's lease had ended; another process may have moved on, so the set the record implies is sent again", append(fields(c, rec), zap.Time("lease_until", until))...)
	}
	return resp, err
}

// writeFailed handles a failed CAS write: a conflict means another process
// moved the record (re-read at once: otherVersion then sees whether a
// request of ours may have landed after that move); anything else is
// retried.
func (r *Rotator) writeFailed(st *run, rec vault.Record, err error) decision {
	if errors.Is(err, vault.ErrConflict) {
		r.log.Info("record changed under us; re-reading", append(fields(st.c, rec), zap.Error(err))...)
		return again
	}
	return r.retry(st, rec, err)
}

// backoff is retry for a failed request under this process's lease: the
// lease is extended first when the wait would outlive it, and a 429's
// Retry-After is recorded as retry_not_before, so that a process that takes
// over honours it too.
func (r *Rotator) backoff(ctx context.Context, st *run, rec vault.Record, ver int, err error) decision {
	d := r.retry(st, rec, err)
	if d.done || rec.LeaseOwner != r.opt.InstanceID || st.mine != ver {
		return d
	}
	now := r.clock.Now()
	next := rec
	next.RetryNotBefore = laterOf(rec.RetryNotBefore, st.floor)
	if until := now.Add(d.wait + r.policy(st.c).minLeft()); rec.LeaseUntil.Before(until) {
		next.LeaseUntil = now.Add(d.wait + r.leaseSpan())
	}
	// Why the step fails, and since when, go in the record with the
	// rotation they belong to (-status, a replica); written when the step
	// starts failing and whenever the lease is extended anyway.
	if rec.FailingSince.IsZero() || !next.LeaseUntil.Equal(rec.LeaseUntil) {
		next.StepError = r.redact(stepErrorText(err))
		if rec.FailingSince.IsZero() {
			next.FailingSince = now
		}
	}
	if next.RetryNotBefore.Equal(rec.RetryNotBefore) && next.LeaseUntil.Equal(rec.LeaseUntil) && next.StepError == rec.StepError && next.FailingSince.Equal(rec.FailingSince) {
		return d
	}
	st.carry(&next)
	if werr := r.write(ctx, st, next, ver); werr != nil {
		r.log.Warn("could not extend the lease over the wait", append(fields(st.c, rec), zap.Error(werr))...)
		r.lostWrite(st, next, ver, werr, func() decision { return again })
	}
	return d
}

// retry schedules another attempt at the step leaving rec.Phase after a
// transient failure: capped exponential backoff with jitter, never sooner
// than a Retry-After floor.
func (r *Rotator) retry(st *run, rec vault.Record, err error) decision {
	if isDenied(err) {
		return r.denied(st, rec, err) // denied.go
	}
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
	r.log.Warn(keyNote(err)+"rotation step failed; will retry", append(fields(st.c, rec), zap.Error(err), zap.Duration("retry_in", d))...)
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
	r.emit(notify.EventRotationFailed, st.c, rec, func(e *Event) { e.Error = errorText(err) })
	return decision{done: true, outcome: Outcome{Result: ResultFailed, RotationID: rec.RotationID}, err: err}
}

func (r *Rotator) progressed(st *run) {
	st.bo.Reset()
	st.failingSince = time.Time{}
}

// observe mirrors the record into metrics and /status, and remembers it.
func (r *Rotator) observe(st *run, rec vault.Record, ver int) {
	if !st.firstSeen {
		st.firstSeen, st.firstID = true, rec.RotationID
		st.firstAhead = rec.StagedAt.After(r.clock.Now().Add(r.opt.ClockSkewMargin))
	}
	if rec.RotatedAt.IsZero() && st.seedAnchor.IsZero() {
		st.seedAnchor = SeedAnchor(rec).UTC().Round(0)
	}
	if ver != st.futureVer && r.checkFuture(st.c, rec) {
		// Once per version and run: a version whose times were within
		// the margin when first read may lie beyond it later (this
		// host's clock stepped back; simulation seed 231).
		st.futureVer = ver
	}
	st.seen, st.seenVer = rec, ver
	r.actionSeen(st.c, rec)
	if r.opt.Metrics != nil {
		r.opt.Metrics.ObserveRecord(st.c.Name, rec.Phase, rec.GraceUntil, r.trusted(rec.RotatedAt, r.clock.Now()))
	}
	r.status.record(st.c.Name, rec)
	r.recordNext(st.c, rec)
}

// futureOnly keeps a 429's floor that is still in force (another process
// may have got it) and drops one that has passed.
func futureOnly(floor, now time.Time) time.Time {
	if now.Before(floor) {
		return floor
	}
	return time.Time{}
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
