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

// TestRunCatchesUpMaxAge: at start the daemon rotates at once a client whose
// last rotation is older than max_age, and not one that is recent.
func TestRunCatchesUpMaxAge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		age     time.Duration
		rotates bool
	}{{"old", 40 * 24 * time.Hour, true}, {"recent", 24 * time.Hour, false}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.setRotatedAt(h.clock.Now().Add(-tc.age))
			ctx, cancel := context.WithCancel(ctxT(t))
			defer cancel()
			metered, reg := withMetrics()
			p := h.process("d1", nil)
			r := p.rotator(metered)
			c := p.client()
			c.Schedule, _ = cron.ParseStandard("@every 720h")
			c.MaxAge = 30 * 24 * time.Hour
			ran := h.daemon(ctx, r, c)
			h.asleep(ctx)
			if tc.rotates {
				h.clock.Advance(h.grace)
				h.asleep(ctx) // waiting for the next schedule
				eq(t, "requests", h.requests(), []string{"200[N1,S0]", "200[N1]"})
				if v := metrictest.Value(t, reg, "affix_rotator_rotations_total", "result", rotator.ResultSuccess); v != 1 {
					t.Fatalf("rotations_total{success} = %v", v)
				}
			} else if n := len(h.fake.Requests()); n != 0 {
				t.Fatalf("recent client rotated at start (%d requests)", n)
			}
			next := metrictest.Value(t, reg, "affix_rotator_next_rotation_timestamp_seconds")
			// The schedule is anchored on the record: 720h after rotated_at.
			want := h.clock.Now().Add(720 * time.Hour)
			if !tc.rotates {
				want = want.Add(-tc.age)
			}
			if d := time.Duration((next - float64(want.Unix())) * float64(time.Second)); d < -time.Second || d > time.Second {
				t.Fatalf("next_rotation_timestamp_seconds = %v, want about %v", next, want.Unix())
			}
			cancel()
			<-ran
		})
	}
}

// TestRunResumesAtStart: a client left staged by a dead process is resumed
// at start, before any schedule fires.
func TestRunResumesAtStart(t *testing.T) {
	h := newHarness(t)
	pending := h.stageByOther("d1", time.Hour)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	p := h.process("d1", nil)
	r := p.rotator(nil)
	ran := make(chan struct{})
	go func() { r.Run(ctx, []*rotator.Client{p.client()}); close(ran) }()
	h.asleep(ctx)
	reqs := h.fake.Requests()
	if len(reqs) != 1 || reqs[0].ClientSecret[0] != pending {
		t.Fatalf("not resumed at start: %v", h.requests())
	}
	cancel()
	<-ran
}

// TestScheduleFires: rotations happen on the cron schedule and only then.
func TestScheduleFires(t *testing.T) {
	h := newHarness(t)
	h.setRotatedAt(h.clock.Now())
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	p := h.process("d1", nil)
	r := p.rotator(nil)
	c := p.client() // @every 1h, grace 10s
	ran := h.daemon(ctx, r, c)
	h.asleep(ctx)
	h.clock.Advance(time.Hour - time.Second)
	h.asleep(ctx)
	if n := len(h.fake.Requests()); n != 0 {
		t.Fatalf("%d requests before the schedule", n)
	}
	h.clock.Advance(time.Second)
	h.asleep(ctx)
	h.clock.Advance(h.grace)
	h.asleep(ctx)
	h.clock.Advance(time.Hour)
	h.asleep(ctx)
	h.clock.Advance(h.grace)
	h.asleep(ctx)
	eq(t, "two scheduled rotations", h.requests(), []string{"200[N1,S0]", "200[N1]", "200[N2,N1]", "200[N2]"})
	st := r.Status()
	if len(st) != 1 || st[0].Phase != "stable" || st[0].NextRun == nil || st[0].LastResult != rotator.ResultSuccess {
		t.Fatalf("status %+v", st)
	}
	cancel()
	<-ran
}

// TestMissingRecord: without bootstrap a missing record fails with the
// command that seeds it; with bootstrap the first rotation posts [new] alone.
func TestMissingRecord(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	if err := h.vault.Client().KVv2("secret").DeleteMetadata(ctx, h.path); err != nil {
		t.Fatal(err)
	}
	p := h.process("d1", nil)
	out, err := h.rotate(ctx, p, p.rotator(nil), h.once())
	if err == nil || out.Result != rotator.ResultFailed || !strings.Contains(err.Error(), "vault kv put -cas=0 secret/"+h.path+" client_secret=-") {
		t.Fatalf("missing record: %+v %v", out, err)
	}
	if len(h.fake.Requests()) != 0 {
		t.Fatal("requests sent for a missing record")
	}
	c := p.client()
	c.Bootstrap = true
	h.fake.AddClient(h.key, "client-id-1") // a brand-new Affix client: no secret yet
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	h.drive(dctx, time.Second)
	out, err = p.rotator(nil).Rotate(ctx, c, h.once())
	if err != nil || out.Result != rotator.ResultSuccess {
		t.Fatalf("bootstrap: %+v %v", out, err)
	}
	eq(t, "bootstrap requests", h.requests(), []string{"200[N1]"})
	rec := h.rawRecord()
	if str(rec, "phase") != "stable" || !h.staged[str(rec, "client_secret")] {
		t.Fatalf("bootstrap record: %v", keys(rec))
	}
}

// TestMalformedRecordIsLeftAlone: the rotator fails with a clear error and
// writes nothing.
func TestMalformedRecordIsLeftAlone(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	kv := h.vault.Client().KVv2("secret")
	if _, err := kv.Put(ctx, h.path, map[string]any{"client_secret": h.s0, "pending_client_secret": "x-pending"}); err != nil {
		t.Fatal(err)
	}
	p := h.process("d1", nil)
	out, err := h.rotate(ctx, p, p.rotator(nil), h.once())
	if err == nil || out.Result != rotator.ResultFailed || !strings.Contains(err.Error(), "malformed") || strings.Contains(err.Error(), "x-pending") {
		t.Fatalf("%+v %v", out, err)
	}
	meta, err := kv.GetMetadata(ctx, h.path)
	if err != nil || meta.CurrentVersion != 2 {
		t.Fatalf("record was written (version %d): %v", meta.CurrentVersion, err)
	}
}
