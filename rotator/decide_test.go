package rotator

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestDecide pins the step's choice (decide) row by row: the record read,
// its version or the read's error, the time, the policy and what the run
// knows of itself, and the one move that follows. Most rows are the
// situations the fence and simulation tests reach by running processes.
func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	pol := policy{client: "prod", instance: "me", margin: 30 * time.Second, reconcile: time.Hour, reread: 30 * time.Second, follow: 5 * time.Second}
	schedule := known{trig: Trigger{Reason: ReasonSchedule, Time: now}, token: "tok", assertedAt: now}
	once := known{trig: Trigger{Reason: ReasonOnce, Time: now}, token: "tok", assertedAt: now, firstSeen: true, firstID: "r1"}
	leaked := once
	leaked.trig.Grace, leaked.trig.Audit = 30*time.Second, &Audit{By: "alice", Reason: "leaked"}
	stable := func(rotatedAt time.Time) vault.Record {
		return vault.Record{Phase: vault.PhaseStable, RotationID: "r1", RotatedAt: rotatedAt, StagedAt: rotatedAt.Add(-time.Hour)}
	}
	overlap := func(id string, graceUntil time.Time, graceBy string) vault.Record {
		return vault.Record{Phase: vault.PhaseOverlap, RotationID: id, GraceUntil: graceUntil, GraceBy: graceBy, LeaseOwner: "me", LeaseUntil: graceUntil.Add(time.Minute)}
	}
	leasedBy := func(rec vault.Record, owner string, until time.Time) vault.Record {
		rec.LeaseOwner, rec.LeaseUntil = owner, until
		return rec
	}
	with := func(k known, f func(*known)) known { f(&k); return k }
	bootstrap := pol
	bootstrap.bootstrap = true
	mine := with(schedule, func(k *known) { k.graceOwn = k.stamp(now.Add(-time.Second)) })

	rows := []struct {
		name string
		rec  vault.Record
		ver  int
		err  error
		p    policy
		k    known
		want move
		// check, if set, looks at the rest of the choice.
		check func(choice) error
	}{
		{name: "never-used path, bootstrap on, an operator's -once: stage [new] alone", ver: 0, err: vault.ErrNotFound, p: bootstrap, k: once, want: moveBootstrap},
		{name: "never-used path, bootstrap on, the daemon: refuse and name the -once", ver: 0, err: vault.ErrNotFound, p: bootstrap, k: schedule, want: moveFail,
			check: errSays("-once -client prod")},
		{name: "latest version deleted: refuse, never bootstrap", ver: 7, err: vault.ErrNotFound, p: bootstrap, k: once, want: moveFail,
			check: errSays("vault kv undelete -versions=7")},
		{name: "no record, bootstrap off: refuse", ver: 0, err: vault.ErrNotFound, p: pol, k: once, want: moveFail},
		{name: "malformed record: refuse (never overwrite)", err: &vault.MalformedError{Field: "phase"}, p: pol, k: schedule, want: moveFail},
		{name: "vault unavailable: retry", err: vault.ErrUnavailable, p: pol, k: schedule, want: moveRetry},

		{name: "stable, schedule fired after rotated_at: stage", rec: stable(now.Add(-48 * time.Hour)), ver: 3, p: pol, k: schedule, want: moveStage},
		{name: "stable, rotated after the schedule fired (a replica): done, by another", rec: stable(now.Add(time.Second)), ver: 3, p: pol,
			k: with(schedule, func(k *known) { k.trig.Time = now.Add(-time.Minute) }), want: moveDone, check: byOther(true)},
		{name: "stable, start-up without max_age: nothing to do", rec: stable(now.Add(-48 * time.Hour)), ver: 3, p: pol,
			k: with(schedule, func(k *known) { k.trig.Reason = ReasonStartup }), want: moveDone, check: byOther(false)},
		{name: "stable, start-up past max_age: stage", rec: stable(now.Add(-48 * time.Hour)), ver: 3, p: pol,
			k: with(schedule, func(k *known) { k.trig.Reason, k.trig.MaxAge = ReasonStartup, 24*time.Hour }), want: moveStage},
		{name: "stable, rotated_at 10 days ahead (a clock running ahead) is taken as now: a daemon's schedule still fires", rec: stable(now.Add(240 * time.Hour)), ver: 3, p: pol,
			k: with(schedule, func(k *known) { k.trig.Time = now.Add(time.Minute) }), want: moveStage},
		{name: "stable, the reconcile trigger: re-assert [current]", rec: stable(now.Add(-time.Hour)), ver: 3, p: pol,
			k: with(schedule, func(k *known) { k.trig.Reason, k.reassert = ReasonReconcile, ReassertReconcile }), want: moveReassert},
		{name: "-once, the rotation it first saw still current: stage its own", rec: stable(now.Add(-time.Hour)), ver: 3, p: pol, k: once, want: moveStage},
		{name: "-once, a rotation other than the first it saw completed: done, by another", ver: 5, p: pol, k: once, want: moveDone, check: byOther(true),
			rec: func() vault.Record { r := stable(now.Add(-time.Minute)); r.RotationID = "r2"; return r }()},
		{name: "-once, a completed rotation other than the one it first saw: done, by another (whatever its staged_at)", ver: 5, p: pol, k: with(once, func(k *known) { k.firstID = "r0" }), want: moveDone, check: byOther(true),
			rec: func() vault.Record { r := stable(now); r.StagedAt = now.Add(240 * time.Hour); return r }()},
		{name: "-once, a staged_at 10 days ahead (a clock running ahead) does not make the rotation it first saw look new: stage", ver: 5, p: pol, k: with(once, func(k *known) { k.firstID = "r1" }), want: moveStage,
			rec: func() vault.Record { r := stable(now); r.StagedAt = now.Add(240 * time.Hour); return r }()},

		{name: "-once, the rotation it first saw in flight was staged by a clock running ahead: it cannot satisfy it", ver: 5, p: pol, want: moveStage,
			k:   with(once, func(k *known) { k.trig.Time, k.firstAhead = now.Add(-10*time.Minute), true }),
			rec: func() vault.Record { r := stable(now); r.StagedAt = now.Add(-time.Minute); return r }()},
		{name: "staged, leased by this process: confirm", rec: leasedBy(vault.Record{Phase: vault.PhaseStaged, RotationID: "r2"}, "me", now.Add(time.Minute)), ver: 4, p: pol, k: schedule, want: moveConfirm},
		{name: "staged, leased by another: follow, looking again after the follow interval", rec: leasedBy(vault.Record{Phase: vault.PhaseStaged, RotationID: "r2"}, "other", now.Add(time.Minute)), ver: 4, p: pol, k: schedule,
			want: moveFollow, check: waits(5 * time.Second)},
		{name: "staged, leased by another, reconcile overdue: still followed, never stolen", rec: leasedBy(vault.Record{Phase: vault.PhaseStaged, RotationID: "r2"}, "other", now.Add(time.Minute)), ver: 4, p: pol,
			k: with(schedule, func(k *known) { k.assertedAt = now.Add(-2 * time.Hour) }), want: moveFollow},
		{name: "staged, another's lease expired: take it over (confirm)", rec: leasedBy(vault.Record{Phase: vault.PhaseStaged, RotationID: "r2"}, "other", now.Add(-time.Second)), ver: 4, p: pol, k: schedule, want: moveConfirm},
		{name: "staged with a re-assert pending: the rotation first", rec: leasedBy(vault.Record{Phase: vault.PhaseStaged, RotationID: "r2"}, "me", now.Add(time.Minute)), ver: 4, p: pol,
			k: with(schedule, func(k *known) { k.reassert = ReassertStale }), want: moveConfirm},

		{name: "overlap, another's grace: follow until just after grace_until", rec: leasedBy(overlap("r2", now.Add(10*time.Second), "x@y"), "other", now.Add(time.Hour)), ver: 5, p: pol, k: schedule,
			want: moveFollow, check: waits(11 * time.Second)},
		{name: "overlap, another's long grace: look again every reread interval", rec: leasedBy(overlap("r2", now.Add(time.Hour), "x@y"), "other", now.Add(2*time.Hour)), ver: 5, p: pol, k: schedule,
			want: moveFollow, check: waits(30 * time.Second)},
		{name: "overlap, another's grace followed a whole reconcile interval: take its lease and re-assert", rec: leasedBy(overlap("r2", now.Add(time.Hour), "x@y"), "other", now.Add(2*time.Hour)), ver: 5, p: pol,
			k: with(schedule, func(k *known) { k.assertedAt = now.Add(-time.Hour) }), want: moveReassert,
			check: func(c choice) error {
				if !c.steal || c.reassert != ReassertReconcile {
					return fmt.Errorf("steal %v reassert %q, want a stolen reconcile", c.steal, c.reassert)
				}
				return nil
			}},
		{name: "overlap, grace over, written by this run: drop the old secret", rec: overlap("r2", now.Add(-time.Second), mine.graceOwn), ver: 5, p: pol, k: mine, want: moveFinish},
		{name: "overlap, grace over, written by another run: wait the clock-skew margin", rec: overlap("r2", now.Add(-time.Second), "other@x"), ver: 5, p: pol, k: schedule,
			want: moveAwaitGrace, check: dropsAt(now.Add(29 * time.Second))},
		{name: "overlap, grace_until moved since this run wrote it: the margin again", rec: overlap("r2", now.Add(-time.Second), mine.graceOwn), ver: 5, p: pol,
			k: with(mine, func(k *known) { k.graceOwn = "tok@earlier" }), want: moveAwaitGrace},
		{name: "overlap, this run made the new secret current late: move grace_until first", rec: overlap("r2", now.Add(-time.Second), mine.graceOwn), ver: 5, p: pol,
			k: with(mine, func(k *known) { k.lateID = "r2" }), want: moveAwaitGrace},
		{name: "overlap, grace running: wait for it", rec: overlap("r2", now.Add(time.Hour), "x@y"), ver: 5, p: pol, k: schedule, want: moveAwaitGrace},

		{name: "leaked-secret -once facing the grace of the rotation it first saw: end it now", rec: leasedBy(overlap("r1", now.Add(24*time.Hour), "x@y"), "other", now.Add(25*time.Hour)), ver: 5, p: pol, k: leaked, want: moveIncident},
		{name: "leaked-secret -once facing a later rotation's grace within its deadline: keep it", rec: overlap("r2", now.Add(10*time.Second), "x@y"), ver: 5, p: pol,
			k: with(leaked, func(k *known) { k.firstID = "r1" }), want: moveAwaitGrace},
		{name: "leaked-secret -once facing a later rotation's grace past its deadline: end it", rec: overlap("r2", now.Add(time.Hour), "x@y"), ver: 5, p: pol,
			k: with(leaked, func(k *known) { k.firstID = "r1" }), want: moveIncident},
		{name: "a plain -once in a grace: waits for it", rec: overlap("r1", now.Add(24*time.Hour), "x@y"), ver: 5, p: pol, k: once, want: moveAwaitGrace},

		{name: "an action's request confirmed and read back: done", rec: overlap("r2", now.Add(time.Hour), "x@y"), ver: 6, p: pol,
			k: with(schedule, func(k *known) { k.trig.Reason, k.verify = ReasonAction, true }), want: moveDone},
		{name: "an action's request confirmed, but re-assert pending (someone wrote after it): re-assert", rec: overlap("r2", now.Add(time.Hour), "x@y"), ver: 7, p: pol,
			k: with(schedule, func(k *known) { k.trig.Reason, k.verify, k.reassert = ReasonAction, true, ReassertStale }), want: moveReassert},
		{name: "unknown phase: refuse", rec: vault.Record{Phase: "rolling"}, ver: 2, p: pol, k: schedule, want: moveFail, check: errSays(`unknown phase "rolling"`)},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			got := decide(row.rec, row.ver, row.err, now, row.p, row.k)
			if got.move != row.want {
				t.Fatalf("move %s (err %v), want %s", got.move, got.err, row.want)
			}
			if row.check != nil {
				if err := row.check(got); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func errSays(s string) func(choice) error {
	return func(c choice) error {
		if c.err == nil || !strings.Contains(c.err.Error(), s) {
			return fmt.Errorf("error %v, want one saying %q", c.err, s)
		}
		return nil
	}
}

func byOther(want bool) func(choice) error {
	return func(c choice) error {
		if c.outcome.ByOther != want || want && c.outcome.Result != ResultSuccess {
			return fmt.Errorf("outcome %+v, want by another: %v", c.outcome, want)
		}
		return nil
	}
}

func waits(d time.Duration) func(choice) error {
	return func(c choice) error {
		if c.wait != d {
			return fmt.Errorf("waits %s, want %s", c.wait, d)
		}
		return nil
	}
}

func dropsAt(t time.Time) func(choice) error {
	return func(c choice) error {
		if !c.dropAt.Equal(t) {
			return fmt.Errorf("drops at %s, want %s", c.dropAt, t)
		}
		return nil
	}
}

// TestPostGate pins the rule before every request under the lease.
func TestPostGate(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	p := policy{instance: "me", margin: 30 * time.Second, lease: time.Minute, request: 5 * time.Second}
	leased := vault.Record{Phase: vault.PhaseStaged, LeaseOwner: "me", LeaseUntil: now.Add(time.Minute)}
	with := func(f func(*vault.Record)) vault.Record { r := leased; f(&r); return r }
	claims := func(cs ...vault.Claim) vault.Record {
		return with(func(r *vault.Record) { r.Claims = cs })
	}
	claim := func(owner string, until time.Time) vault.Claim { return vault.Claim{Owner: owner, Until: until} }
	rows := []struct {
		name       string
		rec        vault.Record
		mine       int
		checkClaim bool
		wroteAt    time.Time // default: now
		ownFloor   time.Time // this run's 429 floor, not recorded
		ok         bool
		leaseUntil time.Time // a lease write until then
		wait       time.Duration
	}{
		{name: "own lease, own version, time left: send", rec: leased, mine: 4, ok: true},
		{name: "another's expired lease: take it for a whole span", rec: with(func(r *vault.Record) { r.LeaseOwner, r.LeaseUntil = "other", now.Add(-time.Second) }), mine: 4, leaseUntil: now.Add(time.Minute)},
		{name: "own instance id at a version this run did not write (a frozen namesake): write first", rec: leased, mine: 3, leaseUntil: now.Add(time.Minute)},
		{name: "own lease too short for a request: extend it", rec: with(func(r *vault.Record) { r.LeaseUntil = now.Add(20 * time.Second) }), mine: 4, leaseUntil: now.Add(time.Minute)},
		{name: "own long lease (a grace) is never shortened by an extension", rec: with(func(r *vault.Record) { r.LeaseUntil = now.Add(time.Hour) }), mine: 3, leaseUntil: now.Add(time.Hour)},
		{name: "a 429's floor in force: wait it out", rec: with(func(r *vault.Record) { r.RetryNotBefore = now.Add(7 * time.Second) }), mine: 4, wait: 7 * time.Second},
		{name: "another run's live reconcile claim, record moved out of stable by this run: wait until its end plus the margin", rec: claims(claim("pod-b/x", now.Add(10*time.Second))), mine: 4, checkClaim: true, wait: 40 * time.Second},
		{name: "a claim past its end but within the margin: still wait", rec: claims(claim("pod-b/x", now.Add(-10*time.Second))), mine: 4, checkClaim: true, wait: 20 * time.Second},
		{name: "a claim past its end plus the margin: send", rec: claims(claim("pod-b/x", now.Add(-31*time.Second))), mine: 4, checkClaim: true, ok: true},
		{name: "this run's own claim: send", rec: claims(claim("me/tok", now.Add(10*time.Second))), mine: 4, checkClaim: true, ok: true},
		{name: "a claim, where no claim can race (overlap, finishing): send", rec: claims(claim("pod-b/x", now.Add(10*time.Second))), mine: 4, ok: true},
		{name: "two instances' claims, the later written ending earlier (a slow PATCH): wait for the later end", mine: 4, checkClaim: true, wait: 45 * time.Second,
			rec: claims(claim("pod-a/1", now.Add(15*time.Second)), claim("pod-b/2", now.Add(10*time.Second)))},
		{name: "a replica with a longer request timeout: its longer claim counts", mine: 4, checkClaim: true, wait: 90 * time.Second,
			rec: claims(claim("pod-a/1", now.Add(time.Minute)), claim("pod-b/2", now.Add(5*time.Second)))},
		{name: "a claim from a clock a day ahead: waited for at most MaxClaimSpan after this run's write", mine: 4, checkClaim: true, wroteAt: now.Add(-time.Minute),
			rec: claims(claim("pod-b/x", now.Add(24*time.Hour))), wait: vault.MaxClaimSpan - time.Minute + 30*time.Second},
		{name: "a claim from a clock a day ahead, MaxClaimSpan after this run's write: send", mine: 4, checkClaim: true, wroteAt: now.Add(-vault.MaxClaimSpan - 31*time.Second),
			rec: claims(claim("pod-b/x", now.Add(24*time.Hour))), ok: true},
		{name: "this run's own 429 floor, which it could not record: wait it out too", rec: leased, mine: 4, ownFloor: now.Add(9 * time.Second), wait: 9 * time.Second},
		{name: "a garbled claim value holds nothing back", mine: 4, checkClaim: true, rec: claims(vault.ParseClaim("not a claim")), ok: true},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			wroteAt := row.wroteAt
			if wroteAt.IsZero() {
				wroteAt = now
			}
			g := postGate(row.rec, 4, row.mine, now, p, "me/tok", row.checkClaim, wroteAt, row.ownFloor)
			switch {
			case g.ok != row.ok:
				t.Fatalf("ok %v, want %v (%+v)", g.ok, row.ok, g)
			case row.leaseUntil.IsZero() != (g.lease == nil):
				t.Fatalf("lease write %v, want one until %s", g.lease, row.leaseUntil)
			case g.lease != nil && (g.lease.LeaseOwner != "me" || !g.lease.LeaseUntil.Equal(row.leaseUntil)):
				t.Fatalf("lease write %s until %s, want me until %s", g.lease.LeaseOwner, g.lease.LeaseUntil, row.leaseUntil)
			case g.wait != row.wait:
				t.Fatalf("wait %s, want %s (%s)", g.wait, row.wait, g.why)
			}
		})
	}
}

// TestConfirmVerdict pins what the answer to a staging's [new, current]
// leads to: abort only when Affix definitely refused and no request
// carrying the new secret can have been applied.
func TestConfirmVerdict(t *testing.T) {
	rotating := vault.Record{Phase: vault.PhaseStaged, ClientSecret: secret.New("current"), PendingClientSecret: secret.New("new")}
	bootstrap := vault.Record{Phase: vault.PhaseStaged, PendingClientSecret: secret.New("new")}
	unauthorized := &affix.APIError{StatusCode: 401}
	rows := []struct {
		name           string
		err            error
		rec            vault.Record
		mayHaveApplied bool
		shared         bool
		want           verdict
	}{
		{"confirmed", nil, rotating, false, false, verdict{next: answerConfirmed, mayHold: true}},
		{"401, the only request carrying new was this one: abort", unauthorized, rotating, false, false, verdict{next: answerAbort}},
		{"401 after an earlier request that may have landed: keep staged", unauthorized, rotating, true, false, verdict{next: answerKeepStaged}},
		{"422 on a bootstrap: nothing to fall back to, keep staged", &affix.APIError{StatusCode: 422}, bootstrap, false, false, verdict{next: answerKeepStaged}},
		{"Affix kept [current] only: abort", &affix.MismatchError{Sent: 2, Got: 1, Included: []int{1}}, rotating, false, false, verdict{next: answerAbort}},
		{"Affix kept [current] only, but another process wrote the staging since: send again", &affix.MismatchError{Sent: 2, Got: 1, Included: []int{1}}, rotating, false, true, verdict{next: answerRetry, mayHold: true}},
		{"Affix kept [new] only: send again (it holds new)", &affix.MismatchError{Sent: 2, Got: 1, Included: []int{0}}, rotating, false, false, verdict{next: answerRetry, mayHold: true}},
		{"500: may have been applied", &affix.APIError{StatusCode: 500}, rotating, false, false, verdict{next: answerRetry, mayHold: true}},
		{"no answer: may have been applied", errors.New("read tcp: connection reset"), rotating, false, false, verdict{next: answerRetry, mayHold: true}},
		{"429: not applied", &affix.APIError{StatusCode: 429}, rotating, false, false, verdict{next: answerRetry}},
		{"never sent: not applied", fmt.Errorf("%w: dial refused", affix.ErrNotSent), rotating, false, false, verdict{next: answerRetry}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if got := confirmVerdict(row.err, row.rec, row.mayHaveApplied, row.shared); got != row.want {
				t.Fatalf("%+v, want %+v", got, row.want)
			}
		})
	}
}
