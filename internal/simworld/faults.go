package simworld

import (
	"fmt"
	"slices"
	"strings"
	"testing/synctest"
	"time"

	"github.com/affix-rotator/affix-rotator/rotator"
)

// --- chaos ---

// chaos applies one random fault event and schedules the next.
func (w *World) chaos() {
	if !w.faulty {
		return
	}
	now := time.Now()
	defer w.at(now.Add(w.dur(time.Minute, 15*time.Minute)), "chaos", w.chaos)
	live := w.live() // before the added cases start processes: a new one runs until the next step
	w.chaosExtra(now)
	pick := func() *proc {
		if len(live) == 0 {
			return nil
		}
		return live[w.rng.IntN(len(live))]
	}
	switch k := w.rng.IntN(20); {
	case k < 4: // SIGKILL, restarted later by its supervisor
		if p := pick(); p != nil {
			w.kill(p, "sigkill")
			w.supervise(p, now)
		}
	case k < 6: // SIGTERM
		if p := pick(); p != nil {
			w.stop(p)
			w.supervise(p, now)
		}
	case k < 7: // another daemon, maybe with an instance id already running
		w.startProc("daemon", []string{"pod-a", "pod-b"}[w.rng.IntN(2)])
	case k < 9:
		if w.rng.IntN(3) == 0 {
			w.startAction()
		} else {
			w.startProc("once", "")
		}
	case k < 11:
		if p := pick(); p != nil {
			w.pause(p, now, "process")
		}
	case k < 12:
		w.operatorEdit("grace_until moved later", func(d map[string]any) bool {
			if simPhase(d) != "overlap" {
				return false
			}
			d["grace_until"] = tm(d, "grace_until").Add(w.dur(time.Minute, 20*time.Minute)).UTC().Format(time.RFC3339Nano)
			return true
		})
	case k < 13:
		w.operatorDelete(now)
	case k < 14:
		w.operatorEdit("lease edited", func(d map[string]any) bool {
			if simPhase(d) == "stable" {
				return false
			}
			switch w.rng.IntN(3) {
			case 0:
				delete(d, "lease_owner")
				delete(d, "lease_until")
			case 1:
				d["lease_until"] = now.Add(-time.Second).UTC().Format(time.RFC3339Nano)
			default:
				d["lease_until"] = now.Add(w.dur(0, 2*time.Minute)).UTC().Format(time.RFC3339Nano)
			}
			return true
		})
	case k < 15:
		w.operatorEdit("annotation added", func(d map[string]any) bool {
			d["owner_team"] = fmt.Sprintf("team-%d", w.rng.IntN(10))
			return true
		})
	case k < 16: // the API key stops working until an operator fixes it
		d := w.dur(5*time.Minute, time.Hour)
		w.affix401Until = now.Add(d)
		w.event("affix-401-outage", "for ", d.Round(time.Second))
	case k < 17:
		d := w.dur(time.Minute, 15*time.Minute)
		w.vaultDownUntil = now.Add(d)
		w.event("vault-outage", "for ", d.Round(time.Second))
	case k < 18: // a host's wall clock steps back (NTP)
		h := w.hosts[[]string{"pod-a", "pod-b", "ops"}[w.rng.IntN(3)]]
		back := w.dur(time.Second, time.Minute)
		h.skew.Add(-int64(back))
		h.changedAt, h.backBy = time.Now(), back
		w.event("clock-steps-back", h.name)
	default: // a burst: several processes at once
		w.startProc("once", "")
		if p := pick(); p != nil {
			w.kill(p, "sigkill")
			w.supervise(p, now)
		}
	}
	w.check(time.Now(), "chaos")
}

// restartLoop (scenario "restarts") stops pod-a (SIGKILL or SIGTERM) every
// 25-35 minutes and starts it again up to two minutes later.
func (w *World) restartLoop() {
	if w.final {
		return
	}
	now := time.Now()
	for _, p := range w.live() {
		if w.rng.IntN(2) == 0 {
			w.kill(p, "sigkill")
		} else {
			w.stop(p)
		}
	}
	w.at(now.Add(w.dur(5*time.Second, 2*time.Minute)), "restart", func() {
		if !w.final {
			w.startProc("daemon", "pod-a")
		}
	})
	w.at(now.Add(w.dur(25*time.Minute, 35*time.Minute)), "restart", w.restartLoop)
	w.check(time.Now(), "restart")
}

// supervise restarts a stopped daemon after a while, as systemd or
// Kubernetes would, if no other daemon with its id is running.
func (w *World) supervise(p *proc, now time.Time) {
	if p.kind != "daemon" {
		return
	}
	id := p.id
	w.at(now.Add(w.dur(5*time.Second, 10*time.Minute)), "restart", func() {
		if !w.faulty {
			return
		}
		for _, q := range w.live() {
			if q.id == id && q.kind == "daemon" {
				return
			}
		}
		w.startProc("daemon", id)
	})
}

// operatorEdit is `vault kv patch` (check-and-set on the version read).
func (w *World) operatorEdit(what string, mutate func(map[string]any) bool) {
	d, v, deleted := w.store.Latest(simPath)
	if d == nil || deleted || !mutate(d) {
		return
	}
	if _, err := w.store.Put(simPath, d, v); err != nil {
		panic(err)
	}
	if what == "lease edited" {
		w.leaseBy = 0
		w.exemptFloors(nil)
	}
	w.event("operator-" + strings.ReplaceAll(what, " ", "-"))
	w.check(time.Now(), "operator: "+what)
}

// operatorDelete is `vault kv delete` (a soft delete of the latest
// version), undone some minutes later with `vault kv rollback` unless the
// record was written again meanwhile.
func (w *World) operatorDelete(now time.Time) {
	d, v, deleted := w.store.Latest(simPath)
	if d == nil || deleted {
		return
	}
	w.store.Delete(simPath)
	w.deletedData[v] = d
	// A run that held the lease fails on the deleted record and ends;
	// the lease a rollback brings back is the operator's doing, which no
	// process knows it holds until it reads the record again.
	w.leaseBy = 0
	w.event("operator-vault-kv-delete")
	w.at(now.Add(w.dur(time.Minute, 20*time.Minute)), "rollback", func() { w.rollback(v, d) })
}

// rollback restores data deleted at version v, if that version is still
// the latest and deleted.
func (w *World) rollback(v int, data map[string]any) {
	if _, cur, del := w.store.Latest(simPath); del && cur == v {
		if _, err := w.store.Put(simPath, data, v); err != nil {
			panic(err)
		}
		w.event("operator-vault-kv-rollback")
	}
	w.check(time.Now(), "operator: rollback")
}

// deleted reports whether the record's latest version is deleted.
func (w *World) deleted() bool {
	d, _, del := w.store.Latest(simPath)
	return del || d == nil // nil: the metadata was deleted
}

// calm ends the faulty period: every process is killed, late requests
// land, outages end, and one healthy daemon runs alone.
func (w *World) calm() {
	now := time.Now()
	w.faulty = false
	for _, p := range w.procs {
		w.kill(p, "")
		p.pauseUntil = time.Time{}
	}
	w.event("calm", "faults stop; every process killed")
	// Late requests land now, and the operator undoes a deletion.
	var rest []*simEvent
	for _, e := range w.queue {
		if e.name == "late-landing" || e.name == "rollback" || e.name == "reseed" || e.name == "clock-back" {
			e.fn()
		} else {
			rest = append(rest, e)
		}
	}
	w.queue = rest
	for _, h := range []string{"pod-a", "pod-b", "ops"} { // every clock is set right
		w.clockBack(w.hosts[h])
	}
	w.affix401Until, w.vaultDownUntil = time.Time{}, time.Time{}
	w.final = true
	w.finalAt = now
	d, _, _ := w.store.Latest(simPath)
	w.finalFrom = simPhase(d)
	// A 429's floor from before the calm still holds; a staged rotation
	// still has its whole grace ahead.
	// So do the times a clock that had jumped ahead wrote (taintUntil).
	due := laterOf(laterOf(now, w.floorUntil), w.taintUntil)
	switch w.finalFrom {
	case "overlap":
		due = laterOf(due, tm(d, "grace_until").Add(simMargin))
	case "staged":
		due = due.Add(simLease + w.cfg.grace + simMargin)
	}
	w.finalDue = due.Add(simLease + simFinalSlack)
	w.finalStable = w.finalFrom == "stable"
	w.endAt = laterOf(w.finalDue, now.Add(simDriftBound+5*time.Minute))
	w.check(time.Now(), "calm")
	if w.viol == nil {
		synctest.Wait()
		w.reap(time.Now())
		w.startProc("daemon", "pod-a")
	}
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// --- the cases added to the chaos (each played on some seeds) ---

// pickCases chooses, from the world's second random stream (so that the
// original faults keep their stream), which of the added cases this seed
// plays; each shows in the run's event counts as case-<name>:
//   - marker: processes get the world's change marker (rotator.Options.Changes),
//     as the CLI gives them Vault's; without it a daemon notices an
//     operator's change at its periodic re-read only;
//   - max-versions: the path keeps 10 versions (vault kv metadata put
//     -max-versions=10), and the operator sometimes edits the record ten
//     times and then runs -reaccept-previous (pruneThenReaccept);
//   - metadata-delete: the operator deletes the path's metadata (it looks
//     never used) and seeds it again later (metadataDelete);
//   - clock-jump: a host's clock jumps forward beyond the margin, minutes
//     to days, for a while (clockJump);
//   - gap: a run that dropped the previous secret fails its next Vault
//     writes while an operator's -extend-grace lands (execWrite);
//   - incident-takeover: a leaked-secret -once runs during an overlap, is
//     paused past its lease (a daemon takes it over) or killed and run
//     again by the operator (incidentTakeover).
func (w *World) pickCases() {
	if w.scenario != ScenarioChaos {
		return
	}
	for _, c := range []struct {
		name string
		in   int // played on 1 seed in in
	}{{"marker", 1}, {"max-versions", 3}, {"metadata-delete", 4}, {"clock-jump", 3}, {"gap", 3}, {"incident-takeover", 3}} {
		if w.xrng.IntN(c.in) == 0 {
			w.cases[c.name] = true
			w.event("case-" + c.name)
		}
	}
	if w.cases["marker"] && w.xrng.IntN(4) == 0 {
		delete(w.cases, "marker") // a quarter of the seeds: no marker (Vault denies it)
		w.events["case-marker"]--
		if w.events["case-marker"] == 0 {
			delete(w.events, "case-marker")
		}
	}
	if w.cases["max-versions"] {
		w.store.SetMaxVersions(simPath, 10)
	}
	w.gapArmed = w.cases["gap"]
}

// chaosExtra plays the added cases, from the second stream, before the
// original chaos draws its own fault.
func (w *World) chaosExtra(now time.Time) {
	if w.cases["max-versions"] && w.xrng.IntN(8) == 0 {
		w.pruneThenReaccept()
	}
	if w.cases["metadata-delete"] && !w.metaDeleted && w.xrng.IntN(12) == 0 {
		w.metadataDelete(now)
	}
	if w.cases["clock-jump"] && w.xrng.IntN(8) == 0 {
		w.clockJump(now)
	}
	if w.cases["incident-takeover"] && w.xrng.IntN(6) == 0 {
		w.incidentTakeover(now)
	}
}

// pruneThenReaccept: the operator annotates a stable record ten times
// (each `vault kv patch` a version), which with max_versions 10 prunes the
// overlap version that held the previous secret, then runs
// -reaccept-previous: it must refuse and change nothing (checkExit).
func (w *World) pruneThenReaccept() {
	d, _, deleted := w.store.Latest(simPath)
	if d == nil || deleted || simPhase(d) != "stable" {
		return
	}
	for i := 0; i < 10; i++ {
		d["note"] = fmt.Sprintf("burst-%d-%d", i, w.xrng.IntN(1000))
		if _, err := w.store.Put(simPath, d, -1); err != nil {
			panic(err)
		}
		_, v, _ := w.store.Latest(simPath)
		w.verWriter[v] = 0
	}
	w.event("operator-ten-edits-history-pruned")
	w.nextAction = rotator.ActionReacceptPrevious
	w.event("operator-" + rotator.ActionReacceptPrevious)
	w.startProc("action", "")
	w.check(time.Now(), "operator: ten edits, then -reaccept-previous")
}

// metadataDelete is `vault kv metadata delete`: every version and the
// metadata go, and the path looks never used (version 0, not found). No
// daemon or -once may bootstrap it (oracle: [bootstrap]); some minutes
// later the operator seeds it again, as the runbook says, with the secret
// Affix accepts (the current one it had), cas=0 and no rotated_at.
func (w *World) metadataDelete(now time.Time) {
	d, _, deleted := w.store.Latest(simPath)
	if d == nil || deleted {
		return
	}
	cur := str(d, "client_secret")
	w.store.DeleteMetadata(simPath)
	w.metaDeleted = true
	w.metaEpoch++
	w.verWriter = map[int]int{}
	w.leaseBy = 0
	for _, fl := range w.floors {
		fl.exempt = true // the 429 floors recorded in the record are gone with it
	}
	w.event("operator-vault-kv-metadata-delete", "current was ", w.label(cur))
	w.at(now.Add(w.dur(time.Minute, 30*time.Minute)), "reseed", func() { w.reseed(cur) })
}

// reseed is the runbook's `vault kv put -cas=0 <path> client_secret=-`
// after a metadata delete. An in-flight rotation's new secret that Affix
// may still accept is now unrecorded: the operator's doing, which a
// daemon repairs within the drift bound (its roots are marked stale).
func (w *World) reseed(cur string) {
	if !w.metaDeleted {
		return
	}
	acc := w.fake.Secrets(w.key)
	if !slices.Contains(acc, cur) && len(acc) > 0 {
		cur = acc[0]
	}
	if _, err := w.store.Put(simPath, map[string]any{"client_secret": cur}, 0); err != nil {
		// A process created the record meanwhile ([bootstrap] reported
		// it, unless skipped): the operator finds it there.
		w.metaDeleted = false
		w.event("operator-reseed-refused-record-exists")
		return
	}
	w.metaDeleted = false
	rt := &root{at: time.Now(), cause: "the operator deleted the metadata and seeded the record again", stale: true}
	for _, x := range acc {
		w.roots["add:"+x] = rt
		w.roots["drop:"+x] = rt
	}
	w.roots["drop:"+cur] = rt
	w.event("operator-reseed", w.label(cur))
	w.check(time.Now(), "operator: reseed after a metadata delete")
}

// clockJump: a host's wall clock jumps forward by more than the
// clock_skew_margin (minutes, hours, rarely a day or two), and jumps back
// after a while (or at the calm). The rotator promises (docs/design.md,
// "Clock sanity") that a rotated_at, staged_at or seeded_at later than
// now + margin is not trusted: counted, and taken as now for max_age,
// -once and the alerts. What a jumped host writes otherwise (leases, grace,
// 429 floors) holds the others up until it passes: the liveness bounds
// (drift, anchor, final) wait for those times (taintUntil, set by
// landedWrite); the safety checks (I1, I2, I3) are relaxed only for the
// jumped process's own view, as commented in landed.
func (w *World) clockJump(now time.Time) {
	h := w.hosts[[]string{"pod-a", "pod-b", "ops"}[w.xrng.IntN(3)]]
	if h.jump.Load() != 0 {
		return
	}
	var j time.Duration
	switch k := w.xrng.IntN(10); {
	case k < 6:
		j = w.margin + time.Duration(1+w.xrng.IntN(30))*time.Minute
	case k < 9:
		j = time.Duration(1+w.xrng.IntN(6)) * time.Hour
	default:
		j = time.Duration(24+w.xrng.IntN(25)) * time.Hour
	}
	h.jump.Store(int64(j))
	h.skew.Add(int64(j))
	h.changedAt, h.backBy = time.Now(), 0
	w.event("clock-jumps-forward", h.name, " by ", j)
	if w.xrng.IntN(3) > 0 {
		w.at(now.Add(time.Duration(1+w.xrng.IntN(60))*time.Minute), "clock-back", func() { w.clockBack(h) })
	}
}

// clockBack ends h's jump (NTP corrects it).
func (w *World) clockBack(h *host) {
	j := h.jump.Swap(0)
	if j == 0 {
		return
	}
	h.skew.Add(-j)
	h.changedAt, h.backBy = time.Now(), time.Duration(j)
	w.event("clock-jumps-back", h.name)
	w.check(time.Now(), "clock jumps back")
}

// incidentTakeover: a leaked-secret -once during an overlap (or whatever
// phase), whose run is then taken over: paused past its lease (a daemon
// takes the lease), or killed, after which the operator runs the same
// command again.
func (w *World) incidentTakeover(now time.Time) {
	d, _, deleted := w.store.Latest(simPath)
	if d == nil || deleted || (simPhase(d) != "overlap" && w.xrng.IntN(3) > 0) {
		return
	}
	w.nextIncident = time.Duration(1+w.xrng.IntN(max(1, int(w.cfg.grace/time.Minute)))) * time.Minute
	p := w.startProc("once", "")
	w.event("incident-in-" + simPhase(d))
	after := w.dur(5*time.Second, 3*time.Minute)
	if w.xrng.IntN(2) == 0 {
		w.at(now.Add(after), "incident-pause", func() {
			if w.faulty && !p.exited && !p.killed && !p.pauseUntil.After(time.Now()) {
				p.pauseUntil = time.Now().Add(simLease + w.dur(10*time.Second, 5*time.Minute))
				p.pausedAt = p.pauseUntil
				w.freeze(p)
				w.exemptFloors(p)
				w.event("incident-paused-past-its-lease", p)
			}
		})
		return
	}
	w.at(now.Add(after), "incident-kill", func() {
		if p.exited || p.killed || !w.faulty {
			return
		}
		w.kill(p, "incident-killed")
		grace := p.incident
		w.at(time.Now().Add(w.dur(10*time.Second, 5*time.Minute)), "incident-rerun", func() {
			if !w.faulty {
				return
			}
			w.nextIncident = grace
			w.startProc("once", "")
			w.event("incident-run-again")
		})
	})
}
