package rotator

import (
	"errors"
	"fmt"
	"time"

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
}

func (r *Rotator) policy(c *Client) policy {
	return policy{client: c.Name, instance: r.opt.InstanceID, bootstrap: c.Bootstrap, margin: r.opt.ClockSkewMargin,
		reconcile: r.opt.ReconcileInterval, reread: r.opt.RereadInterval, follow: r.opt.FollowInterval}
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
