package simworld

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// landedWrite records and checks a write that took effect.
func (w *World) landedWrite(p *proc, before, after map[string]any, v int, lost bool) {
	now := time.Now()
	switch {
	case str(after, "lease_owner") == "":
		w.leaseBy = 0
	case str(after, "lease_owner") != str(before, "lease_owner") || str(after, "lease_until") != str(before, "lease_until"):
		w.leaseBy = p.pid
	}
	rid := str(after, "rotation_id")
	bp, ap := str(before, "phase"), str(after, "phase")
	if bp == "" && before != nil {
		bp = "stable"
	}
	for _, k := range []string{"client_secret", "previous_client_secret", "pending_client_secret"} {
		if s := str(after, k); s != "" {
			w.recorded[s] = true
		}
	}
	if j := time.Duration(p.host.jump.Load()); j > 0 {
		// Written by a clock that jumped ahead: its lease, grace and
		// 429 floor hold the others up until they pass.
		for _, k := range []string{"lease_until", "grace_until", "retry_not_before"} {
			w.taintUntil = laterOf(w.taintUntil, tm(after, k).Add(simMaxSkew))
		}
		w.event("write-by-a-clock-jumped-ahead", p)
		// It also drops, as passed by its clock, a 429 floor still in
		// force for everyone else (a transition keeps only a floor in the
		// future): the processes reading its version cannot know of the
		// floor, so the [floor] check spares them; the drift bound covers
		// what their requests cause.
		for _, f := range w.floors {
			if f.until.After(now) && tm(after, "retry_not_before").Before(f.until.Add(f.skew-simMaxSkew)) {
				f.exempt = true
				w.event("floor-dropped-by-a-clock-jumped-ahead")
			}
		}
	}
	// I4: one pending secret per rotation; none generated while one is in flight.
	if pend := str(after, "pending_client_secret"); pend != "" {
		if w.crossing {
			// A check-and-set that passed on a version number a
			// metadata delete restarted: the old record written over
			// the new one, which Vault cannot fence (seed 68785; see
			// execWrite).
			w.event("fork-across-a-metadata-delete", p)
		} else if old, ok := w.pendingOf[rid]; ok && old != pend {
			w.violate("fork", "I4: rotation %s got a second pending secret %s (had %s), written by %s", rid, w.label(pend), w.label(old), p)
		}
		if pend != str(before, "pending_client_secret") {
			w.label(pend)
			if (bp == "staged" || bp == "overlap") && !w.crossing {
				w.violate("fork", "I4/I6: %s generated a new secret %s while phase %s of rotation %s was in flight", p, w.label(pend), bp, str(before, "rotation_id"))
			}
			if p.kind == "once" && p.abortLanded && !w.othersWrote(p, p.abortVer) {
				w.violate("lost-answer", "%s staged a new secret %s after its own abort had landed in Vault (the abort's answer was lost: %v); a -once run must end aborted, not rotate again", p, w.label(pend), p.lostAbort)
			}
			w.event("staged", w.label(pend), " by ", p)
			if _, ok := w.stagedTrue[rid]; !ok {
				w.stagedTrue[rid] = now
			}
		}
		w.pendingOf[rid] = pend
	}
	switch {
	case bp == "staged" && ap == "overlap":
		skew := time.Duration(p.host.skew.Load())
		from := tm(after, "grace_until").Add(-w.graceOf(after) - p.host.peak())
		w.overlapAt[rid] = overlapInfo{at: now, id: p.id, pid: p.pid, skew: skew, jump: time.Duration(p.host.jump.Load()), late: now.Sub(from), lost: lost}
		w.prevOf[rid] = str(after, "previous_client_secret")
		w.event("overlap", p)
	case bp == "staged" && ap == "stable":
		p.abortLanded, p.lostAbort, p.abortVer = true, lost, v
		w.event("aborted", p)
	case bp == "overlap" && ap == "stable":
		// A -once is satisfied only by a rotation staged at or after it:
		// ending an older one's grace, it goes on with a rotation of its own.
		if p.kind != "once" || p.firstRead && str(after, "rotation_id") != p.firstRID {
			p.finalLanded, p.lostFinal, p.finalVer = true, lost, v
		}
		w.lastDone = now
		w.event("completed", p)
		if p.kind == "once" && w.cases["marker"] && p.host.jump.Load() == 0 {
			skews := map[*host]time.Duration{}
			for _, h := range w.hosts {
				skews[h] = time.Duration(h.skew.Load())
			}
			w.notices = append(w.notices, &noticeWatch{at: now, p: p, ver: v, rotatedAt: tm(after, "rotated_at"), skews: skews})
		}
	case p.kind == "action" && p.action == rotator.ActionReacceptPrevious && bp == "stable" && ap == "overlap":
		// -reaccept-previous must bring back the secret the rotation
		// replaced, and a daemon must end the new grace in time.
		if want, ok := w.prevOf[rid]; ok && want != str(after, "previous_client_secret") {
			w.violate("operator", "%s reaccepted %s as the previous secret of rotation %s, but that rotation replaced %s", p, w.label(str(after, "previous_client_secret")), rid, w.label(want))
		}
		w.reaccept = &reacceptWatch{at: now, p: p, rid: rid, graceUntil: str(after, "grace_until"), opsSkew: p.host.peak(), d: p.actionD}
		w.event("reaccept-landed", p, " for ", p.actionD)
	case p.kind == "action" && p.action == rotator.ActionExtendGrace && bp == "overlap" && ap == "overlap" && p.gapCase && str(before, "grace_until") != str(after, "grace_until"):
		w.extended = &extendWatch{at: now, p: p, rid: rid, graceUntil: str(after, "grace_until"), opsSkew: p.host.peak(),
			cur: str(after, "client_secret"), prev: str(after, "previous_client_secret")}
		w.event("extend-grace-landed-in-the-gap", p)
	}
}

// landed classifies a request Affix just handled: applied or not, stale or
// not, and checks I3 if it dropped the previous secret. A request applied
// after its client gave up on it (late) is stale: no client can know when,
// or whether, it lands (the design's drift bound covers it).
func (w *World) landed(c *call, p *proc, outOfBand, late bool) string {
	r := w.lastReq
	if !r.Applied {
		return fmt.Sprintf("request by %s not applied (%d)", p, r.Status)
	}
	now := time.Now()
	p.postedAny = true
	cur, curVer, deleted := w.store.Latest(simPath)
	sent := r.ClientSecret
	labels := make([]string, len(sent))
	for i, s := range sent {
		labels[i] = w.label(s)
	}
	cause := fmt.Sprintf("%s applied %v", p, labels)
	skewAt := now.Add(c.skew)
	var why []string
	if late {
		why = append(why, "applied after its sender gave up on it")
	}
	if outOfBand {
		why = append(why, "Affix changed the set itself")
	} else if deleted || cur == nil {
		why = append(why, "record deleted")
	} else {
		leased := str(cur, "lease_owner") == p.id && skewAt.Before(tm(cur, "lease_until"))
		// A stable client's reconcile is fenced by a claim instead: the
		// sender's claim is live and the record is the stable version it
		// read after claiming.
		claimed := simPhase(cur) == "stable" && c.basis != nil && c.basis.ver == curVer && w.claimLive(p, skewAt)
		if !leased && !claimed {
			why = append(why, "lease not held")
		}
		if c.basis == nil || str(cur, "rotation_id") != c.basis.str("rotation_id") || simPhase(cur) != simPhase(c.basis.data) {
			why = append(why, "rotation moved on")
		}
		if c.basis != nil && w.namesakeWrote(p, c.basis.ver) {
			// The lease names an instance id, not a process: a namesake
			// (a restarted pod whose predecessor is frozen, not dead)
			// takes it at once, by design, so it fences nothing between
			// them; the drift bound covers what lands.
			why = append(why, "a namesake wrote the record since")
		}
	}
	stale := len(why) > 0
	if stale {
		cause += " (stale: " + strings.Join(why, ", ") + ")"
		w.event("stale-landing")
	} else {
		cause += " (fresh: its sender held the lease and the rotation had not moved on)"
	}
	rt := &root{at: now, cause: cause, stale: stale, jumped: c.jump > w.margin}
	after := w.fake.Secrets(w.key)
	for _, x := range after {
		if !slices.Contains(w.preSet, x) {
			w.roots["add:"+x] = rt
		}
	}
	for _, x := range w.preSet {
		if !slices.Contains(after, x) {
			w.roots["drop:"+x] = rt
		}
	}
	// I3: a request that drops the previous secret of an overlap.
	if !deleted && simPhase(cur) == "overlap" && !slices.Contains(sent, str(cur, "previous_client_secret")) {
		rid := str(cur, "rotation_id")
		if c.basis != nil && c.basis.str("rotation_id") == rid && simPhase(c.basis.data) == "overlap" {
			ov := w.overlapAt[rid]
			if w.gapArmed && w.faulty && !late && !outOfBand && p.kind != "action" {
				// The gap case: this run's next Vault writes fail while an
				// operator's -extend-grace lands (execWrite).
				w.gapArmed = false
				p.failWrites, p.gapAction = 2, true
				w.event("gap-drop-sent", p)
			}
			need := tm(c.basis.data, "grace_until")
			// -end-grace drops at the grace_until it set itself: no other
			// clock to allow for, and a shorter grace is its purpose.
			// So does a leaked-secret -once ending an older rotation's grace.
			endGrace := p.action == rotator.ActionEndGrace ||
				strings.Contains(c.basis.str("last_action"), `"action":"end-grace"`) && strings.Contains(c.basis.str("last_action"), rid) ||
				incidentEnded(c.basis.data, rid)
			takeover := ov.id != "" && ov.id != p.id && !endGrace
			if takeover {
				need = need.Add(w.margin)
			}
			if skewAt.Before(need) {
				w.violate("grace", "I3: %s dropped the old secret at %s by its clock, before grace_until%s %s (takeover: %v; last_action %s, grace_by %q)",
					p, skewAt.Format(time.RFC3339), map[bool]string{true: "+clock_skew_margin", false: ""}[takeover], need.Format(time.RFC3339), takeover, c.basis.str("last_action"), c.basis.str("grace_by"))
			}
			// -reaccept-previous reopens a grace of the length the
			// operator chose, from its own write: the grace_until check
			// above is the whole rule then (seed 1698 of the 100,000 run).
			// So does -extend-grace: the operator set grace_until from
			// now, maybe after the grace had been cut (-end-grace, a
			// leaked-secret -once) (the gap case, seed 667).
			reopened := (strings.Contains(c.basis.str("last_action"), `"action":"reaccept-previous"`) || strings.Contains(c.basis.str("last_action"), `"action":"extend-grace"`)) &&
				strings.Contains(c.basis.str("last_action"), rid)
			if !ov.at.IsZero() && !endGrace && !reopened {
				// The process that made the new secret current knows when
				// its write returned (the rotator tolerates 1s); another
				// cannot know how late that write landed, nor beat a
				// clock skew beyond the margin.
				grace := w.graceOf(c.basis.data)
				// A writer whose clock jumped forward since its overlap
				// write reads its own grace_until that much early: it
				// cannot do better (the relaxation is the jump, no more).
				allow := grace - time.Second - max(0, c.jump-ov.jump)
				if p.pid != ov.pid {
					allow = grace - max(time.Second, ov.late) - max(0, c.skew-ov.skew-w.margin)
				}
				if got := now.Sub(ov.at); got < allow {
					w.violate("grace", "I3: consumers got %s of grace (true time from the overlap write by %s to the drop by %s), want at least %s (grace %s, skew %s vs %s; the overlap write landed %s after the clock reading grace_until counts from, its answer lost: %v)",
						got.Round(time.Millisecond), ov.id, p, allow, w.cfg.grace, c.skew.Round(time.Millisecond), ov.skew.Round(time.Millisecond), ov.late.Round(time.Millisecond), ov.lost)
				}
			}
		} else {
			w.event("stale-drop")
		}
	}
	return cause
}

// incidentEnded reports whether d's grace was ended by a leaked-secret
// -once: its last_action is a rotate on this rotation that is not the one
// recorded when the rotation was staged (an operator's -once -grace
// records its rotate at staged_at; the incident's cut at another time).
// A grace_until moved by hand since does not give the consumers their
// grace back.
func incidentEnded(d map[string]any, rid string) bool {
	var a struct {
		Action     string    `json:"action"`
		At         time.Time `json:"at"`
		RotationID string    `json:"rotation_id"`
	}
	if json.Unmarshal([]byte(str(d, "last_action")), &a) != nil {
		return false
	}
	return a.Action == rotator.ActionRotate && a.RotationID == rid && !a.At.Equal(tm(d, "staged_at"))
}

// graceOf is the grace of the rotation in d: its grace_period (an
// operator's -once -grace travels with the rotation), else the config's.
func (w *World) graceOf(d map[string]any) time.Duration {
	if g, err := time.ParseDuration(str(d, "grace_period")); err == nil && g > 0 {
		return g
	}
	return w.cfg.grace
}

func simPhase(d map[string]any) string {
	if d == nil {
		return ""
	}
	if p := str(d, "phase"); p != "" {
		return p
	}
	return "stable"
}

// finish checks the end of the final period: the rotation in flight
// completed in time, and Affix accepts exactly the set the record implies.
func (w *World) finish(now time.Time) {
	d, _, deleted := w.store.Latest(simPath)
	if deleted || d == nil {
		w.violate("final", "record deleted at the end")
		return
	}
	acc := w.fake.Secrets(w.key)
	cur, prev, pend := str(d, "client_secret"), str(d, "previous_client_secret"), str(d, "pending_client_secret")
	var want []string
	switch simPhase(d) {
	case "stable":
		want = []string{cur}
	case "overlap":
		want = []string{cur, prev}
	case "staged":
		want = []string{cur}
		if slices.Contains(acc, pend) {
			want = append(want, pend)
		}
	}
	if !simSameSet(acc, want) {
		w.violate("final", "after %s without faults, Affix accepts %v but the record (phase %s) implies %v",
			now.Sub(w.finalAt).Round(time.Second), w.labelsOf(acc), simPhase(d), w.labelsOf(want))
	}
	w.event("end")
}

func simSameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func (w *World) labelsOf(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = w.label(x)
	}
	return out
}

// --- checks ---

// reacceptWatch is an operator's -reaccept-previous D that landed: a live,
// unpaused daemon must end the grace it reopened within D + the re-read
// bound + clock_skew_margin + slack ([reread]).
type reacceptWatch struct {
	at         time.Time // true time its write landed
	p          *proc
	rid        string
	graceUntil string        // as written (on the operator host's clock)
	opsSkew    time.Duration // the operator host's offset then
	d          time.Duration
}

// extendWatch is an -extend-grace that landed in the gap of the two failed
// writes of a run that had dropped the previous secret: once it returned
// success, Affix accepts [current, previous] until its grace_until.
type extendWatch struct {
	at         time.Time
	p          *proc
	rid        string
	graceUntil string
	opsSkew    time.Duration
	cur, prev  string
	checked    bool // Affix's set was checked at least once
}

// noticeWatch is a rotation a -once completed while the marker is on: a
// stable daemon shows it (last_success_timestamp_seconds) within
// reread_interval + slack.
type noticeWatch struct {
	at        time.Time
	p         *proc // the -once
	ver       int
	rotatedAt time.Time
	// skews are the hosts' clock offsets at the completion: a daemon
	// reads the record soon after, on the clock it had then, not on the
	// one it has when the check runs (seed 11936: a jump of 27h after
	// the read made the check compute the wrong "taken as now").
	skews map[*host]time.Duration
}

// simRereadBound is how soon a daemon reads the record again after p's
// change: reread_interval with the change marker, ten times it without
// (the idle daemon's periodic read), or when p's bump of the marker
// failed (best effort: Vault refused it).
func (w *World) simRereadBound(p *proc) time.Duration {
	if w.cases["marker"] && !p.bumpFailed {
		return simReread
	}
	return 10 * simReread
}

// simNoticeSlack covers, on top of the re-read bound, a lease an operator
// process holds when killed, the operator's lease edits (up to 2m) and
// retries with backoff up to retry_max.
const simNoticeSlack = simLease + 2*time.Minute + 2*simRetryMax

// checkOperator runs the checks on operator actions and on the change
// marker after a step: [reread] (a reopened grace ends in time; a stable
// daemon notices a -once's rotation), [operator] (an -extend-grace that
// landed in the gap is honoured by Affix).
func (w *World) checkOperator(now time.Time, d map[string]any) {
	if r := w.reaccept; r != nil {
		switch {
		case d == nil || simPhase(d) != "overlap" || str(d, "rotation_id") != r.rid:
			w.reaccept = nil
			w.event("reaccept-grace-ended", "after ", now.Sub(r.at).Round(time.Second), " (D ", r.d, ")")
		case str(d, "grace_until") != r.graceUntil:
			w.reaccept = nil // moved by another action or by hand: another bound
			w.event("reaccept-grace-moved")
		default:
			// The daemon drops when its clock passes grace_until + margin
			// (not its own write): in true time grace_until - opsSkew +
			// margin - its skew; the spread of the hosts' clocks bounds
			// the last term.
			end := tm(d, "grace_until").Add(-r.opsSkew + w.margin + w.skewSpread())
			for _, p := range w.live() {
				if p.kind != "daemon" || p.pauseUntil.After(now) {
					continue
				}
				from := laterOf(laterOf(r.at, p.started), laterOf(p.pausedAt, w.lastBlocked))
				if due := laterOf(from, end).Add(w.simRereadBound(r.p) + simNoticeSlack); now.After(due) {
					w.violate("reread", "%s's -reaccept-previous %s (landed at %s, grace_until %s by its clock) is still in overlap at %s: %s, live, unpaused and unhindered since %s, should have ended it by %s (D + re-read bound %s + clock_skew_margin + clock spread + slack %s)",
						r.p, r.d, w.since(r.at), r.graceUntil, w.since(now), p, w.since(from), w.since(due), w.simRereadBound(r.p), simNoticeSlack)
					return
				}
			}
		}
	}
	if e := w.extended; e != nil {
		switch {
		case d == nil || simPhase(d) != "overlap" || str(d, "rotation_id") != e.rid || str(d, "grace_until") != e.graceUntil:
			w.extended = nil
			if e.checked {
				w.event("extend-in-the-gap-honoured")
			} else {
				w.event("extend-in-the-gap-over-unchecked")
			}
		case e.p.exited && !e.p.killed && e.p.err == nil && now.Before(tm(d, "grace_until").Add(-e.opsSkew-w.skewSpread()-time.Second)):
			e.checked = true
			acc := w.fake.Secrets(w.key)
			for _, s := range []string{e.cur, e.prev} {
				if slices.Contains(acc, s) {
					continue
				}
				if r := w.roots["drop:"+s]; r != nil && (r.stale || r.jumped) && r.at.After(e.at) {
					// A stale request landed after it (the drift bound covers
					// it), or one sent by a clock jumped ahead beyond the
					// margin, which ends any grace early (seed 2988).
					continue
				}
				w.violate("operator", "%s extended the grace in the gap of two failed writes (landed at %s, until %s by its clock) and returned success, but Affix accepts %v, not [current %s, previous %s]",
					e.p, w.since(e.at), e.graceUntil, w.labelsOf(acc), w.label(e.cur), w.label(e.prev))
				return
			}
		}
	}
	var keep []*noticeWatch
	for _, n := range w.notices {
		_, v, _ := w.store.Latest(simPath)
		if v != n.ver || now.Before(n.at.Add(w.simRereadBound(n.p)+simNoticeSlack)) {
			if v == n.ver {
				keep = append(keep, n)
			}
			continue
		}
		for _, p := range w.live() {
			if p.kind != "daemon" || p.pauseUntil.After(now) || !p.started.Before(n.at) || p.pausedAt.After(n.at) || w.lastBlocked.After(n.at) {
				continue
			}
			// A rotated_at beyond its clock + margin is taken as now
			// (the time of its read, after the completion).
			want := n.rotatedAt
			if skew, now := n.skews[p.host], time.Duration(p.host.skew.Load()); skew != now {
				// Its clock moved since the completion: the time it took
				// as now lies anywhere between the two readings.
				want = earlierOf(want, n.at.Add(min(skew, now)))
			}
			if pat := n.at.Add(n.skews[p.host]); n.rotatedAt.After(pat.Add(w.margin)) {
				want = earlierOf(want, pat)
			}
			// A daemon whose watcher took its first reading of the marker
			// after the -once's bump, while its loop had read the record
			// before the staging, misses that move (a startup race in the
			// product: Serve starts the watcher beside the loops): known,
			// class reread-startup.
			class := "reread"
			if p.markerBase.IsZero() || !p.markerBase.Before(n.p.bumpAt) {
				class = "reread-startup"
			}
			if got := p.gauge("affix_rotator_last_success_timestamp_seconds", prometheus.Labels{"client": "sim"}); got < float64(want.Unix()) {
				w.violate(class, "a -once completed a rotation at %s (rotated_at %s); %s, stable, live and unpaused since before it, still shows last_success_timestamp_seconds %v at %s (want it within %s (reread_interval, or 10 times it if the -once's marker bump failed) + slack %s)",
					w.since(n.at), n.rotatedAt.Format(time.RFC3339), p, got, w.since(now), w.simRereadBound(n.p), simNoticeSlack)
				return
			}
		}
		w.event("daemon-noticed-once-rotation")
	}
	w.notices = keep
}

// blocked reports whether repair or progress is impossible now for reasons
// outside the rotator: Affix refusing the key, Vault down, the record
// deleted, an account-wide 429 floor.
func (w *World) blocked(now time.Time) bool {
	return now.Before(w.affix401Until) || now.Before(w.vaultDownUntil) || w.deleted() || now.Before(w.floorUntil) || now.Before(w.taintUntil)
}

// check runs the invariants after a step (or after time passed): I1, I2
// with bounded drift, the schedule's anchor, the final liveness bound.
// cause names the step. An I1/I2 violation may begin only from a stale
// landing: the one that last dropped Vault's current secret from Affix
// (I1), or last added the secret Vault does not hold (I2), must have been
// stale (or Affix's own doing), however many steps later the record moved
// so that the violation shows; anything else is a bug at once.
func (w *World) check(now time.Time, cause string) {
	if w.viol != nil {
		return
	}
	if w.blocked(now) {
		w.lastBlocked = now
	}
	d, _, deleted := w.store.Latest(simPath)
	if deleted || d == nil {
		w.checkOperator(now, nil)
		return // consumers see no record; I1/I2 resume at the rollback
	}
	if w.checkOperator(now, d); w.viol != nil {
		return
	}
	// I1 and I2.
	acc := w.fake.Secrets(w.key)
	cur := str(d, "client_secret")
	var bad, fresh []string
	blame := func(msg, key string) {
		bad = append(bad, msg)
		if r := w.roots[key]; r == nil || !r.stale {
			how := "never by a request"
			if r != nil {
				how = "last at " + w.since(r.at) + " by " + r.cause
			}
			verb := map[bool]string{true: "added", false: "dropped"}[strings.HasPrefix(key, "add:")]
			fresh = append(fresh, msg+" ("+verb+" "+how+")")
		}
	}
	if !slices.Contains(acc, cur) {
		blame("I1: Vault's client_secret "+w.label(cur)+" is not accepted by Affix", "drop:"+cur)
	}
	for _, a := range acc {
		if a != cur && a != str(d, "previous_client_secret") && a != str(d, "pending_client_secret") {
			blame("I2: Affix accepts "+w.label(a)+", which the record does not hold", "add:"+a)
		}
	}
	state := fmt.Sprintf("(phase %s, Affix accepts %v)", simPhase(d), w.labelsOf(acc))
	switch {
	case len(bad) == 0 && w.driftOpen:
		w.driftOpen = false
		w.event("drift-repaired", "after ", now.Sub(w.driftSince).Round(time.Second))
	case len(bad) > 0 && !w.driftOpen:
		if len(fresh) > 0 {
			w.violate("fresh", "%s %s, shown by %s; no stale request began it", strings.Join(fresh, "; "), state, cause)
			return
		}
		w.driftOpen, w.driftSince, w.driftCause = true, now, cause
		w.event("drift-began", strings.Join(bad, "; "))
	case len(bad) > 0:
		// Some daemon has been live, unpaused and unhindered for the
		// whole bound since the drift began.
		for _, p := range w.live() {
			from := laterOf(laterOf(w.driftSince, p.started), laterOf(p.pausedAt, w.lastBlocked))
			from = laterOf(from, p.host.changedAt.Add(p.host.backBy))
			if p.kind == "daemon" && !p.pauseUntil.After(now) && now.Sub(from) > simDriftBound {
				w.violate("drift", "%s %s for %s, %s of it with %s live, unpaused and nothing blocking repair (bound %s = reconcile_interval %s + 5m); it began at %s with %s",
					strings.Join(bad, "; "), state, now.Sub(w.driftSince).Round(time.Second), now.Sub(from).Round(time.Second), p, simDriftBound, simReconcile, w.since(w.driftSince), w.driftCause)
				return
			}
		}
	}
	w.checkAnchor(now, d)
	if w.scenario == "restarts" {
		anchor := laterOf(w.lastDone, w.t0.Add(-w.cfg.interval))
		if gap := w.cfg.interval + w.cfg.jitter + w.cfg.grace + simMargin + simAnchorSlack; now.Sub(anchor) > gap {
			w.violate("schedule", "schedule %s with the daemon restarted every 25-35 minutes: no rotation completed since %s (%s ago), want one at least every %s (interval + jitter + grace + margin + %s)",
				w.cfg.spec, w.since(anchor), now.Sub(anchor).Round(time.Second), gap.Round(time.Second), simAnchorSlack)
			return
		}
	}
	if w.final && !w.finalStable {
		if simPhase(d) == "stable" {
			w.finalStable = true
			w.event("final-in-flight-completed")
		} else if now.After(w.finalDue) {
			w.violate("final", "liveness: the rotation in flight at the end of the faults (phase %s) did not complete by %s (see simFinalSlack: %s); phase now %s",
				w.finalFrom, w.since(w.finalDue), simFinalSlack, simPhase(d))
		}
	}
}

// checkAnchor: a stable client is due at schedule.Next(rotated_at) (or
// rotated_at + max_age), plus jitter; a record without rotated_at is
// anchored at the daemon's start. A daemon live and unpaused for
// simAnchorSlack past that, with nothing blocking, must have started.
func (w *World) checkAnchor(now time.Time, d map[string]any) {
	if simPhase(d) != "stable" {
		// In flight, or a grace an operator reopened (-reaccept-previous):
		// no new rotation may start before the record is stable again.
		w.notStableAt = now
		return
	}
	if now.Sub(w.lastBlocked) < simAnchorSlack || now.Sub(w.notStableAt) < simAnchorSlack {
		return
	}
	ra := tm(d, "rotated_at")
	for _, p := range w.live() {
		if p.kind != "daemon" || p.pauseUntil.After(now) || now.Sub(p.pausedAt) < simAnchorSlack {
			continue
		}
		// The daemon sleeps on timers, which run on true time: a clock
		// that jumped forward meanwhile does not wake it earlier (jump
		// left out).
		skew := time.Duration(p.host.skew.Load() - p.host.jump.Load())
		pnow := now.Add(skew)
		anchor := ra
		if anchor.IsZero() {
			// Seeded by hand: seeded_at, else the created_time of the
			// version (rotator.SeedAnchor), never later than the start,
			// as its clock read the start (seed 14042: a daemon started
			// on a clock 26 minutes ahead anchors 26 minutes late; it
			// cannot know).
			anchor = p.started.Add(p.startSkew)
			if rec, _, err := w.store.Read(context.Background(), simPath); err == nil {
				if sa := rotator.SeedAnchor(rec); !sa.IsZero() && sa.Before(anchor) {
					anchor = sa
				}
			}
		}
		due := w.cfg.sched.Next(anchor)
		if w.cfg.maxAge > 0 && !ra.IsZero() && ra.Add(w.cfg.maxAge).Before(due) {
			due = ra.Add(w.cfg.maxAge)
		}
		due = due.Add(w.cfg.jitter)
		startP := p.started.Add(skew)
		if pnow.After(laterOf(due, startP).Add(simAnchorSlack)) {
			w.violate("anchor", "schedule %s: the record is stable since rotated_at %s, due by %s (jitter %s), yet %s, live since %s, has not started a rotation %s later (the schedule must be anchored on rotated_at, not on the process's start)",
				w.cfg.spec, fmtT(w, ra), w.since(due.Add(-time.Duration(p.host.skew.Load()))), w.cfg.jitter.Round(time.Second), p, w.since(p.started), simAnchorSlack)
			return
		}
	}
}

func fmtT(w *World, t time.Time) string {
	if t.IsZero() {
		return "(none)"
	}
	return w.since(t)
}

// checkExit: a process returned on its own (or after a clean stop).
func (w *World) checkExit(p *proc, now time.Time) {
	if p.stopping {
		d, _, deleted := w.store.Latest(simPath)
		if deleted || simPhase(d) == "stable" || str(d, "lease_owner") != p.id || w.leaseBy != p.pid {
			return
		}
		if !now.Add(time.Duration(p.host.skew.Load())).Before(tm(d, "lease_until")) {
			return
		}
		for _, q := range w.live() {
			if q.id == p.id {
				return // a namesake still holds it legitimately
			}
		}
		if !p.wroteAfterStop {
			w.violate("lease", "%s stopped cleanly (ctx cancelled) holding the lease of phase %s until %s and did not release it: another process waits for the lease to run out instead of proceeding at once",
				p, simPhase(d), w.since(tm(d, "lease_until").Add(-time.Duration(p.host.skew.Load()))))
		}
		return
	}
	if p.kind == "action" && p.action == rotator.ActionReacceptPrevious && p.err != nil && strings.Contains(p.err.Error(), "not in the record's version history") {
		// Refused (history pruned, deleted or destroyed): nothing changed.
		w.event("reaccept-refused-history-gone", p)
		if p.landedAny || p.postedAny {
			w.violate("operator", "%s refused -reaccept-previous (%v) but wrote the record (%v) or had an Affix request applied (%v): a refusal must change nothing", p, p.err, p.landedAny, p.postedAny)
		}
	}
	if p.kind != "once" {
		return
	}
	w.event("once-exit-"+p.out.Result, p, " byOther=", p.out.ByOther)
	if p.incident > 0 && p.out.Result == rotator.ResultSuccess && p.leaked != "" && slices.Contains(w.fake.Secrets(w.key), p.leaked) {
		// ... nor while Affix still accepts it, unless the operator took
		// it back (-reaccept-previous) or a stale request re-added it
		// (the drift bound covers that).
		d, _, _ := w.store.Latest(simPath)
		if r := w.roots["add:"+p.leaked]; str(d, "previous_client_secret") != p.leaked && (r == nil || !r.stale) {
			w.violate("incident", "%s (-once -grace %s) reported success while Affix still accepts the leaked secret %s (record phase %s)", p, p.incident, w.label(p.leaked), simPhase(d))
		}
	}
	if p.incident == 0 && p.out.Result == rotator.ResultSuccess && p.firstSkew == p.host.initial && p.host.jump.Load() == 0 {
		// A plain -once on a host whose clock is right is satisfied only
		// by a rotation staged after it started, give or take the hosts'
		// skew within the margin: never by one a clock running ahead
		// stamped with a staged_at in the future.
		// Only a staged_at beyond the -once's clock + margin when it first
		// read the rotation can tell it apart from one staged after the
		// -once started (seed 3386: Vault down for its first 12 minutes,
		// it first read a staged_at 17 minutes ahead of true time but
		// already past by its clock: no process can know).
		tellable := p.firstStage.After(p.firstAt.Add(p.firstSkew + w.margin))
		if st, ok := w.stagedTrue[p.out.RotationID]; ok && tellable && st.Before(p.started.Add(-w.margin-2*simMaxSkew)) {
			w.violate("once-future", "%s (plain -once, started at %s) reported success for rotation %s, staged at %s in true time (first read: phase %s, staged_at %s): a -once must not be satisfied by an older rotation whose staged_at a clock running ahead wrote",
				p, w.since(p.started), p.out.RotationID, w.since(st), p.firstPhase, p.firstStage.Format(time.RFC3339))
		}
	}
	if p.incident > 0 && p.out.Result == rotator.ResultSuccess && p.leaked != "" {
		// The leaked-secret command never reports success while the secret
		// current when it started is still current.
		if d, _, deleted := w.store.Latest(simPath); !deleted && str(d, "client_secret") == p.leaked {
			w.violate("incident", "%s (-once -grace %s) reported success while the secret current when it started (%s) is still current", p, p.incident, w.label(p.leaked))
		}
	}
	// A run that gave up while Vault stayed unavailable never saw the
	// record again: it cannot know its write landed, and says it failed.
	blind := p.out.Result == rotator.ResultFailed && (errors.Is(p.err, vault.ErrUnavailable) || errors.Is(p.err, vault.ErrNotFound))
	if p.finalLanded && !w.othersWrote(p, p.finalVer) && !blind {
		if p.out.Result != rotator.ResultSuccess || p.out.ByOther {
			w.violate("lost-answer", "%s landed the final write itself (its answer lost: %v) but reported result %q byOther=%v (err %v): a write applied with its answer lost must be recognised as this process's own",
				p, p.lostFinal, p.out.Result, p.out.ByOther, p.err)
			return
		}
		if n := p.counter("affix_rotator_rotations_total", prometheus.Labels{"client": "sim", "result": rotator.ResultSuccess}); n < 1 {
			w.violate("lost-answer", "%s completed the rotation (its final write's answer lost: %v) but rotations_total{result=success} is %v", p, p.lostFinal, n)
		}
	}
	if p.abortLanded && !w.othersWrote(p, p.abortVer) && !blind && p.out.Result != rotator.ResultAborted {
		w.violate("lost-answer", "%s landed an abort (its answer lost: %v) but reported result %q (err %v)", p, p.lostAbort, p.out.Result, p.err)
	}
}

// checkFutureCounted: a process that read, three times or more, a record
// version whose rotated_at, staged_at or seeded_at lay beyond its now +
// clock_skew_margin has counted it in record_future_times_total
// (docs/design.md, "Clock sanity").
func (w *World) checkFutureCounted(p *proc) {
	if p.futureRead < 3 {
		return
	}
	var n float64
	for _, f := range []string{"rotated_at", "staged_at", "seeded_at"} {
		n += p.counter("affix_rotator_record_future_times_total", prometheus.Labels{"client": "sim", "field": f})
	}
	if n == 0 {
		w.violate("future-count", "%s read a record with a time beyond its clock + clock_skew_margin %d times, but record_future_times_total is 0", p, p.futureRead)
	}
	w.event("future-time-counted")
}

// gauge reads one series of a gauge vector, like counter.
func (p *proc) gauge(name string, labels prometheus.Labels) float64 {
	gv, ok := p.metrics.byName[name].(*prometheus.GaugeVec)
	if !ok {
		return 0
	}
	return testutil.ToFloat64(gv.With(labels))
}

// checkRequest: every secret in an Affix request was written to Vault
// before (pending_client_secret precedes the first request that carries
// it); a request of one secret never recorded is a bootstrap, which only
// an operator's one-shot run with bootstrap on may do, and none here is
// one (after a metadata delete the path looks brand-new: daemons and
// -once runs must fail loudly).
func (w *World) checkRequest(c *call) {
	secrets := bodySecrets(c.body)
	for _, s := range secrets {
		if w.recorded[s] {
			continue
		}
		what := "a request carrying a secret never written to Vault"
		if len(secrets) == 1 {
			what = "[new] alone (a bootstrap: Affix drops whatever it accepts)"
		}
		w.violate("bootstrap", "%s sent %s %v (metadata deleted: %v); only an operator's one-shot bootstrap may", c.p, what, w.labelsOf(secrets), w.metaDeleted)
		return
	}
}

// counter reads one series of a counter vector the process's rotator
// registered (testutil.ToFloat64); 0 if the vector is unknown.
func (p *proc) counter(name string, labels prometheus.Labels) float64 {
	cv, ok := p.metrics.byName[name].(*prometheus.CounterVec)
	if !ok {
		return 0
	}
	return testutil.ToFloat64(cv.With(labels))
}

// describe summarises the seed's configuration for a failure message.

// claimLive reports whether p holds a live reconcile claim at t (its
// clock reading): one it wrote, whose until is after t.
func (w *World) claimLive(p *proc, t time.Time) bool {
	for owner, until := range w.claims {
		if strings.HasPrefix(owner, p.id+"/") && t.Before(until) {
			return true
		}
	}
	return false
}

func earlierOf(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
