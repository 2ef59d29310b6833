package rotator_test

// The rotator test harness: the real rotator on a fake clock, against the
// Affix fake (affixtest) through the real affix client, over one of two
// Vaults. Every piece of set-up is here, once.
//
//   - fixture: one Affix client (its API key, its seed secret S0, its
//     record's path), the fake clock, the options every test rotator
//     starts from (options), a client (newClient) and the two triggers
//     (once, resume). Both harnesses below are a fixture; a test that
//     needs nothing more (an operator action on a hand-made record) uses
//     newFixture alone.
//   - harness (newHarness, newHarnessOn): the real Vault server
//     (vaulttest). Each process (h.process) goes through wrappers that
//     check invariants I1–I3 after every I/O call and can crash it at the
//     n-th call; h.rotate, h.start and h.asleep drive it.
//   - memHarness (newMemHarness): the in-memory KV v2 mount (vaultmem),
//     whose history of versions names the secrets (S0, N1, N2… in the
//     order they entered the record). Concurrency is scripted, not raced:
//     each process (e.proc) goes through hooks that let a test pause it at
//     a precise I/O call (pauseBefore), kill it, lose a write's answer,
//     and e.quiet, e.drive and e.advance move the clock only when every
//     process sleeps on it.
//
// Generic helpers: ctxT, eq, str, firstN, newSecret, randHex.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
	"github.com/affix-rotator/affix-rotator/vault/vaultmem"
)

func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }

// ---------------------------------------------------------------------------
// fixture: what both harnesses share.

// fixtureStart is the fake clock's start, for every test.
var fixtureStart = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// fixture is one Affix client: the Affix fake that knows it by key with
// the seed secret s0 (what its record holds at the start), the real affix
// client to that fake (api), the path of its record, its grace period, and
// the fake clock that every process and the fake share.
type fixture struct {
	t      *testing.T
	clock  *clockwork.FakeClock
	start0 time.Time // the clock's start
	fake   *affixtest.Server
	api    *affix.Client
	key    string
	path   string
	s0     string
	grace  time.Duration
}

// newFixture starts the Affix fake on a fake clock at fixtureStart, with
// key accepting a fresh secret s0; the grace is 10s. It writes no record:
// each harness puts {client_secret: s0} at path in its own Vault.
func newFixture(t *testing.T, key, path string) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: clockwork.NewFakeClockAt(fixtureStart), start0: fixtureStart, key: key, path: path,
		grace: 10 * time.Second, s0: newSecret(t)}
	f.fake = affixtest.NewServer()
	t.Cleanup(f.fake.Close)
	f.fake.SetClock(f.clock.Now)
	f.fake.AddClient(f.key, "client-id-1", f.s0)
	var err error
	f.api, err = affix.New(f.fake.URL, secret.New(f.key), affix.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// options are a test rotator's options: instance id, store, the fake clock,
// a 1m lease, retries from 1s to 8s, a 5s request timeout, and the debug
// logger; mod, if set, adjusts them.
func (f *fixture) options(id string, st rotator.Store, mod func(*rotator.Options)) rotator.Options {
	o := rotator.Options{InstanceID: id, Store: st, Clock: f.clock, Logger: debugLogger(),
		LeaseDuration: time.Minute, RetryInitial: time.Second, RetryMax: 8 * time.Second, RequestTimeout: 5 * time.Second}
	if mod != nil {
		mod(&o)
	}
	return o
}

// newClient is the client "c1" of the fixture's record and grace, on
// schedule (a cron spec such as "@every 1h"), talking to Affix through a.
func (f *fixture) newClient(schedule string, a rotator.Affix) *rotator.Client {
	sched, err := cron.ParseStandard(schedule)
	if err != nil {
		f.t.Fatal(err)
	}
	return &rotator.Client{Name: "c1", VaultPath: f.path, Schedule: sched, GracePeriod: f.grace, Affix: a}
}

// once is a -once run's trigger, now.
func (f *fixture) once() rotator.Trigger {
	return rotator.Trigger{Reason: rotator.ReasonOnce, Time: f.clock.Now()}
}

// resume is a daemon's start: it drives the rotation in flight to its end
// and starts none (a -once would go on with a rotation of its own).
func (f *fixture) resume() rotator.Trigger {
	return rotator.Trigger{Reason: rotator.ReasonStartup, Time: f.clock.Now()}
}

// withMetrics gives a rotator metrics on a registry of its own:
// mod, reg := withMetrics(); r := p.rotator(mod).
func withMetrics() (func(*rotator.Options), *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	m := rotator.NewMetrics(reg)
	return func(o *rotator.Options) { o.Metrics = m }, reg
}

// debugLogger is nil (no logs) unless ROTATOR_TEST_DEBUG (or FENCE_DEBUG,
// its old name) is set.
func debugLogger() *zap.Logger {
	if os.Getenv("ROTATOR_TEST_DEBUG") == "" && os.Getenv("FENCE_DEBUG") == "" {
		return nil
	}
	l, _ := zap.NewDevelopment()
	return l
}

// newSecret is a fresh secret in Affix's shape.
func newSecret(t *testing.T) string {
	t.Helper()
	s, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return s.Reveal()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ctxT is a context that ends after 90s or with the test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eq fails the test unless got and want are the same list.
func eq(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// str is the string at k of a raw record ("" if none).
func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

// firstN is s cut to its first n elements, for messages.
func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ---------------------------------------------------------------------------
// harness: the real Vault server, invariants checked after every I/O call.

var errCrashed = errors.New("injected crash")

// harness wires the real rotator to a real Vault server and the Affix fake,
// through wrappers that check invariants I1–I3 after every I/O call and can
// inject a crash at the n-th call. All I/O of all rotators of one harness is
// serialised by mu, so that each check sees one consistent instant.
type harness struct {
	*fixture
	vault  *vaulttest.Server
	store  *vault.Store
	mu     sync.Mutex
	staged map[string]bool // distinct pending secrets ever written to Vault
	// running counts rotators inside Rotate, for drive.
	running atomic.Int32
	calls   int // I/O calls so far (for crash injection)
	// slowWrite, if set, says how long (on the fake clock) a successful
	// write of r takes to return.
	slowWrite func(r vault.Record) time.Duration
}

// newHarness is a harness on the Vault server the package's tests share.
func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessOn(t, vaulttest.Shared(t))
}

// newHarnessOn is a harness on srv (a test that seals or stops Vault has
// one of its own), with a record {client_secret: S0} at a path of its own.
func newHarnessOn(t *testing.T, srv *vaulttest.Server) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := vault.New(ctx, vault.Config{Address: srv.Addr, KVMount: "secret", Timeout: 10 * time.Second, Auth: vault.TokenAuth(secret.New(srv.Token))})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{fixture: newFixture(t, "key-"+randHex(8), vaulttest.Path(t)), vault: srv, store: st, staged: map[string]bool{}}
	if _, err := srv.Client().KVv2("secret").Put(ctx, h.path, map[string]any{"client_secret": h.s0}); err != nil {
		t.Fatal(err)
	}
	return h
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

// process is a process called id (its instance id), crashing as c says
// (nil: never).
func (h *harness) process(id string, c *crash) *process { return &process{h: h, id: id, crash: c} }

// rotator is the process's rotator, on the checked store.
func (p *process) rotator(mod func(*rotator.Options)) *rotator.Rotator {
	return rotator.New(p.h.options(p.id, (*checkedStore)(p), mod))
}

// client is the fixture's client, @every 1h, on the checked Affix.
func (p *process) client() *rotator.Client { return p.h.newClient("@every 1h", (*checkedAffix)(p)) }

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

// rawRecord is the record's latest data, read from Vault past the wrappers.
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

// setRotatedAt sets the record's rotated_at (the schedule's anchor).
func (h *harness) setRotatedAt(t time.Time) {
	h.t.Helper()
	ctx := context.Background()
	rec, v, err := h.store.Read(ctx, h.path)
	if err != nil {
		h.t.Fatal(err)
	}
	rec.RotatedAt = t
	if _, err := h.store.Write(ctx, h.path, rec, v); err != nil {
		h.t.Fatal(err)
	}
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

// metered is process id (no crash) and its rotator with metrics on a
// registry of its own.
func (h *harness) metered(id string) (*process, *rotator.Rotator, *prometheus.Registry) {
	mod, reg := withMetrics()
	p := h.process(id, nil)
	return p, p.rotator(mod), reg
}

// result is what a Rotate started by start returned.
type result struct {
	out rotator.Outcome
	err error
}

// start runs r.Rotate on a fresh client of p in its own goroutine; the
// clock moves only as the test moves it (or drive).
func (h *harness) start(ctx context.Context, r *rotator.Rotator, p *process, trig rotator.Trigger) chan result {
	done := make(chan result, 1)
	h.running.Add(1)
	go func() {
		defer h.running.Add(-1)
		out, err := r.Rotate(ctx, p.client(), trig)
		done <- result{out, err}
	}()
	return done
}

// daemon runs r.Run(clients) in its own goroutine until ctx ends; the channel
// closes when Run has returned.
func (h *harness) daemon(ctx context.Context, r *rotator.Rotator, clients ...*rotator.Client) chan struct{} {
	ran := make(chan struct{})
	go func() { r.Run(ctx, clients); close(ran) }()
	return ran
}

// asleep waits until the rotator waits on the clock.
func (h *harness) asleep(ctx context.Context) {
	h.t.Helper()
	if err := h.clock.BlockUntilContext(ctx, 1); err != nil {
		h.t.Fatalf("rotator never went to sleep: %v", err)
	}
}

// wait is what the rotation started by start returned.
func (h *harness) wait(ctx context.Context, done chan result) result {
	h.t.Helper()
	select {
	case r := <-done:
		return r
	case <-ctx.Done():
		h.t.Fatalf("rotation did not finish; requests so far %v", h.requests())
		return result{}
	}
}

// requests labels the secrets Affix received (affixtest.Sequence).
func (h *harness) requests() []string { return affixtest.Sequence(h.fake.Requests(), h.s0) }

// ---------------------------------------------------------------------------
// memHarness: the in-memory Vault, processes scripted at their I/O calls.

// memHarness is one Affix client (a fixture) whose record is in an
// in-memory KV v2 mount, with the processes a test runs on it.
type memHarness struct {
	*fixture
	ctx   context.Context // ends with the test, or after 90s
	store *vaultmem.Store

	nowNanos atomic.Int64 // the clock's time, for lockFreeClock

	running  atomic.Int32 // goroutines inside Rotate or Run's client loops
	paused   atomic.Int32 // of those, held by a test at an I/O call
	inflight atomic.Int32 // I/O calls under way
	ios      atomic.Int64 // I/O calls begun or ended, for quiescence

	mu   sync.Mutex
	runs []*memRun
}

// memPath is the record's path in a memHarness.
const memPath = "affix/fence"

// errInjectedKill is what a killed process's I/O calls return.
var errInjectedKill = errors.New("process killed (injected SIGKILL)")

// newMemHarness is a memHarness with the record {client_secret: S0} at
// memPath (key "key-fence"). Every process it runs is stopped, and waited
// for, when the test ends.
func newMemHarness(t *testing.T) *memHarness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	e := &memHarness{fixture: newFixture(t, "key-fence", memPath), ctx: ctx, store: vaultmem.New("secret")}
	t.Cleanup(cancel)
	e.store.Now = e.clock.Now // created_time of each version, on the fake clock
	e.nowNanos.Store(e.start0.UnixNano())
	e.put(map[string]any{"client_secret": e.s0})
	// Runs first: stop every process and wait for it, before the fake closes.
	t.Cleanup(func() {
		cancel()
		e.mu.Lock()
		runs := append([]*memRun(nil), e.runs...)
		e.mu.Unlock()
		for _, r := range runs {
			select {
			case <-r.done:
			case <-time.After(10 * time.Second):
			}
		}
	})
	return e
}

// put writes raw KV data over the latest version, as an operator would.
func (e *memHarness) put(data map[string]any) {
	e.t.Helper()
	if _, err := e.store.Put(e.path, data, -1); err != nil {
		e.t.Fatal(err)
	}
}

// record returns the latest version's data (nil if none or deleted).
func (e *memHarness) record() map[string]any {
	h := e.store.History(e.path)
	if len(h) == 0 {
		return nil
	}
	return h[len(h)-1]
}

func (e *memHarness) recordTime(field string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, str(e.record(), field))
	return t
}

// names labels every secret: S0 the seed, N1, N2… in the order they entered
// the record.
func (e *memHarness) names() map[string]string {
	m := map[string]string{e.s0: "S0"}
	n := 0
	for _, d := range e.store.History(e.path) {
		for _, k := range []string{"pending_client_secret", "client_secret", "previous_client_secret"} {
			if s, _ := d[k].(string); s != "" {
				if _, ok := m[s]; !ok {
					n++
					m[s] = "N" + strconv.Itoa(n)
				}
			}
		}
	}
	return m
}

func (e *memHarness) labels(secrets []string) []string {
	m := e.names()
	out := make([]string, 0, len(secrets))
	for _, s := range secrets {
		l, ok := m[s]
		if !ok {
			l = "X(never recorded)"
		}
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

// requests renders Affix's request history as "STATUS[N1,S0]" (0: no answer).
func (e *memHarness) requests() []string {
	m := e.names()
	var out []string
	for _, r := range e.fake.Requests() {
		parts := make([]string, 0, len(r.ClientSecret))
		for _, s := range r.ClientSecret {
			l, ok := m[s]
			if !ok {
				l = "X"
			}
			parts = append(parts, l)
		}
		out = append(out, strconv.Itoa(r.Status)+"["+strings.Join(parts, ",")+"]")
	}
	return out
}

// stagedCount is how many distinct secrets were ever written as pending:
// the number of rotations started.
func (e *memHarness) stagedCount() int {
	seen := map[string]bool{}
	for _, d := range e.store.History(e.path) {
		if s, _ := d["pending_client_secret"].(string); s != "" {
			seen[s] = true
		}
	}
	return len(seen)
}

// implied is the set Affix must accept given the record (DESIGN.md §4,
// repair); ok is false in phase staged (resume, no single set).
func implied(rec map[string]any) (set []string, ok bool) {
	switch str(rec, "phase") {
	case "", "stable":
		return []string{str(rec, "client_secret")}, true
	case "overlap":
		return []string{str(rec, "client_secret"), str(rec, "previous_client_secret")}, true
	}
	return nil, false
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// phaseOf is the record's phase ("stable" when absent, as Decode reads it).
func phaseOf(rec map[string]any) string {
	if p := str(rec, "phase"); p != "" {
		return p
	}
	return "stable"
}

// violations checks I1 and I2 at this instant.
func (e *memHarness) violations() []string {
	rec := e.record()
	got := e.fake.Secrets(e.key)
	phase := phaseOf(rec)
	var out []string
	cur := str(rec, "client_secret")
	if cur != "" && !e.fake.Accepts(e.key, cur) {
		out = append(out, fmt.Sprintf("I1 violated: Vault's client_secret %v is not accepted by Affix, which accepts %v (phase %q): consumers are locked out",
			e.labels([]string{cur}), e.labels(got), phase))
	}
	for _, s := range got {
		if s != cur && s != str(rec, "previous_client_secret") && s != str(rec, "pending_client_secret") {
			out = append(out, fmt.Sprintf("I2 violated: Affix accepts %v, which the record (phase %q) does not hold: nothing will ever drop it",
				e.labels([]string{s}), phase))
		}
	}
	return out
}

// mismatch says how Affix's accepted set differs from the one the record
// implies ("" if it matches, or the record is staged).
func (e *memHarness) mismatch() string {
	rec := e.record()
	want, ok := implied(rec)
	got := e.fake.Secrets(e.key)
	if !ok || sameSet(want, got) {
		return ""
	}
	return fmt.Sprintf("Affix accepts %v, but the record (phase %q) implies %v", e.labels(got), phaseOf(rec), e.labels(want))
}

// quiet waits until every running process sleeps on the fake clock (or is
// held by the test) and no I/O call has begun or ended for a while.
func (e *memHarness) quiet() {
	e.t.Helper()
	for {
		if e.ctx.Err() != nil {
			e.t.Fatalf("processes never went quiet; requests so far %v", e.requests())
		}
		want := int(e.running.Load() - e.paused.Load())
		bctx, cancel := context.WithTimeout(e.ctx, 100*time.Millisecond)
		err := e.clock.BlockUntilContext(bctx, want)
		cancel()
		if err != nil {
			continue
		}
		n := e.ios.Load()
		time.Sleep(15 * time.Millisecond)
		if e.inflight.Load() != 0 || e.ios.Load() != n || int(e.running.Load()-e.paused.Load()) != want {
			continue
		}
		bctx, cancel = context.WithTimeout(e.ctx, 5*time.Millisecond)
		err = e.clock.BlockUntilContext(bctx, want)
		cancel()
		if err == nil {
			return
		}
	}
}

// drive advances the clock by step whenever every process is quiet, until
// cond holds (true) or limit of fake time has passed (false).
func (e *memHarness) drive(step, limit time.Duration, cond func() bool) bool {
	e.t.Helper()
	end := e.clock.Now().Add(limit)
	for {
		e.quiet()
		if cond() {
			return true
		}
		if !e.clock.Now().Before(end) {
			return false
		}
		e.tick(step)
	}
}

// advance moves the clock once the processes are quiet, and waits for them
// to be quiet again.
func (e *memHarness) advance(d time.Duration) {
	e.t.Helper()
	e.quiet()
	e.tick(d)
	e.quiet()
}

// tick advances the clock by d.
func (e *memHarness) tick(d time.Duration) {
	e.nowNanos.Store(e.clock.Now().Add(d).UnixNano())
	e.clock.Advance(d)
}

// lockFreeClock is the fake clock with a Now that takes no lock, like
// time.Now. (FakeClock.Now takes a read lock that its timers' writes
// release: that orders goroutines that do nothing to order themselves, and
// hides their races from the race detector.) Only tick may move the clock.
type lockFreeClock struct {
	*clockwork.FakeClock
	now *atomic.Int64
}

func (c lockFreeClock) Now() time.Time                  { return time.Unix(0, c.now.Load()).UTC() }
func (c lockFreeClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c lockFreeClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }

func (e *memHarness) begin() { e.inflight.Add(1); e.ios.Add(1) }
func (e *memHarness) end()   { e.inflight.Add(-1); e.ios.Add(1) }

// memRun is one Rotate or Run call in its own goroutine.
type memRun struct {
	done chan struct{}
	out  rotator.Outcome
	err  error
}

func (r *memRun) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// String describes the run's outcome so far, for messages.
func (r *memRun) String() string {
	if !r.finished() {
		return "still running"
	}
	return fmt.Sprintf("returned %+v, error %v", r.out, r.err)
}

func (e *memHarness) wait(r *memRun) {
	e.t.Helper()
	select {
	case <-r.done:
	case <-e.ctx.Done():
		e.t.Fatalf("process did not return; requests so far %v", e.requests())
	}
}

func (e *memHarness) spawn(p *memProc, goroutines int32, fn func(ctx context.Context, r *memRun)) *memRun {
	ctx, cancel := context.WithCancel(e.ctx)
	p.mu.Lock()
	p.cancel = cancel
	p.mu.Unlock()
	run := &memRun{done: make(chan struct{})}
	e.mu.Lock()
	e.runs = append(e.runs, run)
	e.mu.Unlock()
	e.running.Add(goroutines)
	go func() {
		defer close(run.done)
		defer e.running.Add(-goroutines)
		fn(ctx, run)
	}()
	return run
}

// rotate runs r.Rotate(c, trig) as process p.
func (e *memHarness) rotate(p *memProc, r *rotator.Rotator, c *rotator.Client, trig rotator.Trigger) *memRun {
	return e.spawn(p, 1, func(ctx context.Context, run *memRun) { run.out, run.err = r.Rotate(ctx, c, trig) })
}

// daemon runs r.Run(clients) as process p.
func (e *memHarness) daemon(p *memProc, r *rotator.Rotator, clients ...*rotator.Client) *memRun {
	return e.spawn(p, int32(len(clients)), func(ctx context.Context, _ *memRun) { r.Run(ctx, clients) })
}

// memProc is one rotator process; its Store and Affix go through hooks.
type memProc struct {
	e      *memHarness
	id     string
	mu     sync.Mutex
	hooks  []*ioHook
	cancel context.CancelFunc
	dead   atomic.Bool
	// loseAnswer, if set, is asked after each successful write: true
	// returns an error to the process although the write was applied.
	loseAnswer func(vault.Record) bool
	// failWrite, if set, is asked before each write: true fails it with
	// Vault unavailable, and nothing is written.
	failWrite func(vault.Record) bool
}

type ioCall struct {
	op      string       // read, write, post
	rec     vault.Record // write: what is written
	secrets []string     // post: what is sent
}

type ioHook struct {
	after      bool
	match      func(ioCall) bool
	action     func()
	answerLost bool // post: apply the request, but the process gets no answer
	fired      bool
}

// proc is a process called id (its instance id).
func (e *memHarness) proc(id string) *memProc { return &memProc{e: e, id: id} }

// rotator is the process's rotator, on its hooked store.
func (p *memProc) rotator(mod func(*rotator.Options)) *rotator.Rotator {
	return rotator.New(p.e.options(p.id, (*memStore)(p), mod))
}

// client is the fixture's client, @every 720h, on the hooked Affix.
func (p *memProc) client() *rotator.Client { return p.e.newClient("@every 720h", (*memAffix)(p)) }

// stop ends the process cleanly (SIGTERM, or -once interrupted).
func (p *memProc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cancel != nil {
		p.cancel()
	}
}

// kill ends the process abruptly: no further I/O call of it reaches
// anything (SIGKILL).
func (p *memProc) kill() {
	p.dead.Store(true)
	p.stop()
}

func (p *memProc) hook(h *ioHook) {
	p.mu.Lock()
	p.hooks = append(p.hooks, h)
	p.mu.Unlock()
}

// fire runs the hooks matching c, once each; it reports whether one held
// the call and whether its answer is to be lost.
func (p *memProc) fire(c ioCall, after bool) (held, answerLost bool) {
	p.mu.Lock()
	var hs []*ioHook
	for _, h := range p.hooks {
		if !h.fired && h.after == after && h.match(c) {
			h.fired = true
			hs = append(hs, h)
		}
	}
	p.mu.Unlock()
	for _, h := range hs {
		h.action()
		held = true
		answerLost = answerLost || h.answerLost
	}
	return held, answerLost
}

// memPause holds a process at an I/O call until resumed.
type memPause struct {
	e       *memHarness
	reached chan struct{}
	release chan struct{}
}

// pauseBefore holds p just before the first call matching match reaches
// Vault or Affix. For a post, the request is then sent when resumed, even if
// the process's context has ended meanwhile (it was already on its way:
// a frozen VM, a proxy queue); with answerLost the process gets no answer.
func (p *memProc) pauseBefore(match func(ioCall) bool, answerLost bool) *memPause {
	pp := &memPause{e: p.e, reached: make(chan struct{}), release: make(chan struct{})}
	p.hook(&ioHook{match: match, answerLost: answerLost, action: func() {
		p.e.paused.Add(1)
		defer p.e.paused.Add(-1)
		close(pp.reached)
		select {
		case <-pp.release:
		case <-p.e.ctx.Done():
		}
	}})
	return pp
}

func (pp *memPause) await() {
	pp.e.t.Helper()
	select {
	case <-pp.reached:
	case <-pp.e.ctx.Done():
		pp.e.t.Fatalf("process never reached the pause point; requests %v", pp.e.requests())
	}
}

func (pp *memPause) resume() { close(pp.release) }

func (pp *memPause) isReached() bool {
	select {
	case <-pp.reached:
		return true
	default:
		return false
	}
}

func isPost(n int) func(ioCall) bool {
	return func(c ioCall) bool { return c.op == "post" && len(c.secrets) == n }
}

type memStore memProc

func (s *memStore) Read(ctx context.Context, path string) (vault.Record, int, error) {
	p := (*memProc)(s)
	c := ioCall{op: "read"}
	p.fire(c, false)
	if p.dead.Load() {
		return vault.Record{}, 0, errInjectedKill
	}
	p.e.begin()
	rec, v, err := p.e.store.Read(ctx, path)
	p.e.end()
	p.fire(c, true)
	return rec, v, err
}

func (s *memStore) Write(ctx context.Context, path string, r vault.Record, cas int) (int, error) {
	v, _, err := s.WriteClaimed(ctx, path, r, cas)
	return v, err
}

// WriteClaimed is Write answered with the reconcile claim (claim.go).
func (s *memStore) WriteClaimed(ctx context.Context, path string, r vault.Record, cas int) (int, []vault.Claim, error) {
	p := (*memProc)(s)
	c := ioCall{op: "write", rec: r}
	p.fire(c, false)
	if p.dead.Load() {
		return 0, nil, errInjectedKill
	}
	if p.failWrite != nil && p.failWrite(r) {
		return 0, nil, fmt.Errorf("vault: write secret/%s: %w: 503 (injected; nothing written)", path, vault.ErrUnavailable)
	}
	p.e.begin()
	v, claims, err := p.e.store.WriteClaimed(ctx, path, r, cas)
	p.e.end()
	p.fire(c, true)
	if err == nil && p.loseAnswer != nil && p.loseAnswer(r) {
		return 0, nil, fmt.Errorf("vault: write secret/%s: %w: connection reset before the answer (injected; the write was applied)", path, vault.ErrUnavailable)
	}
	return v, claims, err
}

// Claim records a reconcile claim in the record's metadata (op "claim").
func (s *memStore) Claim(ctx context.Context, path string, cl vault.Claim, drop []string) error {
	p := (*memProc)(s)
	c := ioCall{op: "claim"}
	p.fire(c, false)
	if p.dead.Load() {
		return errInjectedKill
	}
	p.e.begin()
	err := p.e.store.Claim(ctx, path, cl, drop)
	p.e.end()
	p.fire(c, true)
	return err
}

type memAffix memProc

func (a *memAffix) UpdateClient(ctx context.Context, req affix.UpdateRequest) (*affix.UpdateResponse, error) {
	p := (*memProc)(a)
	c := ioCall{op: "post"}
	for _, s := range req.ClientSecret {
		c.secrets = append(c.secrets, s.Reveal())
	}
	held, lost := p.fire(c, false)
	if p.dead.Load() {
		return nil, fmt.Errorf("%w: %v", affix.ErrNotSent, errInjectedKill)
	}
	p.e.begin()
	var resp *affix.UpdateResponse
	var err error
	switch {
	case held && (lost || ctx.Err() != nil):
		// The request left before the pause: Affix applies it now,
		// whatever became of the process that sent it.
		_, _ = p.e.api.UpdateClient(context.Background(), req)
		if ctx.Err() == nil {
			// ...and the answer is lost on the way back.
			p.e.fake.Inject(affixtest.Fault{Drop: true})
		}
		resp, err = p.e.api.UpdateClient(ctx, req)
	default:
		resp, err = p.e.api.UpdateClient(ctx, req)
	}
	p.e.end()
	p.fire(c, true)
	return resp, err
}

// ReadVersion reads an earlier version for -reaccept-previous, through the
// same hooks as Read.
func (s *memStore) ReadVersion(ctx context.Context, path string, version int) (vault.Record, error) {
	p := (*memProc)(s)
	if p.dead.Load() {
		return vault.Record{}, errInjectedKill
	}
	p.e.begin()
	defer p.e.end()
	return p.e.store.ReadVersion(ctx, path, version)
}

// ---------------------------------------------------------------------------
// memHarness: record edits and scenarios that tests in several files share.

// setRotatedAt sets the record's rotated_at (the schedule's anchor) by
// hand, as an operator would.
func (e *memHarness) setRotatedAt(t time.Time) {
	e.t.Helper()
	rec := e.record()
	rec["rotated_at"] = t.UTC().Format(time.RFC3339Nano)
	e.put(rec)
}

// leaseHeld says whether the record still names owner as an unexpired lease holder.
func (e *memHarness) leaseHeld(owner string) bool {
	rec := e.record()
	return str(rec, "lease_owner") == owner && e.clock.Now().Before(e.recordTime("lease_until"))
}

// retired drives the clock (1s steps, for up to limit) until Affix no
// longer accepts secret s, failing the test at any I1 or I2 violation on
// the way; it returns when s stopped being accepted (zero if it still is).
func (e *memHarness) retired(s string, limit time.Duration) time.Time {
	e.t.Helper()
	var retired time.Time
	e.drive(time.Second, limit, func() bool {
		if retired.IsZero() && !e.fake.Accepts(e.key, s) {
			retired = e.clock.Now()
		}
		if v := e.violations(); len(v) > 0 {
			e.t.Fatalf("%v; requests %v", v, e.requests())
		}
		return !retired.IsZero()
	})
	return retired
}

// operatorAudit is the audit of an operator's action in a test.
var operatorAudit = rotator.Audit{By: "alice", Reason: "adversary test"}

// reacceptPrevious runs -reaccept-previous d as an operator's process
// (its options adjusted by mod) and fails the test unless it succeeds.
func (e *memHarness) reacceptPrevious(d time.Duration, mod func(*rotator.Options)) {
	e.t.Helper()
	x := e.proc("host/reaccept-previous-1")
	rx := x.rotator(mod)
	runX := e.spawn(x, 1, func(ctx context.Context, r *memRun) {
		_, r.err = rx.ReacceptPrevious(ctx, x.client(), d, operatorAudit)
	})
	e.wait(runX)
	if runX.err != nil {
		e.t.Fatalf("setup: reaccept-previous: %v", runX.err)
	}
}

// completeRotation runs one full rotation S0 -> N1 with a -once process
// and returns when the record is stable on N1.
func completeRotation(t *testing.T, e *memHarness) {
	t.Helper()
	a := e.proc("host/once-setup")
	run := e.rotate(a, a.rotator(nil), a.client(), e.once())
	e.drive(time.Second, 10*time.Minute, run.finished)
	if !run.finished() || run.err != nil || run.out.Result != rotator.ResultSuccess {
		t.Fatalf("setup rotation: %v", run)
	}
}

// inOverlap starts a rotation of grace g by process id and waits until its
// new secret is current; it returns the process, its run and that secret.
func (e *memHarness) inOverlap(id string, g time.Duration) (*memProc, *memRun, string) {
	e.t.Helper()
	d := e.proc(id)
	c := d.client()
	c.GracePeriod = g
	run := e.rotate(d, d.rotator(nil), c, rotator.Trigger{Reason: rotator.ReasonSchedule, Time: e.clock.Now()})
	if !e.drive(time.Second, time.Minute, func() bool { return phaseOf(e.record()) == "overlap" }) {
		e.t.Fatalf("no overlap within 1m; requests %v", e.requests())
	}
	e.advance(time.Second) // what follows comes after the staging
	return d, run, str(e.record(), "client_secret")
}
