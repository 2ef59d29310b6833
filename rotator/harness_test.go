package rotator_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/robfig/cron/v3"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }

var errCrashed = errors.New("injected crash")

// harness wires the real rotator to a real Vault server and the Affix fake,
// through wrappers that check invariants I1–I3 after every I/O call and can
// inject a crash at the n-th call. All I/O of all rotators of one harness is
// serialised by mu, so that each check sees one consistent instant.
type harness struct {
	t      *testing.T
	clock  *clockwork.FakeClock
	vault  *vaulttest.Server
	store  *vault.Store
	fake   *affixtest.Server
	api    *affix.Client
	key    string
	path   string
	s0     string
	grace  time.Duration
	mu     sync.Mutex
	staged map[string]bool // distinct pending secrets ever written to Vault
	// running counts rotators inside Rotate, for drive.
	running atomic.Int32
	calls   int // I/O calls so far (for crash injection)
	// slowWrite, if set, says how long (on the fake clock) a successful
	// write of r takes to return.
	slowWrite func(r vault.Record) time.Duration
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessOn(t, vaulttest.Shared(t))
}

func newHarnessOn(t *testing.T, srv *vaulttest.Server) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := vault.New(ctx, vault.Config{Address: srv.Addr, KVMount: "secret", Timeout: 10 * time.Second, Auth: vault.TokenAuth(secret.New(srv.Token))})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, clock: clockwork.NewFakeClockAt(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), vault: srv, store: st,
		key: "key-" + randHex(8), path: vaulttest.Path(t), grace: 10 * time.Second, staged: map[string]bool{}}
	h.fake = affixtest.NewServer()
	t.Cleanup(h.fake.Close)
	h.fake.SetClock(h.clock.Now)
	s0, _ := secret.Generate()
	h.s0 = s0.Reveal()
	h.fake.AddClient(h.key, "client-id-1", h.s0)
	if _, err := srv.Client().KVv2("secret").Put(ctx, h.path, map[string]any{"client_secret": h.s0}); err != nil {
		t.Fatal(err)
	}
	h.api, err = affix.New(h.fake.URL, secret.New(h.key), affix.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// crash configures where a process dies: at I/O call number at (1-based,
// counted across the harness), before or after the call takes effect.
type crash struct {
	at     int
	after  bool
	cancel context.CancelFunc
	hit    bool
}

// process is one rotator "process": its wrappers and crash plan.
type process struct {
	h     *harness
	id    string
	crash *crash
	dead  bool
}

func (h *harness) process(id string, c *crash) *process { return &process{h: h, id: id, crash: c} }

func (p *process) rotator(mod func(*rotator.Options)) *rotator.Rotator {
	o := rotator.Options{InstanceID: p.id, Store: (*checkedStore)(p), Clock: p.h.clock,
		LeaseDuration: time.Minute, RetryInitial: time.Second, RetryMax: 8 * time.Second, RequestTimeout: 5 * time.Second}
	if mod != nil {
		mod(&o)
	}
	return rotator.New(o)
}

func (p *process) client() *rotator.Client {
	sched, _ := cron.ParseStandard("@every 1h")
	return &rotator.Client{Name: "c1", VaultPath: p.h.path, Schedule: sched, GracePeriod: p.h.grace, Affix: (*checkedAffix)(p)}
}

// io runs one I/O call under the harness lock, with crash injection and the
// invariant check after it.
func (p *process) io(call func() error) error {
	h := p.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if p.dead {
		return errCrashed
	}
	h.calls++
	if p.crash != nil && h.calls == p.crash.at {
		p.dead, p.crash.hit = true, true
		if p.crash.after {
			_ = call()
			h.checkLocked("after crash")
		}
		p.crash.cancel()
		return errCrashed
	}
	err := call()
	h.checkLocked("after I/O")
	return err
}

type checkedStore process

func (s *checkedStore) Read(ctx context.Context, path string) (rec vault.Record, v int, err error) {
	e := (*process)(s).io(func() error {
		rec, v, err = s.h.store.Read(ctx, path)
		return err
	})
	if errors.Is(e, errCrashed) {
		return vault.Record{}, 0, e
	}
	return rec, v, err
}

func (s *checkedStore) Write(ctx context.Context, path string, r vault.Record, cas int) (v int, err error) {
	e := (*process)(s).io(func() error {
		v, err = s.h.store.Write(ctx, path, r, cas)
		if err == nil && !r.PendingClientSecret.IsZero() {
			s.h.staged[r.PendingClientSecret.Reveal()] = true
		}
		if err == nil && s.h.slowWrite != nil {
			s.h.clock.Advance(s.h.slowWrite(r))
		}
		return err
	})
	if errors.Is(e, errCrashed) {
		return 0, e
	}
	return v, err
}

type checkedAffix process

func (a *checkedAffix) UpdateClient(ctx context.Context, req affix.UpdateRequest) (resp *affix.UpdateResponse, err error) {
	h := a.h
	e := (*process)(a).io(func() error {
		// I3: a request that drops the previous secret comes at or after grace_until.
		rec, _ := h.tryRawRecord()
		if rec["phase"] == "overlap" && len(req.ClientSecret) == 1 && req.ClientSecret[0].Reveal() == rec["client_secret"] {
			gu, _ := time.Parse(time.RFC3339Nano, rec["grace_until"].(string))
			if h.clock.Now().Before(gu) {
				h.t.Errorf("I3 violated: old secret dropped at %s, before grace_until %s", h.clock.Now(), gu)
			}
		}
		resp, err = h.api.UpdateClient(ctx, req)
		return err
	})
	if errors.Is(e, errCrashed) {
		return nil, e
	}
	return resp, err
}

func (h *harness) rawRecord() map[string]any {
	h.t.Helper()
	rec, err := h.tryRawRecord()
	if err != nil {
		h.t.Fatalf("raw read: %v", err)
	}
	return rec
}

func (h *harness) tryRawRecord() (map[string]any, error) {
	kv, err := h.vault.Client().KVv2("secret").Get(context.Background(), h.path)
	if err != nil {
		return nil, err
	}
	return kv.Data, nil
}

// checkLocked verifies I1 (Vault's client_secret is accepted by Affix) and
// I2 (every secret Affix accepts is recorded in Vault).
func (h *harness) checkLocked(when string) {
	h.t.Helper()
	rec, err := h.tryRawRecord()
	if err != nil {
		return // Vault sealed or down: nothing changed in it either
	}
	accepted := h.fake.Secrets(h.key)
	cur, _ := rec["client_secret"].(string)
	if cur != "" && !h.fake.Accepts(h.key, cur) {
		h.t.Errorf("I1 violated %s: Vault's client_secret is not accepted by Affix (phase %v)", when, rec["phase"])
	}
	for _, s := range accepted {
		if s != rec["client_secret"] && s != rec["previous_client_secret"] && s != rec["pending_client_secret"] {
			h.t.Errorf("I2 violated %s: Affix accepts a secret Vault does not record (phase %v)", when, rec["phase"])
		}
	}
}

// drive advances the fake clock by step whenever every running rotator is
// asleep (so time never jumps while one is between two I/O calls), until
// ctx ends.
func (h *harness) drive(ctx context.Context, step time.Duration) {
	go func() {
		for ctx.Err() == nil {
			n := int(h.running.Load())
			if n < 1 {
				n = 1
			}
			bctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			err := h.clock.BlockUntilContext(bctx, n)
			cancel()
			if err == nil {
				h.clock.Advance(step)
			}
		}
	}()
}

// rotate runs r on a fresh client until it returns, driving the clock.
func (h *harness) rotate(ctx context.Context, p *process, r *rotator.Rotator, trig rotator.Trigger) (rotator.Outcome, error) {
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	h.drive(dctx, time.Second)
	h.running.Add(1)
	defer h.running.Add(-1)
	return r.Rotate(ctx, p.client(), trig)
}

func (h *harness) once() rotator.Trigger {
	return rotator.Trigger{Reason: rotator.ReasonOnce, Time: h.clock.Now()}
}

// requests labels the secrets Affix received (affixtest.Sequence).
func (h *harness) requests() []string { return affixtest.Sequence(h.fake.Requests(), h.s0) }
