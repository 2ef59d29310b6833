package rotator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/affix-rotator/affix-rotator/internal/metrictest"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// TestServeReload: a client removed from the set stops (its status and
// series go), one added starts, and one changed restarts with its new
// schedule, which then drives it.
func TestServeReload(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	p, r, reg := h.metered("d1")
	c := p.client() // @every 1h
	updates := make(chan []*rotator.Client)
	ran := make(chan struct{})
	go func() { r.Serve(ctx, []*rotator.Client{c}, updates); close(ran) }()
	h.asleep(ctx)
	if st := r.Status(); len(st) != 1 || st[0].Client != "c1" {
		t.Fatalf("status %+v", st)
	}

	updates <- nil // removed
	deadline := time.Now().Add(5 * time.Second)
	for len(r.Status()) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := r.Status(); len(st) != 0 {
		t.Fatalf("removed client still in status: %+v", st)
	}
	for _, s := range metrictest.Gather(t, reg) {
		if strings.HasPrefix(s.Labels, `client="`) || strings.Contains(s.Labels, `,client="`) {
			t.Fatalf("series of a removed client: %s{%s}", s.Name, s.Labels)
		}
	}

	c2 := p.client()
	c2.Schedule, _ = cron.ParseStandard("@every 1m")
	updates <- []*rotator.Client{c2} // added back, with another schedule
	h.asleep(ctx)
	h.clock.Advance(time.Minute)
	h.asleep(ctx)
	h.clock.Advance(h.grace)
	h.asleep(ctx)
	eq(t, "rotation on the new schedule", h.requests(), []string{"200[N1,S0]", "200[N1]"})

	c3 := p.client() // changed back to @every 1h: the 1m loop stops
	updates <- []*rotator.Client{c3}
	h.asleep(ctx)
	h.clock.Advance(2 * time.Minute)
	h.asleep(ctx)
	if n := len(h.fake.Requests()); n != 2 {
		t.Fatalf("the old 1m schedule still runs: %v", h.requests())
	}
	cancel()
	<-ran
}
