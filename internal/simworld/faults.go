package simworld

import (
	"fmt"
	"strings"
	"testing/synctest"
	"time"
)

// --- chaos ---

// chaos applies one random fault event and schedules the next.
func (w *World) chaos() {
	if !w.faulty {
		return
	}
	now := time.Now()
	defer w.at(now.Add(w.dur(time.Minute, 15*time.Minute)), "chaos", w.chaos)
	live := w.live()
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
		h.skew.Add(-int64(w.dur(time.Second, time.Minute)))
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
	_, _, del := w.store.Latest(simPath)
	return del
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
		if e.name == "late-landing" || e.name == "rollback" {
			e.fn()
		} else {
			rest = append(rest, e)
		}
	}
	w.queue = rest
	w.affix401Until, w.vaultDownUntil = time.Time{}, time.Time{}
	w.final = true
	w.finalAt = now
	d, _, _ := w.store.Latest(simPath)
	w.finalFrom = simPhase(d)
	// A 429's floor from before the calm still holds; a staged rotation
	// still has its whole grace ahead.
	due := laterOf(now, w.floorUntil)
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
