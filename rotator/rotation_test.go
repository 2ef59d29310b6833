package rotator_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestFullRotation: the exact request sequence [new, old] then [new], the
// Vault record at each phase, and the grace period honoured to the
// millisecond (I3) on the injected clock.
func TestFullRotation(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	p := h.process("d1", nil)
	var phases []vault.Phase
	r := p.rotator(func(o *rotator.Options) {
		o.Progress = func(pr rotator.Progress) {
			if len(phases) == 0 || phases[len(phases)-1] != pr.Phase {
				phases = append(phases, pr.Phase)
			}
		}
	})
	start := h.clock.Now()
	done := h.start(ctx, r, p, h.once())

	h.asleep(ctx) // in the grace period
	eq(t, "requests before the grace ends", h.requests(), []string{"200[N1,S0]"})
	rec := h.rawRecord()
	newSecret := h.fake.Requests()[0].ClientSecret[0]
	if str(rec, "phase") != "overlap" || str(rec, "client_secret") != newSecret || str(rec, "previous_client_secret") != h.s0 || rec["pending_client_secret"] != nil {
		t.Fatalf("overlap record wrong: phase=%v current=new:%v previous=old:%v pending:%v", rec["phase"], str(rec, "client_secret") == newSecret, str(rec, "previous_client_secret") == h.s0, rec["pending_client_secret"] != nil)
	}
	grace, _ := time.Parse(time.RFC3339Nano, str(rec, "grace_until"))
	if !grace.Equal(start.Add(h.grace)) {
		t.Fatalf("grace_until = %s, want %s", grace, start.Add(h.grace))
	}
	if str(rec, "lease_owner") != "d1" || str(rec, "client_id") != "client-id-1" {
		t.Fatalf("overlap record: lease_owner %q client_id %q", rec["lease_owner"], rec["client_id"])
	}
	if !h.fake.Accepts(h.key, h.s0) || !h.fake.Accepts(h.key, newSecret) {
		t.Fatal("Affix does not accept both secrets during the grace")
	}

	h.clock.Advance(h.grace - time.Millisecond)
	h.asleep(ctx)
	eq(t, "requests 1ms before grace_until", h.requests(), []string{"200[N1,S0]"})
	h.clock.Advance(time.Millisecond)
	res := h.wait(ctx, done)
	if res.err != nil || res.out.Result != rotator.ResultSuccess || res.out.ByOther {
		t.Fatalf("outcome %+v err %v", res.out, res.err)
	}
	eq(t, "requests", h.requests(), []string{"200[N1,S0]", "200[N1]"})
	if drop := h.fake.Requests()[1].Time; drop.Before(grace) {
		t.Fatalf("old secret dropped at %s, before grace_until %s", drop, grace)
	}
	rec = h.rawRecord()
	if str(rec, "phase") != "stable" || str(rec, "client_secret") != newSecret || rec["previous_client_secret"] != nil || rec["lease_owner"] != nil {
		t.Fatalf("final record wrong: %v", keys(rec))
	}
	if h.fake.Accepts(h.key, h.s0) {
		t.Fatal("old secret still accepted after the rotation")
	}
	eq(t, "phases seen", phaseStrings(phases), []string{"staged", "overlap", "stable"})
	if len(h.staged) != 1 {
		t.Fatalf("%d secrets generated, want 1", len(h.staged))
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func phaseStrings(ps []vault.Phase) []string {
	var out []string
	for _, p := range ps {
		out = append(out, string(p))
	}
	return out
}

// TestSlowOverlapWriteKeepsTheWholeGrace: when making the new secret
// current in Vault takes longer than grace_until assumed (here 30s of a
// 10s grace: a paused process, a slow Vault), grace_until is moved so that
// consumers still get the whole grace from when the write returned.
func TestSlowOverlapWriteKeepsTheWholeGrace(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	var current time.Time // when the overlap write returned
	h.slowWrite = func(r vault.Record) time.Duration {
		if r.Phase == vault.PhaseOverlap && current.IsZero() {
			current = h.clock.Now().Add(30 * time.Second)
			return 30 * time.Second
		}
		return 0
	}
	p := h.process("d1", nil)
	if out, err := h.rotate(ctx, p, p.rotator(nil), h.once()); err != nil || out.Result != rotator.ResultSuccess {
		t.Fatalf("%v %+v", err, out)
	}
	eq(t, "requests", h.requests(), []string{"200[N1,S0]", "200[N1]"})
	drop := h.fake.Requests()[1].Time
	if got := drop.Sub(current); got < h.grace {
		t.Fatalf("old secret dropped %s after the new one became current, grace %s", got, h.grace)
	}
}

// TestOperatorExtendsGrace: an operator who moves grace_until later during
// the grace (a consumer is slow to refresh) is honoured: the rotator reads
// the record again when its own wait ends, and drops the old secret only at
// the new grace_until (the harness's I3 check fails any drop before it).
func TestOperatorExtendsGrace(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, h.once())
	h.asleep(ctx) // in the grace
	rec := h.rawRecord()
	if rec["phase"] != "overlap" {
		t.Fatalf("phase %v, want overlap", rec["phase"])
	}
	gu, _ := time.Parse(time.RFC3339Nano, rec["grace_until"].(string))
	later := gu.Add(time.Hour)
	rec["grace_until"] = later.Format(time.RFC3339Nano)
	if _, err := h.vault.Client().KVv2("secret").Put(ctx, h.path, rec); err != nil {
		t.Fatal(err)
	}
	h.drive(ctx, time.Second)
	if res := h.wait(ctx, done); res.err != nil || res.out.Result != rotator.ResultSuccess {
		t.Fatalf("%+v", res)
	}
	reqs := h.fake.Requests()
	if drop := reqs[len(reqs)-1].Time; drop.Before(later) {
		t.Fatalf("old secret dropped at %s, before the extended grace_until %s", drop, later)
	}
}

// TestServerErrorsRetriedWithBackoff: 5xx and dropped connections are
// retried with growing, jittered delays; the rotation then completes.
func TestServerErrorsRetriedWithBackoff(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	h.fake.Inject(affixtest.Fault{Status: 500}, affixtest.Fault{Status: 500}, affixtest.Fault{Status: 503}, affixtest.Fault{Status: 500})
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, h.once())
	h.drive(ctx, 100*time.Millisecond)
	res := h.wait(ctx, done)
	if res.err != nil || res.out.Result != rotator.ResultSuccess {
		t.Fatalf("%+v", res)
	}
	eq(t, "requests", h.requests(), []string{"500[N1,S0]", "500[N1,S0]", "503[N1,S0]", "500[N1,S0]", "200[N1,S0]", "200[N1]"})
	reqs := h.fake.Requests()
	// Delays: nominal 1s, 2s, 4s, 8s with equal jitter: each in [d/2, d] (+ clock step).
	for i, nominal := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		gap := reqs[i+1].Time.Sub(reqs[i].Time)
		if gap < nominal/2 || gap > nominal+200*time.Millisecond {
			t.Fatalf("delay before attempt %d = %s, want within [%s, %s]", i+2, gap, nominal/2, nominal)
		}
	}
}

// TestDefiniteRejectionAborts: 400 and 401 abort the rotation; the old
// secret stays current and the only one Affix accepts.
func TestDefiniteRejectionAborts(t *testing.T) {
	for _, code := range []int{400, 401, 403, 404} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			h := newHarness(t)
			ctx := ctxT(t)
			h.fake.Inject(affixtest.Fault{Status: code})
			p := h.process("d1", nil)
			res := h.wait(ctx, h.start(ctx, p.rotator(nil), p, h.once()))
			if !errors.Is(res.err, rotator.ErrAborted) || res.out.Result != rotator.ResultAborted {
				t.Fatalf("outcome %+v err %v", res.out, res.err)
			}
			eq(t, "requests", h.requests(), []string{strconv.Itoa(code) + "[N1,S0]"})
			rec := h.rawRecord()
			if str(rec, "phase") != "stable" || str(rec, "client_secret") != h.s0 || rec["pending_client_secret"] != nil {
				t.Fatalf("record after abort: phase %v, old current %v, pending %v", rec["phase"], str(rec, "client_secret") == h.s0, rec["pending_client_secret"] != nil)
			}
			if !strings.Contains(str(rec, "last_error"), strconv.Itoa(code)) {
				t.Fatalf("last_error %q does not name the status", rec["last_error"])
			}
			if got := h.fake.Secrets(h.key); len(got) != 1 || got[0] != h.s0 {
				t.Fatal("Affix does not accept exactly the old secret after the abort")
			}
		})
	}
}

// refusingLimiter refuses its first n waits, as a pacer whose hold outlasts
// the request timeout does.
type refusingLimiter struct{ n atomic.Int32 }

func (l *refusingLimiter) Wait(context.Context) error {
	if l.n.Add(-1) >= 0 {
		return context.DeadlineExceeded
	}
	return nil
}

// TestNotSentIsNotUnknown: a request that never left (the account's pacer
// gave up waiting) cannot have been applied, so it does not stop a later
// definite rejection from aborting the rotation, and it is not counted as a
// request in the metrics.
func TestNotSentIsNotUnknown(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	lim := &refusingLimiter{}
	lim.n.Store(1)
	api, err := affix.New(h.fake.URL, secret.New(h.key), affix.WithTimeout(5*time.Second), affix.WithLimiter(lim))
	if err != nil {
		t.Fatal(err)
	}
	h.api = api
	h.fake.Inject(affixtest.Fault{Status: 401})
	reg := prometheus.NewRegistry()
	p := h.process("d1", nil)
	res, err := h.rotate(ctx, p, p.rotator(func(o *rotator.Options) { o.Metrics = rotator.NewMetrics(reg) }), h.once())
	if !errors.Is(err, rotator.ErrAborted) || res.Result != rotator.ResultAborted {
		t.Fatalf("outcome %+v err %v, want aborted after the 401", res, err)
	}
	eq(t, "requests", h.requests(), []string{"401[N1,S0]"})
	if n := testutil.CollectAndCount(reg, "affix_rotator_affix_requests_total"); n != 1 {
		t.Fatalf("%d series of affix_requests_total, want only the 401's", n)
	}
}

// TestRejectionAfterUnknownOutcomeKeepsStaged: a request that was applied
// but whose answer was lost, followed by a definite rejection, must not
// abort: Affix may accept the new secret, so Vault keeps it (I2).
func TestRejectionAfterUnknownOutcomeKeepsStaged(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	h.fake.Inject(affixtest.Fault{ApplyThenDrop: true}, affixtest.Fault{Status: 401}, affixtest.Fault{Status: 401})
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, h.once())
	h.drive(ctx, 100*time.Millisecond)
	res := h.wait(ctx, done)
	if res.err != nil || res.out.Result != rotator.ResultSuccess {
		t.Fatalf("outcome %+v err %v", res.out, res.err)
	}
	got := h.requests()
	if len(got) != 5 || got[1] != "401[N1,S0]" || got[2] != "401[N1,S0]" || got[3] != "200[N1,S0]" || got[4] != "200[N1]" {
		t.Fatalf("requests %v", got)
	}
}

// TestStepsAreIdempotentUnderRetries: a dropped connection after the update
// was applied is retried with the same secrets (no second secret).
func TestApplyThenDropIsRetriedWithSameSecret(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	h.fake.Inject(affixtest.Fault{ApplyThenDrop: true})
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, h.once())
	h.drive(ctx, 100*time.Millisecond)
	if res := h.wait(ctx, done); res.err != nil {
		t.Fatal(res.err)
	}
	got := h.requests()
	if len(got) != 3 || !strings.HasSuffix(got[0], "[N1,S0]") || got[1] != "200[N1,S0]" || got[2] != "200[N1]" {
		t.Fatalf("requests %v", got)
	}
}

// TestOverlapDropFailureIsRetried: failing to drop the old secret is safe
// and retried; Vault stays in overlap meanwhile.
func TestOverlapDropFailureIsRetried(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, h.once())
	h.asleep(ctx)
	h.fake.Inject(affixtest.Fault{Status: 401}, affixtest.Fault{Status: 500})
	h.drive(ctx, 100*time.Millisecond)
	if res := h.wait(ctx, done); res.err != nil || res.out.Result != rotator.ResultSuccess {
		t.Fatalf("%+v", res)
	}
	eq(t, "requests", h.requests(), []string{"200[N1,S0]", "401[N1]", "500[N1]", "200[N1]"})
}

// TestMismatchKeepingOldAborts: a 200 whose set keeps the old secret and
// lacks the new one aborts, like a rejection.
func TestMismatchKeepingOldAborts(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	h.fake.Inject(affixtest.Fault{Echo: []string{h.s0}, ApplyEcho: true})
	p := h.process("d1", nil)
	res := h.wait(ctx, h.start(ctx, p.rotator(nil), p, h.once()))
	if !errors.Is(res.err, rotator.ErrAborted) {
		t.Fatalf("outcome %+v err %v", res.out, res.err)
	}
	if rec := h.rawRecord(); str(rec, "client_secret") != h.s0 || str(rec, "phase") != "stable" {
		t.Fatalf("record after mismatch abort: %v", keys(rec))
	}
}

// TestMismatchWithoutOldIsRetried: a 200 whose set lacks the old secret
// must not abort (that would make Vault's secret one Affix refuses); the
// update is sent again.
func TestMismatchWithoutOldIsRetried(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	// Echo a set with a stranger and neither of ours.
	h.fake.Inject(affixtest.Fault{Echo: []string{"ffffffff-ffffffff-ffffffff-ffffffff"}})
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, h.once())
	h.drive(ctx, 100*time.Millisecond)
	if res := h.wait(ctx, done); res.err != nil || res.out.Result != rotator.ResultSuccess {
		t.Fatalf("%+v", res)
	}
	got := h.requests()
	if len(got) != 3 || got[1] != "200[N1,S0]" {
		t.Fatalf("requests %v", got)
	}
}
