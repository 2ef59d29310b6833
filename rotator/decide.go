package rotator

import (
	"errors"
	"fmt"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/vault"
)

// known is what a decision reads of the run besides the record: its
// trigger, its token, and what it knows of its own requests and writes. It
// is passed to decide by value: a snapshot, not a handle.
type known struct {
	trig Trigger
	// token names this run in the record's grace_by and reconcile claim:
	// a grace_until this run wrote is read against this run's own clock;
	// any other waits ClockSkewMargin more (a restarted process may run
	// on another host).
	token string
	// firstID is the rotation_id of the first record this run saw
	// (firstSeen): an input of a -once, like its trigger time. The secret
	// current then is the one the operator wants gone: the -once is
	// satisfied only by a completed rotation with another id.
	firstID   string
	firstSeen bool
	// firstAhead: the first rotation's staged_at lay beyond now +
	// ClockSkewMargin when first seen (a clock running ahead staged it):
	// it cannot tell that rotation apart from one staged after the -once.
	firstAhead bool
	// graceOwn is the grace_by of the last grace_until this run wrote and
	// knows landed (graceMine): what it knows of its own write, never a
	// reason to skip anything another process would do.
	graceOwn string
	// reassert, when set, is why the set the record implies must be sent
	// to Affix again before anything else (ReassertStale,
	// ReassertReconcile, ReassertAction); steal allows taking a live lease
	// for it.
	reassert string
	steal    bool
	// verify: an action's request was confirmed; the next read decides
	// whether another process wrote after it (re-assert) or not (stop).
	verify bool
	// assertedAt is when Affix last confirmed a set this process sent
	// (counted across runs: Rotator.assertedSince).
	assertedAt time.Time
	// lateID is a rotation whose new secret this run made current later
	// than the grace_until it wrote assumed (the write took longer than
	// maxLateCurrent): its grace_until is moved before anything else.
	lateID string
	// wroteAt is when this run's first write on the rotation wroteFor
	// returned (or was recognised after a lost answer): a reconcile claim
	// that can race this run's requests was written before the record left
	// stable, so before that write, and its request ends by wroteAt +
	// vault.MaxClaimSpan whatever the claimant's clock says. (A claim
	// written later found the record out of stable and sent nothing; a
	// lease extension does not move wroteAt.)
	wroteAt  time.Time
	wroteFor string
}

// policy is what a decision reads of the configuration.
type policy struct {
	client    string        // the client's name, for messages
	instance  string        // lease identity
	bootstrap bool          // the client's bootstrap: true
	margin    time.Duration // rotation.clock_skew_margin
	reconcile time.Duration // rotation.reconcile_interval (0: never)
	reread    time.Duration // rotation.reread_interval
	follow    time.Duration // how long to wait on another's lease at most
	lease     time.Duration // rotation.lease_duration
	request   time.Duration // the Affix request timeout
}

// leaseSpan is how long a lease taken or extended lasts.
func (p policy) leaseSpan() time.Duration { return max(p.lease, 3*p.request) }

// minLeft is the lease time a request needs left before it is sent.
func (p policy) minLeft() time.Duration { return max(p.lease/2, 2*p.request) }

func (r *Rotator) policy(c *Client) policy {
	return policy{client: c.Name, instance: r.opt.InstanceID, bootstrap: c.Bootstrap, margin: r.opt.ClockSkewMargin,
		reconcile: r.opt.ReconcileInterval, reread: r.opt.RereadInterval, follow: r.opt.FollowInterval,
		lease: r.opt.LeaseDuration, request: r.opt.RequestTimeout}
}

// move is what a step does next.
type move int

const (
	moveFail       move = iota // end without a transition (err)
	moveRetry                  // a transient failure to read: back off
	moveBootstrap              // stage onto a never-used path (an operator's -once)
	moveDone                   // end with outcome
	moveIncident               // end the grace in flight (the leaked-secret -once)
	moveFollow                 // another process drives the rotation: wait
	moveReassert               // send Affix the set the record implies
	moveStage                  // stable → staged
	moveConfirm                // staged → overlap (or stable: bootstrap)
	moveAwaitGrace             // overlap: hold the lease and wait until dropAt
	moveFinish                 // overlap → stable
)

var moveNames = [...]string{"fail", "retry", "bootstrap", "done", "incident", "follow", "reassert", "stage", "confirm", "await-grace", "finish"}

func (m move) String() string { return moveNames[m] }

// choice is decide's answer: one move, and what the run's reassert and
// steal are from now on.
type choice struct {
	move     move
	err      error         // moveFail, moveRetry
	outcome  Outcome       // moveDone
	wait     time.Duration // moveFollow
	why      string        // moveFollow
	dropAt   time.Time     // moveAwaitGrace
	reassert string
	steal    bool
}

// decide is the step's choice, a pure function of the record just read
// (rec at version ver, or the read's error), the time, the policy and what
// the run knows (k): no I/O and no state of its own. The transitions it
// names then compute the record they write, send what it implies, and
// note the answers (machine.go).
func decide(rec vault.Record, ver int, readErr error, now time.Time, p policy, k known) choice {
	ch := choice{reassert: k.reassert, steal: k.steal}
	if readErr != nil {
		var me *vault.MalformedError
		switch {
		case errors.Is(readErr, vault.ErrNotFound) && p.bootstrap && ver == 0 && k.trig.Reason == ReasonOnce:
			// Posting [new] alone drops whatever Affix accepts: only an
			// operator's explicit -once does it, never a daemon (a path
			// whose metadata was deleted looks brand-new to Vault).
			ch.move = moveBootstrap
		case errors.Is(readErr, vault.ErrNotFound) && p.bootstrap && ver == 0:
			ch.move, ch.err = moveFail, fmt.Errorf("%w; bootstrap is on, but only an operator's one-shot run creates the record, since it makes Affix drop whatever secret it accepts now: run `affix-rotator -config <file> -once -client %s` once for a brand-new Affix client", readErr, p.client)
		case errors.Is(readErr, vault.ErrNotFound) && ver > 0:
			ch.move, ch.err = moveFail, fmt.Errorf("%w; its latest version (%d) was deleted, so this is not a brand-new client: restore it with `vault kv undelete -versions=%d` or `vault kv rollback`, never by bootstrapping (that would drop the secret Affix accepts)", readErr, ver, ver)
		case errors.Is(readErr, vault.ErrNotFound), errors.As(readErr, &me):
			ch.move, ch.err = moveFail, readErr
		default:
			ch.move, ch.err = moveRetry, readErr
		}
		return ch
	}
	if k.verify && k.reassert == "" && rec.Phase != vault.PhaseStaged {
		ch.move = moveDone // an action's request, checked by a read after it
		return ch
	}
	if rec.Phase == vault.PhaseOverlap && k.incident(rec, now) {
		ch.move = moveIncident
		return ch
	}
	leasedByOther := rec.LeaseOwner != "" && rec.LeaseOwner != p.instance && now.Before(rec.LeaseUntil)
	if leasedByOther && rec.Phase == vault.PhaseOverlap && now.Before(rec.GraceUntil) && p.reconcile > 0 && now.Sub(k.assertedAt) >= p.reconcile {
		// Following another process's grace for a whole reconcile
		// interval (counted across runs): that process may be frozen, and
		// drift must not last longer than the interval. Taking its lease
		// is safe in overlap (it is only waiting) and it follows us from
		// its next read. Not once the grace is over: the holder is
		// dropping the old secret then, and its lease ends soon.
		if ch.reassert == "" {
			ch.reassert = ReassertReconcile
		}
		ch.steal = true
	}
	if leasedByOther && !(ch.steal && rec.Phase != vault.PhaseStaged) {
		// Look again every follow interval, and in overlap at least every
		// reread interval and just after grace_until; never past the lease.
		next := p.follow
		if rec.Phase == vault.PhaseOverlap && rec.GraceUntil.After(now) {
			next = min(rec.GraceUntil.Sub(now)+time.Second, p.reread)
		}
		ch.move, ch.wait = moveFollow, min(rec.LeaseUntil.Sub(now), next)
		ch.why = fmt.Sprintf("rotation driven by %s (lease until %s)", rec.LeaseOwner, rec.LeaseUntil.UTC().Format(time.RFC3339))
		return ch
	}
	if ch.reassert != "" && rec.Phase != vault.PhaseStaged {
		ch.move = moveReassert
		return ch
	}
	switch rec.Phase {
	case vault.PhaseStable:
		rotatedAt := trustedAt(rec.RotatedAt, now, p.margin)
		once := k.trig.Reason == ReasonOnce
		if once && !k.satisfied(rec, now, p.margin) || !once && k.trig.wantsNew(rotatedAt, now) {
			ch.move = moveStage
			return ch
		}
		ch.move = moveDone
		if once || (k.trig.Reason == ReasonSchedule || k.trig.Reason == ReasonAction) && !rotatedAt.Before(k.trig.Time) {
			// Someone else (a replica, the daemon while -once waited)
			// completed a rotation after the trigger: it is satisfied.
			ch.outcome = Outcome{Result: ResultSuccess, RotationID: rec.RotationID, ByOther: true}
		}
		return ch
	case vault.PhaseStaged:
		ch.move = moveConfirm
		return ch
	case vault.PhaseOverlap:
		dropAt := rec.GraceUntil
		if !k.graceMine(rec) {
			dropAt = dropAt.Add(p.margin)
		}
		if now.Before(dropAt) || k.lateID == rec.RotationID {
			ch.move, ch.dropAt = moveAwaitGrace, dropAt
			return ch
		}
		ch.move = moveFinish
		return ch
	}
	ch.move, ch.err = moveFail, fmt.Errorf("rotator: unknown phase %q", rec.Phase)
	return ch
}

// trustedAt is a time read from a record as a decision may use it: one
// later than now plus the clock-skew margin was written by a clock running
// ahead and is taken as now (for max_age, -once and the alerts).
func trustedAt(t, now time.Time, margin time.Duration) time.Time {
	if t.After(now.Add(margin)) {
		return now
	}
	return t
}

// gate says whether a run may send a request from rec now, and if not,
// the one thing to do first.
type gate struct {
	ok    bool
	lease *vault.Record // take or extend the lease (a write), then look again
	wait  time.Duration // wait out a 429's floor or another run's reconcile claim
	why   string
}

// floorGate holds a request back while a 429's floor is in force: any
// process's in the record, or this run's own not recorded yet (ownFloor).
func floorGate(rec vault.Record, ownFloor, now time.Time) gate {
	if floor := laterOf(rec.RetryNotBefore, ownFloor); now.Before(floor) {
		return gate{wait: floor.Sub(now), why: fmt.Sprintf("affix asked to wait until %s (Retry-After)", floor.UTC().Format(time.RFC3339))}
	}
	return gate{ok: true}
}

// postGate is the rule before every request from the record's lease
// (pure): this process holds the lease, at a version it wrote itself
// (mine), with more than minLeft to run, so that another process sharing
// its instance id (a restarted pod whose predecessor is frozen, not dead)
// never acts on the same lease unnoticed; no 429 floor is in force, any
// process's in the record or this run's own not recorded yet (ownFloor);
// and, with checkClaim (a record this run moved out of stable), no
// reconcile claim of another run, returned by that write, may still have
// its request in flight (claim.go): it waits until the claim's end plus
// the clock-skew margin, and never more than vault.MaxClaimSpan plus the
// margin after wroteAt.
func postGate(rec vault.Record, ver, mine int, now time.Time, p policy, claimant string, checkClaim bool, wroteAt, ownFloor time.Time) gate {
	if rec.LeaseOwner != p.instance || mine != ver || rec.LeaseUntil.Sub(now) < p.minLeft() {
		next := rec
		next.LeaseOwner, next.LeaseUntil = p.instance, laterOf(rec.LeaseUntil, now.Add(p.leaseSpan()))
		if rec.LeaseOwner != p.instance {
			next.LeaseUntil = now.Add(p.leaseSpan())
		}
		return gate{lease: &next}
	}
	// A 429's floor: any process's in the record, or this run's own that
	// it could not record yet (it wakes early when another changes the
	// record).
	if g := floorGate(rec, ownFloor, now); !g.ok {
		return g
	}
	if !checkClaim {
		return gate{ok: true}
	}
	// Every claim of another run the write was answered with: its request
	// ends by its until (on its clock: the margin), and in any case by
	// wroteAt + MaxClaimSpan (a clock running ahead wrote a later until).
	var end time.Time
	var by vault.Claim
	for _, c := range rec.Claims {
		if c.Owner == claimant {
			continue
		}
		if e := earlierOf(c.Until, wroteAt.Add(vault.MaxClaimSpan)).Add(p.margin); e.After(end) {
			end, by = e, c
		}
	}
	if now.Before(end) {
		return gate{wait: end.Sub(now), why: fmt.Sprintf("a reconcile request of %s may be in flight (claimed until %s)", by.Owner, by.Until.UTC().Format(time.RFC3339))}
	}
	return gate{ok: true}
}

// answer is what a staging's request [new, current] leads to.
type answer int

const (
	answerConfirmed  answer = iota // Affix accepts [new, current]: make new current
	answerAbort                    // definitely rejected, and nothing carrying new can have landed: abort
	answerKeepStaged               // definitely rejected, but a request carrying new may have landed: keep staged, loudly
	answerRetry                    // unknown, a 429, a 5xx, a set other than the one sent: back off and send again
)

// verdict is confirmVerdict's answer.
type verdict struct {
	next answer
	// mayHold: Affix may hold the new secret from now on, so no later
	// rejection may discard it.
	mayHold bool
}

// confirmVerdict is what the answer err to a staging's request means
// (pure): mayHaveApplied says an earlier request carrying the new secret
// (this run's, or one of the process whose staged version this run saw)
// may have been applied; shared, that another process wrote the staged
// record since this run staged it.
func confirmVerdict(err error, rec vault.Record, mayHaveApplied, shared bool) verdict {
	var mm *affix.MismatchError
	switch {
	case err == nil:
		return verdict{next: answerConfirmed, mayHold: true}
	case errors.As(err, &mm):
		// Affix applied something other than what was sent; its answer
		// is its state now. Abort only if that keeps the current secret
		// and holds no trace of the new one; otherwise send [new, current]
		// again.
		if !rec.ClientSecret.IsZero() && mm.Contains(1) && !mm.Contains(0) && !shared {
			return verdict{next: answerAbort}
		}
		return verdict{next: answerRetry, mayHold: true}
	case affix.Definite(err):
		if mayHaveApplied || rec.ClientSecret.IsZero() {
			// Dropping the new secret from Vault could leave Affix
			// accepting a secret nobody records (I2). A bootstrap has
			// nothing to fall back to.
			return verdict{next: answerKeepStaged}
		}
		return verdict{next: answerAbort}
	}
	// A 429, or a request that never left, cannot have been applied;
	// anything else (5xx, no answer) may have been.
	return verdict{next: answerRetry, mayHold: affix.StatusLabel(err) != "429" && !errors.Is(err, affix.ErrNotSent)}
}
