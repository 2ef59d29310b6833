package rotator_test

// The old secret is dropped no earlier than grace_until, plus the
// clock-skew margin whenever that grace_until is not this run's own (a
// takeover, a hand-moved grace_until). They run on the in-memory harness
// (memHarness, harness_test.go).

import (
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/rotator"
)

// Item 8: a process that takes over an overlap it did not start drops the
// old secret only after grace_until + ClockSkewMargin: its clock may run
// ahead of the one that wrote grace_until.
func TestFenceV2TakeoverDropAfterSkewMargin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		owner string // lease_owner of the overlap record ("": released)
	}{{"lease released", ""}, {"lease ended at grace_until", "pod-a"}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMemHarness(t)
			n1 := newSecret(t)
			graceUntil := e.start0.Add(10 * time.Second)
			data := map[string]any{"client_secret": n1, "previous_client_secret": e.s0, "phase": "overlap",
				"rotation_id": "started-by-pod-a", "grace_until": graceUntil.Format(time.RFC3339Nano)}
			if tc.owner != "" {
				data["lease_owner"], data["lease_until"] = tc.owner, graceUntil.Format(time.RFC3339Nano)
			}
			e.put(data)
			e.fake.AddClient(e.key, "client-id-1", n1, e.s0)
			p := e.proc("pod-b")
			run := e.rotate(p, p.rotator(func(o *rotator.Options) { o.ClockSkewMargin = 30 * time.Second }), p.client(),
				rotator.Trigger{Reason: rotator.ReasonStartup, Time: e.clock.Now()})
			e.drive(time.Second, 5*time.Minute, run.finished)
			var dropAt time.Time
			for _, r := range e.fake.Requests() {
				if len(r.ClientSecret) == 1 && dropAt.IsZero() {
					dropAt = r.Time
				}
			}
			switch {
			case dropAt.IsZero():
				t.Errorf("pod-b never dropped the old secret: requests %v", e.requests())
			case dropAt.Before(graceUntil.Add(30 * time.Second)):
				t.Errorf("pod-b took over an overlap it did not start and dropped the old secret at grace_until+%s, before grace_until+ClockSkewMargin (30s)",
					dropAt.Sub(graceUntil))
			}
		})
	}
}

// grace_by vouches for one grace_until: moved by hand (`vault kv patch`,
// which leaves grace_by alone), it is no longer the driver's own, and the
// driver waits the clock-skew margin too: the operator's clock wrote it.
// (Found by the simulation, seed 832, with grace_by holding a token only.)
func TestGraceUntilMovedByHandGetsTheMargin(t *testing.T) {
	e := newMemHarness(t)
	a := e.proc("pod-a")
	c := a.client()
	c.GracePeriod = time.Hour
	const margin = 30 * time.Second
	e.rotate(a, a.rotator(func(o *rotator.Options) { o.ClockSkewMargin, o.RereadInterval = margin, 5*time.Second }), c, e.once())
	e.drive(time.Second, time.Minute, func() bool { return phaseOf(e.record()) == "overlap" })
	rec := e.record()
	moved := e.clock.Now().Add(time.Minute)
	rec["grace_until"] = moved.UTC().Format(time.RFC3339Nano)
	e.put(rec)
	prev := str(rec, "previous_client_secret")
	e.drive(time.Second, 5*time.Minute, func() bool { return !e.fake.Accepts(e.key, prev) })
	if reqs := e.fake.Requests(); len(reqs) < 2 || reqs[len(reqs)-1].Time.Before(moved.Add(margin)) {
		t.Fatalf("the driver dropped at %v, want no earlier than the hand-moved grace_until + margin %s; requests %v", reqs[len(reqs)-1].Time, moved.Add(margin), e.requests())
	}
}
