package rotator_test

// Backoff and its jitter: no *rand.Rand shared between client goroutines
// (run with -race). On the in-memory harness (memHarness, harness_test.go).

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// barrier releases its two callers together, so that what they do next
// is not ordered by anything the test adds.
type barrier struct {
	mu     sync.Mutex
	n      int
	ch     chan struct{}
	paused *atomic.Int32
}

func (b *barrier) arrive(ctx context.Context) {
	b.mu.Lock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	ch := b.ch
	b.n++
	if b.n == 2 {
		close(ch)
		b.n, b.ch = 0, nil
	}
	b.mu.Unlock()
	b.paused.Add(1)
	select {
	case <-ch:
	case <-ctx.Done():
	}
	b.paused.Add(-1)
}

type barrierAffix struct {
	e     *memHarness
	api   *affix.Client
	b     *barrier
	posts atomic.Int32
}

func (a *barrierAffix) UpdateClient(ctx context.Context, req affix.UpdateRequest) (*affix.UpdateResponse, error) {
	a.e.begin()
	resp, err := a.api.UpdateClient(ctx, req)
	a.posts.Add(1)
	a.e.end()
	if a.posts.Load() <= 3 {
		a.b.arrive(a.e.ctx)
	}
	return resp, err
}

// TestFenceRandNotShared: two clients of one daemon back off at once (Affix
// answers 500): their jitter must not draw from one *rand.Rand. Run it with
// -race: on the current code the detector reports a DATA RACE in
// math/rand/v2's PCG via internal/backoff.(*Backoff).Next, every time: the
// barrier releases both goroutines together after each of their first three
// requests, and lockFreeClock keeps the fake clock's mutex from ordering
// their draws (nothing else orders them, as with the real clock). Without
// -race it only checks that both clients back off.
func TestFenceRandNotShared(t *testing.T) {
	e := newMemHarness(t)
	b := &barrier{paused: &e.paused}
	var clients []*rotator.Client
	var affixes []*barrierAffix
	for i := 1; i <= 2; i++ {
		key, path, cur := "key-race-"+strconv.Itoa(i), "affix/race-"+strconv.Itoa(i), newSecret(t)
		e.fake.AddClient(key, "client-id-race", cur)
		if _, err := e.store.Put(path, map[string]any{"client_secret": cur, "pending_client_secret": newSecret(t), "phase": "staged", "rotation_id": "r" + strconv.Itoa(i)}, 0); err != nil {
			t.Fatal(err)
		}
		api, err := affix.New(e.fake.URL, secret.New(key), affix.WithTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		a := &barrierAffix{e: e, api: api, b: b}
		affixes = append(affixes, a)
		c := e.newClient("@every 720h", a)
		c.Name, c.VaultPath = "race-"+strconv.Itoa(i), path
		clients = append(clients, c)
	}
	for i := 0; i < 40; i++ {
		e.fake.Inject(affixtest.Fault{Status: 500})
	}
	p := e.proc("pod-a")
	r := rotator.New(e.options(p.id, e.store, func(o *rotator.Options) { o.Clock = lockFreeClock{e.clock, &e.nowNanos} }))
	run := e.daemon(p, r, clients...)
	ok := e.drive(time.Second, 5*time.Minute, func() bool { return affixes[0].posts.Load() >= 3 && affixes[1].posts.Load() >= 3 })
	p.stop()
	e.wait(run)
	if !ok {
		t.Fatalf("setup: the two clients did not back off together (%d and %d requests)", affixes[0].posts.Load(), affixes[1].posts.Load())
	}
}
