package rotator_test

// The regression tests of issue 9 that need API added by the fix
// (Options.ReconcileInterval, Options.ClockSkewMargin, Outcome.RotatedAt,
// vault.Record.RetryNotBefore, metric affix_rotator_reasserts_total). Built
// only with -tags fencev2 until that API lands; helpers are in fence_test.go.

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/metrictest"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// Item 2: a daemon with ReconcileInterval re-asserts the record's set, so
// drift from any cause (here an out-of-band change in Affix) lasts at most
// that long; each repair is counted.
func TestFenceV2ReconcileRepairsDrift(t *testing.T) {
	for _, tc := range []struct {
		name  string
		drift func(e *memHarness, rogue string)
	}{
		{"extra secret accepted", func(e *memHarness, rogue string) { e.fake.AddClient(e.key, "client-id-1", e.s0, rogue) }},
		{"current secret no longer accepted", func(e *memHarness, rogue string) { e.fake.AddClient(e.key, "client-id-1", rogue) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMemHarness(t)
			e.setRotatedAt(e.start0)
			reg := prometheus.NewRegistry()
			m := rotator.NewMetrics(reg)
			p := e.proc("pod-a")
			e.daemon(p, p.rotator(func(o *rotator.Options) { o.ReconcileInterval = 10 * time.Minute; o.Metrics = m }), p.client())
			e.quiet()
			tc.drift(e, newSecret(t))
			if e.mismatch() == "" {
				t.Fatal("setup: no drift")
			}
			e.drive(time.Minute, 11*time.Minute, func() bool { return e.mismatch() == "" })
			if mm := e.mismatch(); mm != "" {
				t.Errorf("11m after an out-of-band change in Affix, with ReconcileInterval 10m: %s", mm)
			}
			if v := metrictest.Value(t, reg, "affix_rotator_reasserts_total", "client", "c1", "reason", "reconcile"); v < 1 {
				t.Errorf(`affix_rotator_reasserts_total{reason="reconcile"} = %v after repairing drift, want >= 1`, v)
			}
		})
	}
}

// Item 2: the re-assertion after a stale request is counted as such.
func TestFenceV2StaleReassertCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := rotator.NewMetrics(reg)
	e, _, _, _, hold := staleSetup(t, false, func(o *rotator.Options) { o.Metrics = m })
	hold.resume()
	e.quiet()
	if mm := e.mismatch(); mm != "" {
		t.Errorf("after A's stale request: %s", mm)
	}
	if v := metrictest.Value(t, reg, "affix_rotator_reasserts_total", "client", "c1", "reason", "stale"); v != 1 {
		t.Errorf(`affix_rotator_reasserts_total{reason="stale"} = %v after one stale request detected, want 1`, v)
	}
}

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

// Item 5: the 429's floor is in the record, typed.
func TestFenceV2RetryNotBefore(t *testing.T) {
	e := newMemHarness(t)
	e.fake.Inject(affixtest.Fault{Status: 429, RetryAfter: "600"})
	a := e.proc("pod-a")
	e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.quiet()
	floor := e.fake.Requests()[0].Time.Add(600 * time.Second)
	rec, _, err := e.store.Read(context.Background(), e.path)
	if err != nil {
		t.Fatal(err)
	}
	if rec.RetryNotBefore.Before(floor) {
		t.Errorf("record RetryNotBefore = %s after a 429 with Retry-After 600, want >= %s", rec.RetryNotBefore, floor)
	}
}

// Item 6: after its own final write's answer was lost, the outcome carries
// the record's rotated_at.
func TestFenceV2LostFinalWriteRotatedAt(t *testing.T) {
	e := newMemHarness(t)
	p := e.proc("pod-a")
	lost := false
	p.loseAnswer = func(r vault.Record) bool {
		if r.Phase == vault.PhaseStable && !r.RotatedAt.IsZero() && !lost {
			lost = true
			return true
		}
		return false
	}
	run := e.rotate(p, p.rotator(nil), p.client(), e.once())
	e.drive(time.Second, 10*time.Minute, run.finished)
	if !run.finished() {
		t.Fatal("run did not finish")
	}
	if want := e.recordTime("rotated_at"); !run.out.RotatedAt.Equal(want) || run.out.ByOther {
		t.Errorf("outcome %+v: RotatedAt %s, want the record's rotated_at %s, and not ByOther", run.out, run.out.RotatedAt, want)
	}
}
