package simworld

import (
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
	// I4: one pending secret per rotation; none generated while one is in flight.
	if pend := str(after, "pending_client_secret"); pend != "" {
		if old, ok := w.pendingOf[rid]; ok && old != pend {
			w.violate("fork", "I4: rotation %s got a second pending secret %s (had %s), written by %s", rid, w.label(pend), w.label(old), p)
		}
		if pend != str(before, "pending_client_secret") {
			w.label(pend)
			if bp == "staged" || bp == "overlap" {
				w.violate("fork", "I4/I6: %s generated a new secret %s while phase %s of rotation %s was in flight", p, w.label(pend), bp, str(before, "rotation_id"))
			}
			if p.kind == "once" && p.abortLanded && !w.othersWrote(p, p.abortVer) {
				w.violate("lost-answer", "%s staged a new secret %s after its own abort had landed in Vault (the abort's answer was lost: %v); a -once run must end aborted, not rotate again", p, w.label(pend), p.lostAbort)
			}
			w.event("staged", w.label(pend), " by ", p)
		}
		w.pendingOf[rid] = pend
	}
	switch {
	case bp == "staged" && ap == "overlap":
		skew := time.Duration(p.host.skew.Load())
		from := tm(after, "grace_until").Add(-w.graceOf(after) - p.host.initial)
		w.overlapAt[rid] = overlapInfo{at: now, id: p.id, pid: p.pid, skew: skew, late: now.Sub(from), lost: lost}
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
	}
}

// execPost applies (or not) an Affix request, maybe with a fault, and
// returns the step's cause for a failure message (see landed).
// or whether, it lands (the design's drift bound covers it).
func (w *World) landed(c *call, p *proc, outOfBand, late bool) string {
	r := w.lastReq
	if !r.Applied {
		return fmt.Sprintf("request by %s not applied (%d)", p, r.Status)
	}
	now := time.Now()
	cur, _, deleted := w.store.Latest(simPath)
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
		if str(cur, "lease_owner") != p.id || !skewAt.Before(tm(cur, "lease_until")) {
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
	rt := &root{at: now, cause: cause, stale: stale}
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
			reopened := strings.Contains(c.basis.str("last_action"), `"action":"reaccept-previous"`) && strings.Contains(c.basis.str("last_action"), rid)
			if !ov.at.IsZero() && !endGrace && !reopened {
				// The process that made the new secret current knows when
				// its write returned (the rotator tolerates 1s); another
				// cannot know how late that write landed, nor beat a
				// clock skew beyond the margin.
				grace := w.graceOf(c.basis.data)
				allow := grace - time.Second
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

// blocked reports whether repair or progress is impossible now for reasons
// outside the rotator: Affix refusing the key, Vault down, the record
// deleted, an account-wide 429 floor.
func (w *World) blocked(now time.Time) bool {
	return now.Before(w.affix401Until) || now.Before(w.vaultDownUntil) || w.deleted() || now.Before(w.floorUntil)
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
		return // consumers see no record; I1/I2 resume at the rollback
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
		pnow := now.Add(time.Duration(p.host.skew.Load()))
		anchor := ra
		if anchor.IsZero() {
			anchor = p.started.Add(time.Duration(p.host.skew.Load()))
		}
		due := w.cfg.sched.Next(anchor)
		if w.cfg.maxAge > 0 && !ra.IsZero() && ra.Add(w.cfg.maxAge).Before(due) {
			due = ra.Add(w.cfg.maxAge)
		}
		due = due.Add(w.cfg.jitter)
		startP := p.started.Add(time.Duration(p.host.skew.Load()))
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
	if p.kind != "once" {
		return
	}
	w.event("once-exit-"+p.out.Result, p, " byOther=", p.out.ByOther)
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
