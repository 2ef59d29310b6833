package rotator_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/robfig/cron/v3"

	"github.com/affix-rotator/affix-rotator/internal/metrictest"
)

// TestRunMetricsExpectedIntervalAndEndToEnd: Run exports each client's
// expected interval (schedule + grace + jitter) before anything else, and
// a rotation it drives records its end-to-end duration (trigger → stable,
// the grace period included) next to trigger → overlap.
func TestRunMetricsExpectedIntervalAndEndToEnd(t *testing.T) {
	h := newHarness(t)
	h.setRotatedAt(h.clock.Now().Add(-40 * 24 * time.Hour))
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	p, r, reg := h.metered("d1")
	c := p.client()
	c.Schedule, _ = cron.ParseStandard("@every 720h")
	c.MaxAge = 30 * 24 * time.Hour
	c.Jitter = time.Minute
	ran := h.daemon(ctx, r, c)
	h.asleep(ctx) // in the grace period of the catch-up rotation
	want := (720*time.Hour + h.grace + time.Minute).Seconds()
	if v := metrictest.Value(t, reg, "affix_rotator_expected_interval_seconds", "client", "c1"); v != want {
		t.Errorf("expected_interval_seconds = %v, want %v", v, want)
	}
	h.clock.Advance(h.grace)
	h.asleep(ctx) // waiting for the next schedule
	eq(t, "requests", h.requests(), []string{"200[N1,S0]", "200[N1]"})
	e2e := metrictest.Value(t, reg, "affix_rotator_last_rotation_end_to_end_seconds", "client", "c1")
	if e2e < h.grace.Seconds() || e2e > h.grace.Seconds()+5 {
		t.Errorf("last_rotation_end_to_end_seconds = %v, want the grace period (%v) and a little", e2e, h.grace.Seconds())
	}
	if n, err := testutil.GatherAndCount(reg, "affix_rotator_last_rotation_duration_seconds"); err != nil || n != 1 {
		t.Fatalf("affix_rotator_last_rotation_duration_seconds has %d series (%v), want c1's", n, err)
	}
	overlap := metrictest.Value(t, reg, "affix_rotator_last_rotation_duration_seconds", "client", "c1")
	if overlap < 0 || overlap >= e2e {
		t.Errorf("last_rotation_duration_seconds = %v, want >= 0 and below the end-to-end %v", overlap, e2e)
	}
	cancel()
	<-ran
}
