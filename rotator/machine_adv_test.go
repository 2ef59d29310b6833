package rotator_test

// Adversarial tests of today's changes to rotator/machine.go (adversary2).
// Each test fails on the code as it stands; the comment above it says what
// breaks and which invariant or promise it is.

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// slowAffix gives every request a real round trip of rtt: Affix applies it
// at once, and the answer comes back rtt later (a WAN link, a busy Affix).
// The fake clock does not move meanwhile, so leases never run out.
type slowAffix struct {
	inner rotator.Affix
	rtt   time.Duration
}

func (s slowAffix) UpdateClient(ctx context.Context, req affix.UpdateRequest) (*affix.UpdateResponse, error) {
	resp, err := s.inner.UpdateClient(ctx, req)
	select {
	case <-time.After(s.rtt):
	case <-ctx.Done():
	}
	return resp, err
}

// TestAdvStealPingPongStorm: two replicas (pod-a drives an overlap with a
// one-hour grace, pod-b follows it), reconcile_interval 10m, Affix answering
// every request after a constant 40ms. At the reconcile interval pod-a
// re-asserts its set while pod-b, having followed for a whole interval,
// steals the grace; pod-b's lease write lands 20ms into pod-a's request.
//
// From then on each process finds, right after its answer, a version the
// other wrote while its request was in flight ("a foreign write after a
// request of mine that may have been applied" → ReassertStale, steal): it
// takes the lease back and posts again, and its write lands inside the
// other's request, which therefore detects the same thing. With constant
// latency the offset alternates δ → rtt−δ → δ, so the exchange never ends
// by itself: two Vault writes and two Affix POSTs every rtt, for the whole
// grace (hours), each counted as a "stale" re-assert and logged at WARN.
// Commit f09aad8 promised "no steal ping-pong"; design.md says a stale
// re-assert follows a possible stale request, and the daemon re-asserts
// once per reconcile_interval. Here nothing was stale (both sent the same
// [N1,S0]), yet the two replicas hammer Affix until the grace ends (or
// Affix answers 429).
func TestAdvStealPingPongStorm(t *testing.T) {
	e := newMemHarness(t)
	n1 := newSecret(t)
	graceUntil := e.start0.Add(time.Hour)
	e.put(map[string]any{"client_secret": n1, "previous_client_secret": e.s0, "phase": "overlap",
		"rotation_id": "r1", "grace_until": graceUntil.Format(time.RFC3339Nano)})
	e.fake.AddClient(e.key, "client-id-1", n1, e.s0)
	const rtt = 40 * time.Millisecond
	mod := func(o *rotator.Options) { o.ReconcileInterval = 10 * time.Minute }

	a := e.proc("pod-a")
	ca := a.client()
	ca.Affix = slowAffix{inner: ca.Affix, rtt: rtt}
	e.daemon(a, a.rotator(mod), ca)
	e.quiet() // pod-a holds the overlap's lease, waiting out the grace
	if !e.leaseHeld("pod-a") {
		t.Fatalf("setup: pod-a does not hold the lease: %v", e.record())
	}

	b := e.proc("pod-b")
	cb := b.client()
	cb.Affix = slowAffix{inner: cb.Affix, rtt: rtt}
	stealB := b.pauseBefore(func(c ioCall) bool { return c.op == "write" && c.rec.LeaseOwner == "pod-b" }, false)
	e.daemon(b, b.rotator(mod), cb)
	e.quiet() // pod-b follows pod-a's grace

	// pod-a's reconcile request: pod-b's steal lands 20ms into it.
	a.hook(&ioHook{match: isPost(2), action: func() {
		stealB.await()
		go func() {
			time.Sleep(rtt / 2)
			stealB.resume()
		}()
	}})
	before := len(e.fake.Requests())
	e.tick(10 * time.Minute)
	time.Sleep(2 * time.Second) // real time; the fake clock stays at +10m
	posts := len(e.fake.Requests()) - before
	hist := len(e.store.History(e.path))
	// Without the ping-pong: pod-a's re-assert, pod-b's steal and
	// re-assert, at most one stale repair each.
	if posts > 6 {
		t.Errorf("%d Affix requests (and %d record versions) within 2s of one reconcile tick, with no drift and the fake clock standing still: "+
			"the replicas steal the grace back and forth after every answer (~2 POSTs per %s for the whole 1h grace); first requests %v",
			posts, hist, rtt, firstN(e.requests(), 12))
	}
}

// TestAdvLostOverlapWriteThenFloorNoOverlapEvent: pod-a's staged → overlap
// write lands but its answer is lost; before pod-a reads again, another
// process stopping cleanly records its 429 floor on the record (release()
// since today writes retry_not_before "even onto a record another process
// leases now", keeping every other field: pod-a's lease included). On its
// next read pod-a finds a version it did not write, so the lost write's
// continuation (after()) never runs: nobody ever reports rotation.overlap
// for this rotation, though the new secret is current and the rotation
// completes. docs/consumers.md tells consumers to refresh on
// rotation.overlap and docs/notifications.md promises at-least-once (best
// effort only against an unreachable receiver, a full queue or shutdown);
// here the event is never even queued. (The same happens with the operator
// annotation of TestLostWriteThenAnnotationReleasesLease.)
func TestAdvLostOverlapWriteThenFloorNoOverlapEvent(t *testing.T) {
	e := newMemHarness(t)
	p := e.proc("pod-a")
	var mu sync.Mutex
	var events []string
	var lost atomic.Bool
	p.loseAnswer = func(r vault.Record) bool { return r.Phase == vault.PhaseOverlap && lost.CompareAndSwap(false, true) }
	p.hook(&ioHook{after: true, match: func(c ioCall) bool { return c.op == "write" && c.rec.Phase == vault.PhaseOverlap }, action: func() {
		// Another process's release(): its floor, every other field kept.
		rec := e.record()
		rec["retry_not_before"] = e.clock.Now().Add(2 * time.Second).Format(time.RFC3339Nano)
		e.put(rec)
	}})
	r := p.rotator(func(o *rotator.Options) {
		o.Events = func(ev rotator.Event) {
			mu.Lock()
			events = append(events, ev.Type)
			mu.Unlock()
		}
	})
	run := e.rotate(p, r, p.client(), e.once())
	e.drive(time.Second, 2*time.Minute, run.finished)
	e.wait(run)
	if !lost.Load() || run.out.Result != rotator.ResultSuccess || phaseOf(e.record()) != "stable" {
		t.Fatalf("setup: answer lost %v, run %v, record phase %s", lost.Load(), run, phaseOf(e.record()))
	}
	mu.Lock()
	defer mu.Unlock()
	has := func(typ string) bool {
		for _, ev := range events {
			if ev == typ {
				return true
			}
		}
		return false
	}
	if !has("rotation.overlap") {
		t.Errorf("rotation completed (new secret current, then old dropped) but rotation.overlap was never reported; events %v", events)
	}
}
