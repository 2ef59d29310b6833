package rotator_test

import (
	"context"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/metrictest"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// TestStatusNextRunDuringGrace: during the grace of a scheduled rotation,
// /status's next_run and next_rotation_timestamp_seconds show the next
// scheduled run (the schedule from the coming rotated_at), not the time
// that started the rotation in flight, which is in the past.
func TestStatusNextRunDuringGrace(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	p, r, reg := h.metered("d1")
	c := p.client() // @every 1h, grace 10s
	ran := h.daemon(ctx, r, c)
	h.asleep(ctx)
	h.clock.Advance(time.Hour)
	h.asleep(ctx) // in overlap, waiting for the grace
	h.clock.Advance(h.grace / 2)
	h.asleep(ctx)
	now := h.clock.Now()
	st := r.Status()
	if len(st) != 1 || st[0].Phase != "overlap" || st[0].NextRun == nil {
		t.Fatalf("status during the grace: %+v", st)
	}
	if !st[0].NextRun.After(now) {
		t.Fatalf("next_run %s is not after now %s during the grace", st[0].NextRun, now)
	}
	if v := metrictest.Value(t, reg, "affix_rotator_next_rotation_timestamp_seconds", "client", "c1"); v < float64(now.Unix()) {
		t.Fatalf("next_rotation_timestamp_seconds %v is before now %v", v, now.Unix())
	}
	cancel()
	<-ran
}

// TestStatusLastErrorClearedOnSuccess: a failed attempt shows in
// last_error until the rotation succeeds.
func TestStatusLastErrorClearedOnSuccess(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	h.fake.Inject(affixtest.Fault{Status: 500})
	p := h.process("d1", nil)
	r := p.rotator(nil)
	out, err := h.rotate(ctx, p, r, h.once())
	if err != nil || out.Result != rotator.ResultSuccess {
		t.Fatalf("%+v %v", out, err)
	}
	st := r.Status()
	if len(st) != 1 || st[0].LastResult != rotator.ResultSuccess {
		t.Fatalf("status %+v", st)
	}
	if st[0].LastError != "" || st[0].LastErrorAt != nil {
		t.Fatalf("last_error still shown after a success: %q", st[0].LastError)
	}
}

// TestStatusStateIsOneVocabulary: /status says state "ok" once the record
// is read, with the phase apart, as -status does (on bf7ad79 it said the
// phase in state, "stable", where -status said "ok").
func TestStatusStateIsOneVocabulary(t *testing.T) {
	e := newMemHarness(t)
	p := e.proc("pod-a")
	r := p.rotator(nil)
	run := e.rotate(p, r, p.client(), e.resume())
	e.wait(run)
	st := r.Status()
	if len(st) != 1 || st[0].State != rotator.StateOK || st[0].Phase != "stable" {
		t.Fatalf("/status after a read: %+v, want state ok, phase stable", st)
	}
}
