package rotator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
	"github.com/affix-rotator/affix-rotator/vault/vaultmem"
)

var (
	simN    = flag.Int("sim.n", simDefaultN, "seeds the simulation runs (go test ./rotator -run TestSimulation -sim.n=10000)")
	simFrom = flag.Int("sim.from", 1, "first seed of the run, to split a long run into shards (-sim.from=50001 -sim.n=50000)")
	simSeed = flag.Uint64("sim.seed", 0, "run only this seed (as printed by a failure)")
	simSkip = flag.String("sim.skip", "", "comma-separated check classes to switch off, to look past a known bug: "+strings.Join(simClasses, ","))
	simAll  = flag.Bool("sim.all", false, "run every seed and list each failing one (class and message) instead of stopping at the first")
)

// simClasses are the classes of checks; every violation message starts with
// its class in brackets.
var simClasses = []string{"fresh", "drift", "grace", "fork", "lease", "floor", "anchor", "schedule", "lost-answer", "final"}

// Simulation constants: the rotator's options and the bounds checked.
const (
	simPath           = "affix/sim"
	simLease          = time.Minute
	simRequestTimeout = 2 * time.Second
	simRetryMax       = 8 * time.Second
	// simReconcile is rotation.reconcile_interval and simMargin
	// rotation.clock_skew_margin (passed to the rotator only by
	// simNewAPI, after the core merge; the drift bound uses simReconcile
	// already).
	simReconcile = 10 * time.Minute
	simMargin    = 30 * time.Second
	// simMaxSkew bounds each host's wall-clock offset from true time (so
	// two hosts differ by at most 24s < simMargin), until a host's clock
	// steps back (NTP), which makes its grace end later, but it then holds
	// its leases longer, and the 429 floors it records end earlier, than
	// the others expect (see the [floor] check).
	simMaxSkew = 12 * time.Second
	// simDriftBound: an I1/I2 violation begun by a stale request must end
	// within this much time during which repair is possible (a healthy
	// daemon live and not paused, no outage of Affix or Vault, no 429
	// floor, the record not deleted): one reconcile interval plus a lease
	// and some retries.
	simDriftBound = simReconcile + 5*time.Minute
	// simAnchorSlack: a daemon live and unpaused for this long, with the
	// record stable and due (schedule.Next(rotated_at) + jitter, or the
	// daemon's start without rotated_at), has started a rotation.
	simAnchorSlack = 20 * time.Minute
	// simFinalSlack: in the final fault-free period, a rotation in flight
	// completes within this plus a lease after max(start, a 429 floor
	// still in force, grace_until + margin) (overlap), or after
	// max(start, floor) + lease + grace + margin (staged).
	simFinalSlack = 5 * time.Minute
)

// TestSimulation runs the real rotator — daemons (Run, with distinct and
// with equal instance ids) and -once runs (Rotate) living at the same time,
// each with its own wall-clock skew — against the Affix fake and an
// in-memory KV v2 store, on one deterministic scheduler inside a
// testing/synctest bubble (fake time). Every I/O call of every process
// (Vault read, Vault write, Affix POST) parks at a gate; when every process
// is parked or asleep (synctest.Wait) the scheduler either runs a due event
// (a kill, a clean stop, a restart, a pause, an operator's edit, an outage
// beginning or ending, a late Affix request landing) or picks one parked
// call with the seeded rng (processes sorted by id) and applies it — maybe
// with a fault, maybe holding its answer, maybe pausing the process before
// or after — or, when nothing is parked, lets fake time run to the next
// timer or event. A seed replays exactly.
//
// A paused process is simply not served while time runs and others act;
// its request deadlines freeze with it (Go's timers run on the monotonic
// clock, which stops in a VM freeze), so a request parked before the pause
// is sent after it: a stale request. A late request is sent, answered with
// a reset or left to time out, and applied by Affix up to 15 minutes later.
// A lost Vault answer is a write applied whose caller gets an error.
//
// After every step (and at least every simulated minute) it checks, each
// violation message starting with its class (-sim.skip looks past one):
//   - [fresh] I1 (Vault's client_secret accepted by Affix) and I2 (every
//     secret Affix accepts is the record's current, previous or pending):
//     a violation may begin only from a stale landing — the request that
//     last dropped the current secret (I1) or last added the unrecorded
//     one (I2) was sent by a process whose lease had expired when it
//     landed, or whose rotation had moved on (phase or rotation id), or
//     whose namesake (same instance id) wrote the record since it read
//     it, or Affix changed its set itself; any other is a bug at once.
//   - [drift] bounded drift: once begun, an I1/I2 violation ends before
//     some daemon has been live, unpaused and unhindered (no Affix or
//     Vault outage, no 429 floor, record not deleted) for simDriftBound =
//     reconcile_interval + 5m.
//   - [grace] I3: a request dropping the previous secret lands no earlier
//     than the grace_until its sender last read, plus clock_skew_margin if
//     it took over an overlap another instance started (by its clock); and
//     the consumers get the grace in true time: the whole grace less 1s
//     (the writer of the overlap), less how late the overlap write landed
//     and any skew beyond the margin (another process).
//   - [fork] I4/I6: one pending secret per rotation id; no new secret
//     written over a staged or overlap record.
//   - [lease] a process stopped cleanly (ctx cancelled) holding the lease
//     it wrote tries to release it (a Vault call after the stop) unless a
//     namesake is live.
//   - [floor] no process sends an Affix request inside another's 429
//     Retry-After (from 5s after it, to its end less the hosts' skew,
//     a stepped-back clock's included), unless its receiver could not
//     record it (paused, killed, its Vault write failed), an operator
//     edited the lease, or the sender acted on a version from before the
//     floor was recorded under a lease that was no fence (a namesake's,
//     or one held only by a stepped-back clock).
//   - [anchor] a daemon live and unpaused, nothing blocking, starts a due
//     rotation (schedule.Next(rotated_at) or rotated_at + max_age, plus
//     jitter; its own start when there is no rotated_at) within
//     simAnchorSlack; [schedule] (TestSimulationRestarts) a rotation
//     completes at least every interval + jitter + grace + margin + slack.
//   - [lost-answer] a -once run whose final or abort write landed (its
//     answer maybe lost) reports success (not ByOther, counted in
//     rotations_total) or aborted, and never stages another secret, unless
//     another writer moved the record since.
//   - [final] after the faults stop (every process killed, late requests
//     landed, outages over), one daemon finishes the rotation in flight
//     within simFinalSlack + a lease after max(start, 429 floor,
//     grace_until + margin) (overlap) or after max(start, floor) + lease +
//     grace + margin (staged), and after max(that, reconcile bound + 5m)
//     Affix accepts exactly {current} (stable) or {current, previous}
//     (overlap).
func TestSimulation(t *testing.T) {
	seeds := make([]uint64, 0, *simN)
	if *simSeed != 0 {
		seeds = append(seeds, *simSeed)
	} else {
		for i := *simFrom; i < *simFrom+*simN; i++ {
			seeds = append(seeds, uint64(i))
		}
	}
	skip := simSkips(t)
	events := map[string]int{}
	start := time.Now()
	var failed []string
	for i, seed := range seeds {
		if *simAll && i > 0 && i%1000 == 0 {
			t.Logf("%d seeds played in %s, %d failed", i, time.Since(start).Round(time.Second), len(failed))
		}
		w, err := simulate(t, seed, skip, "chaos")
		for k, v := range w.events {
			events[k] += v
		}
		if err == nil {
			continue
		}
		replay := fmt.Sprintf("go test ./rotator -run 'TestSimulation$' -sim.seed=%d", seed)
		if *simSkip != "" {
			replay += " -sim.skip=" + *simSkip
		}
		if *simAll {
			failed = append(failed, fmt.Sprintf("seed %d: %v", seed, err))
			t.Logf("seed %d: %v", seed, err) // at once, for a long run's log
			continue
		}
		t.Fatalf("seed %d: %v\n%s\nlast events:\n  %s\nrequests: %v\nreplay: %s -v (SIM_DEBUG=1 for the rotator's logs)",
			seed, err, w.describe(), strings.Join(w.trail, "\n  "), w.requests(), replay)
	}
	var kinds []string
	for k, v := range events {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(kinds)
	t.Logf("simulation: %d seeds in %s, %d violations; events: %s", len(seeds), time.Since(start).Round(time.Millisecond), len(failed), strings.Join(kinds, " "))
	if len(failed) > 0 {
		t.Errorf("%d of %d seeds failed:\n%s", len(failed), len(seeds), strings.Join(failed, "\n"))
	}
}

func simSkips(t *testing.T) map[string]bool {
	skip := map[string]bool{}
	for _, c := range strings.Split(*simSkip, ",") {
		if c = strings.TrimSpace(c); c != "" {
			if !slices.Contains(simClasses, c) {
				t.Fatalf("-sim.skip: unknown class %q (want some of %s)", c, strings.Join(simClasses, ","))
			}
			skip[c] = true
		}
	}
	return skip
}

// TestSimulationRestarts: with `@every 2h` and the one daemon restarted
// every 25-35 minutes (and no other fault), rotations still happen about
// every 2h: the schedule is anchored on the record's rotated_at, not on the
// process's start.
func TestSimulationRestarts(t *testing.T) {
	n := max(1, *simN/25)
	for seed := uint64(1); seed <= uint64(n); seed++ {
		if *simSeed != 0 && seed != *simSeed {
			continue
		}
		w, err := simulate(t, seed, simSkips(t), "restarts")
		if err != nil {
			t.Fatalf("seed %d: %v\n%s\nlast events:\n  %s\nreplay: go test ./rotator -run 'TestSimulationRestarts$' -sim.seed=%d -sim.skip=%s -v",
				seed, err, w.describe(), strings.Join(w.trail, "\n  "), seed, *simSkip)
		}
	}
}

// TestSimulationDeterministic runs a few seeds twice, every check off so
// that they run to the end, and compares their event trails (every event
// with its fake time): a seed must replay exactly.
func TestSimulationDeterministic(t *testing.T) {
	off := map[string]bool{}
	for _, c := range simClasses {
		off[c] = true
	}
	for _, seed := range []uint64{3, 7, 11} {
		a, errA := simulate(t, seed, off, "chaos")
		b, errB := simulate(t, seed, off, "chaos")
		if fmt.Sprint(errA) != fmt.Sprint(errB) || a.steps != b.steps || strings.Join(a.all, "\n") != strings.Join(b.all, "\n") {
			t.Fatalf("seed %d does not replay: %d vs %d steps, %v vs %v", seed, a.steps, b.steps, errA, errB)
		}
	}
}

// simulate runs one seed in its own synctest bubble.
// It reports through its return values, never through t.
func simulate(t *testing.T, seed uint64, skip map[string]bool, scenario string) (*world, error) {
	var w *world
	var err error
	synctest.Test(t, func(*testing.T) {
		w = newWorld(seed, skip, scenario)
		err = w.run()
	})
	return w, err
}

// --- the world ---

type world struct {
	nextAction  string    // the operator action of the next process started (kind action)
	notStableAt time.Time // the last time the record was seen not stable (anchor check)
	// scenario is "chaos" (every fault) or "restarts" (one daemon,
	// restarted every 25-35 minutes, no other fault).
	scenario string
	seed     uint64
	rng      *rand.Rand
	skip     map[string]bool
	skipped  map[string]bool
	margin   time.Duration // the clock_skew_margin in force (simNewAPI)
	cfg      simConfig
	store    *vaultmem.Store
	fake     *affixtest.Server
	key      string
	s0       string
	t0       time.Time

	mu    sync.Mutex // guards proc.call and call fields shared with process goroutines
	wake  chan struct{}
	procs []*proc
	hosts map[string]*host
	pids  int
	onces int

	queue   []*simEvent // pending events, by time then sequence
	seq     int
	steps   int
	faulty  bool
	final   bool
	finalAt time.Time
	endAt   time.Time

	// faults in force
	affix401Until, vaultDownUntil, floorUntil time.Time
	lastBlocked                               time.Time
	deletedData                               map[int]map[string]any // version -> its data, soft-deleted by the operator

	// tracking for the checks
	labels      map[string]string
	pendingOf   map[string]string // rotation id -> pending secret
	overlapAt   map[string]overlapInfo
	floors      []*floor
	lastReq     affixtest.Request
	preSet      []string         // Affix's set before the request being handled
	roots       map[string]*root // "add:"/"drop:" + secret -> the landing that last did it
	driftOpen   bool
	driftSince  time.Time
	driftCause  string
	finalFrom   string // phase when the final period began
	finalDue    time.Time
	finalStable bool
	lastDone    time.Time   // true time the last rotation completed (or the seeded rotated_at)
	verWriter   map[int]int // record version -> pid of the process that wrote it (0: an operator)
	leaseBy     int         // pid of the process whose write set the record's current lease (0: none, or an operator)

	events map[string]int
	trail  []string // the last events, for a failure
	all    []string // every event, for the determinism test
	viol   error
}

type simConfig struct {
	spec     string
	sched    cron.Schedule
	interval time.Duration
	grace    time.Duration
	jitter   time.Duration
	maxAge   time.Duration
	faultFor time.Duration
}

// host is a machine's wall clock: skew is its offset from true time now;
// initial, its offset before any step back (its largest: the clock only
// ever steps back), which the checks use where an earlier reading would
// make them stricter than the process could know.
type host struct {
	name    string
	skew    atomic.Int64
	initial time.Duration
}

type overlapInfo struct {
	at   time.Time // true time the overlap write landed
	id   string    // instance id of its writer
	pid  int
	skew time.Duration
	// late is how much later the write landed than the writer's clock
	// reading its grace_until counts from (true time).
	late time.Duration
	lost bool // the write's answer was lost
}

// floor is a 429's Retry-After that from received at at.
type floor struct {
	from   *proc
	at     time.Time
	until  time.Time
	wrote  bool // from's first Vault write since (where it records the floor) happened
	ver    int  // the version that write made, when it succeeded
	exempt bool // from could not record it (paused, killed, its write failed) or the lease was edited
	// skew is from's clock offset when it got the 429: the floor it
	// records (its clock reading plus Retry-After) ends that much off true
	// time for everyone who reads it.
	skew time.Duration
}

// root is the Affix request landing that last added or dropped a secret:
// an I1/I2 violation may begin only from a stale one (or from Affix
// changing its set itself).
type root struct {
	at    time.Time
	cause string
	stale bool
}

type simEvent struct {
	at   time.Time
	seq  int
	name string
	fn   func()
}

func newWorld(seed uint64, skip map[string]bool, scenario string) *world {
	w := &world{seed: seed, scenario: scenario, skipped: map[string]bool{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), skip: skip,
		store: vaultmem.New("secret"), key: "sim-api-key", wake: make(chan struct{}, 1), hosts: map[string]*host{},
		labels: map[string]string{}, roots: map[string]*root{}, deletedData: map[int]map[string]any{}, verWriter: map[int]int{}, pendingOf: map[string]string{}, overlapAt: map[string]overlapInfo{}, events: map[string]int{}}
	w.t0 = time.Now()
	w.lastBlocked = w.t0
	specs := []struct {
		spec string
		d    time.Duration
	}{{"@every 30m", 30 * time.Minute}, {"@every 1h", time.Hour}, {"@every 2h", 2 * time.Hour}}
	sp := specs[w.rng.IntN(len(specs))]
	w.cfg.spec, w.cfg.interval = sp.spec, sp.d
	w.cfg.sched, _ = cron.ParseStandard(sp.spec)
	w.cfg.grace = time.Duration(1+w.rng.IntN(int(sp.d/time.Minute)/3)) * time.Minute
	if w.rng.IntN(2) == 0 {
		w.cfg.jitter = time.Duration(w.rng.Int64N(int64(sp.d / 6)))
	}
	if w.rng.IntN(3) == 0 {
		w.cfg.maxAge = sp.d + sp.d/2
	}
	w.cfg.faultFor = time.Duration(4+w.rng.IntN(5)) * time.Hour
	if scenario == "restarts" {
		sp = specs[2]
		w.cfg.spec, w.cfg.interval, w.cfg.sched = sp.spec, sp.d, cron.Every(sp.d)
		w.cfg.grace, w.cfg.maxAge, w.cfg.faultFor = 10*time.Minute, 0, 10*time.Hour
	}
	w.fake = affixtest.NewHandler()
	w.fake.SetClock(time.Now)
	w.fake.OnRequest(func(r affixtest.Request) { w.lastReq = r })
	w.s0 = "s0-" + strconv.FormatUint(seed, 36) + "-aaaaaaaaaaaaaaaaaaaaaaaa"
	w.label(w.s0)
	w.fake.AddClient(w.key, "cid", w.s0)
	seedRec := map[string]any{"client_secret": w.s0}
	if w.rng.IntN(2) == 0 || scenario == "restarts" {
		seedRec["rotated_at"] = w.t0.Add(-time.Duration(w.rng.Int64N(int64(sp.d)))).UTC().Format(time.RFC3339Nano)
	}
	if _, err := w.store.Put(simPath, seedRec, 0); err != nil {
		panic(err)
	}
	for _, h := range []string{"pod-a", "pod-b", "ops"} {
		w.hosts[h] = &host{name: h}
		w.hosts[h].initial = time.Duration(w.rng.Int64N(int64(2*simMaxSkew+1))) - simMaxSkew
		w.hosts[h].skew.Store(int64(w.hosts[h].initial))
	}
	return w
}

func (w *world) label(s string) string {
	if s == "" {
		return "-"
	}
	if l, ok := w.labels[s]; ok {
		return l
	}
	l := "N" + strconv.Itoa(len(w.labels))
	if len(w.labels) == 0 {
		l = "S0"
	}
	w.labels[s] = l
	return l
}

// event counts kind and logs it with its detail in the trail.
func (w *world) event(kind string, detail ...any) {
	w.events[kind]++
	line := w.since(time.Now()) + " " + kind
	if len(detail) > 0 {
		line += " " + fmt.Sprint(detail...)
	}
	w.all = append(w.all, line)
	w.trail = append(w.trail, line)
	if len(w.trail) > 60 {
		w.trail = w.trail[1:]
	}
}

func (w *world) since(t time.Time) string {
	return "t+" + t.Sub(w.t0).Round(time.Millisecond).String()
}

func (w *world) violate(class, format string, args ...any) {
	if w.viol != nil {
		return
	}
	if os.Getenv("SIM_HISTORY") != "" { // the last record versions, for a replay
		h := w.store.History(simPath)
		for v := max(0, len(h)-8); v < len(h); v++ {
			d := h[v]
			fmt.Printf("v%d writer=%d phase=%s rid=%s grace_until=%s grace_by=%s lease=%s last_action=%s\n", v+1, w.verWriter[v+1], str(d, "phase"), str(d, "rotation_id"), str(d, "grace_until"), str(d, "grace_by"), str(d, "lease_owner"), str(d, "last_action"))
		}
	}
	if w.skip[class] {
		if !w.skipped[class] {
			w.skipped[class] = true
			w.event("skipped-"+class, fmt.Sprintf(format, args...))
		}
		return
	}
	w.viol = fmt.Errorf("[%s] at %s: %s", class, w.since(time.Now()), fmt.Sprintf(format, args...))
}

func (w *world) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// at schedules fn at t.
func (w *world) at(t time.Time, name string, fn func()) {
	w.seq++
	e := &simEvent{at: t, seq: w.seq, name: name, fn: fn}
	i := sort.Search(len(w.queue), func(i int) bool {
		q := w.queue[i]
		return q.at.After(t) || (q.at.Equal(t) && q.seq > e.seq)
	})
	w.queue = slices.Insert(w.queue, i, e)
}

func (w *world) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)+1))
}

// run plays the seed: a faulty period with several processes, then a
// fault-free one with one healthy daemon, checking after every step.
func (w *world) run() error {
	defer w.shutdown()
	d0, _, _ := w.store.Latest(simPath)
	w.lastDone = tm(d0, "rotated_at")
	w.startProc("daemon", "pod-a")
	if w.scenario == "restarts" {
		w.at(w.t0.Add(w.dur(25*time.Minute, 35*time.Minute)), "restart", w.restartLoop)
	} else {
		w.faulty = true
		if w.rng.IntN(2) == 0 {
			w.startProc("daemon", "pod-b")
		}
		if w.rng.IntN(3) == 0 {
			w.startProc("once", "")
		}
		w.at(w.t0.Add(w.dur(time.Minute, 10*time.Minute)), "chaos", w.chaos)
	}
	w.at(w.t0.Add(w.cfg.faultFor), "calm", w.calm)
	for w.viol == nil {
		synctest.Wait()
		w.steps++
		now := time.Now()
		w.reap(now)
		w.check(now, "time")
		if w.viol != nil {
			break
		}
		if w.final && !now.Before(w.endAt) {
			w.finish(now)
			break
		}
		if len(w.queue) > 0 && !w.queue[0].at.After(now) {
			e := w.queue[0]
			w.queue = w.queue[1:]
			e.fn()
			continue
		}
		if c := w.expired(now); c != nil {
			w.deliver(c, c.ctx.Err(), "")
			continue
		}
		if el := w.eligible(now); len(el) > 0 {
			w.serve(el[w.rng.IntN(len(el))], now)
			continue
		}
		w.advance(now)
	}
	return w.viol
}

// advance lets fake time run until the next event, a pause's end, a minute
// (so that time-based checks run), or a process parks at a gate.
func (w *world) advance(now time.Time) {
	next := now.Add(time.Minute)
	if len(w.queue) > 0 && w.queue[0].at.Before(next) {
		next = w.queue[0].at
	}
	for _, p := range w.procs {
		if !p.exited && p.pauseUntil.After(now) && p.pauseUntil.Before(next) {
			next = p.pauseUntil
		}
	}
	if w.final && w.endAt.Before(next) {
		next = w.endAt
	}
	t := time.NewTimer(next.Sub(now))
	select {
	case <-t.C:
	case <-w.wake:
	}
	t.Stop()
}

// shutdown kills every process and waits for them.
func (w *world) shutdown() {
	for _, p := range w.procs {
		w.kill(p, "")
	}
	for _, p := range w.procs {
		<-p.done
	}
}

// --- processes ---

type proc struct {
	w       *world
	pid     int
	id      string // instance id
	kind    string // daemon | once | action
	action  string // kind action: the operator action it takes
	host    *host
	clock   clockwork.Clock
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	started time.Time
	trig    time.Time
	reg     *prometheus.Registry

	// set by the process goroutine before done is closed
	out rotator.Outcome
	err error

	// scheduler state
	call       *call // guarded by w.mu
	killed     bool  // guarded by w.mu: SIGKILL, every gate refuses
	stopping   bool  // ctx cancelled cleanly (SIGTERM)
	exited     bool
	pauseUntil time.Time
	pausedAt   time.Time // end of the last pause
	seen       *observed // the last record this process read or wrote

	wroteAfterStop bool
	// incident is the grace of a leaked-secret -once (-once -grace), 0 for
	// a plain one; leaked is the secret current when it started.
	incident time.Duration
	leaked   string
	// firstRID is the rotation_id of the first record this process read
	// (firstRead): a -once is satisfied only by a completed rotation with
	// another id.
	firstRID    string
	firstRead   bool
	abortLanded bool
	finalLanded bool
	lostFinal   bool
	lostAbort   bool
	abortVer    int
	finalVer    int
}

func (p *proc) String() string { return fmt.Sprintf("%s#%d(%s)", p.id, p.pid, p.kind) }

type observed struct {
	ver  int
	data map[string]any
}

func (o *observed) str(k string) string {
	if o == nil || o.data == nil {
		return ""
	}
	s, _ := o.data[k].(string)
	return s
}

func (w *world) startProc(kind, id string) *proc {
	w.pids++
	hostName := id
	if kind == "once" || kind == "action" {
		w.onces++
		id = fmt.Sprintf("ops/%s-%d", kind, w.onces)
		hostName = "ops"
	}
	h := w.hosts[hostName]
	p := &proc{w: w, pid: w.pids, id: id, kind: kind, host: h, done: make(chan struct{}), started: time.Now(), reg: prometheus.NewRegistry(), action: w.nextAction}
	w.nextAction = ""
	p.clock = skewClock{clockwork.NewRealClock(), &h.skew}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	opt := rotator.Options{InstanceID: id, Store: (*simStore)(p), Clock: p.clock, Metrics: rotator.NewMetrics(p.reg),
		LeaseDuration: simLease, RetryInitial: time.Second, RetryMax: simRetryMax, RequestTimeout: simRequestTimeout,
		Rand: rand.New(rand.NewPCG(w.rng.Uint64(), uint64(p.pid))), Logger: simLogger(p.String())}
	if kind == "once" || kind == "action" {
		opt.GiveUpAfter = 15 * time.Minute
	}
	w.margin = simNewAPI(&opt)
	r := rotator.New(opt)
	api, err := affix.New("http://affix.sim", secret.New(w.key), affix.WithTimeout(simRequestTimeout),
		affix.WithHTTPClient(&http.Client{Transport: simTransport{p}}))
	if err != nil {
		panic(err)
	}
	c := &rotator.Client{Name: "sim", VaultPath: simPath, Schedule: w.cfg.sched, GracePeriod: w.cfg.grace,
		Jitter: w.cfg.jitter, MaxAge: w.cfg.maxAge, Affix: api}
	trig := rotator.Trigger{Reason: rotator.ReasonOnce}
	if kind == "once" && w.rng.IntN(4) == 0 {
		// The leaked-secret incident: -once -grace D, D up to the grace.
		p.incident = time.Duration(1+w.rng.IntN(max(1, int(w.cfg.grace/time.Minute)))) * time.Minute
		c.GracePeriod = p.incident
		trig.Grace, trig.Audit = p.incident, &rotator.Audit{By: "sim-operator", Reason: "simulated leak"}
		if d, _, deleted := w.store.Latest(simPath); !deleted {
			p.leaked = str(d, "client_secret")
		}
		w.event("incident", p)
	}
	p.trig = p.clock.Now()
	trig.Time = p.trig
	w.procs = append(w.procs, p)
	w.event("start-"+kind, p)
	go func() {
		defer close(p.done)
		if kind == "daemon" {
			r.Run(p.ctx, []*rotator.Client{c})
			return
		}
		if kind == "action" {
			p.runAction(r, c)
			return
		}
		p.out, p.err = r.Rotate(p.ctx, c, trig)
	}()
	return p
}

// runAction takes one operator action (incident response), whatever the
// phase: one that does not fit is refused, which is part of what is tested.
func (p *proc) runAction(r *rotator.Rotator, c *rotator.Client) {
	audit := rotator.Audit{By: "sim-operator", Reason: "simulated incident"}
	switch p.action {
	case rotator.ActionEndGrace:
		p.out, p.err = r.EndGrace(p.ctx, c, audit)
	case rotator.ActionExtendGrace:
		_, p.err = r.ExtendGrace(p.ctx, c, time.Duration(1+p.pid%20)*time.Minute, audit)
	default:
		_, p.err = r.ReacceptPrevious(p.ctx, c, time.Duration(5+p.pid%25)*time.Minute, audit)
	}
}

// startAction starts an operator's incident command (-end-grace,
// -extend-grace, -reaccept-previous), racing whatever runs.
func (w *world) startAction() {
	actions := []string{rotator.ActionEndGrace, rotator.ActionExtendGrace, rotator.ActionReacceptPrevious}
	a := actions[w.rng.IntN(len(actions))]
	w.event("operator-" + a)
	w.nextAction = a
	w.startProc("action", "")
}

// skewSpread is the widest difference between two hosts' clocks now.
func (w *world) skewSpread() time.Duration {
	var lo, hi time.Duration
	first := true
	for _, h := range w.hosts {
		d := time.Duration(h.skew.Load())
		if first || d < lo {
			lo = d
		}
		if first || d > hi {
			hi = d
		}
		first = false
	}
	return hi - lo
}

func (w *world) live() []*proc {
	var out []*proc
	for _, p := range w.procs {
		if !p.exited && !p.killed && !p.stopping {
			out = append(out, p)
		}
	}
	return out
}

// kill is SIGKILL: the process does no more I/O (a call at a gate is
// abandoned: applied or not, as decided already).
func (w *world) kill(p *proc, why string) {
	if p.exited || p.killed {
		return
	}
	w.mu.Lock()
	p.killed = true
	c := p.call
	w.mu.Unlock()
	p.cancel()
	w.exemptFloors(p)
	if c != nil {
		w.release(c, errKilled)
	}
	if why != "" {
		w.event(why, p)
	}
}

// stop is SIGTERM: ctx cancelled, the process may still do I/O to clean up.
func (w *world) stop(p *proc) {
	if p.exited || p.killed || p.stopping {
		return
	}
	p.stopping = true
	p.cancel()
	w.exemptFloors(p)
	w.event("clean-stop", p)
}

// reap handles processes that returned.
func (w *world) reap(now time.Time) {
	for _, p := range w.procs {
		if p.exited {
			continue
		}
		select {
		case <-p.done:
		default:
			continue
		}
		p.exited = true
		if p.killed {
			continue
		}
		w.checkExit(p, now)
	}
}

// --- gates ---

var errKilled = errors.New("sim: process killed")

type call struct {
	p       *proc
	op      string // read | write | post
	ctx     context.Context
	entered time.Time
	skew    time.Duration
	basis   *observed
	frozen  bool // the process was paused while this call waited: its deadline froze with it
	release chan struct{}

	state string // waiting | held | blackhole
	// write
	rec vault.Record
	cas int
	// results
	obs     *observed
	ver     int
	readRec vault.Record
	err     error
	resp    *http.Response
	// post
	body   []byte
	header http.Header
	status int
}

// gate parks c until the scheduler answers it.
func (p *proc) gate(ctx context.Context, c *call) error {
	w := p.w
	w.mu.Lock()
	if p.killed {
		w.mu.Unlock()
		return errKilled
	}
	now := time.Now()
	c.p, c.ctx, c.entered, c.basis, c.state = p, ctx, now, p.seen, "waiting"
	c.skew = p.host.initial
	c.release = make(chan struct{}, 1)
	c.frozen = p.pauseUntil.After(now)
	if p.stopping && !errors.Is(ctx.Err(), context.Canceled) {
		// A call after the stop on a context the stop did not cancel: the
		// release (a write, or the read it needs first when the record may
		// have moved; if that read fails, the lease cannot be released
		// safely). Its own deadline may have passed while the process was
		// paused (seed 1193 of the 100,000 run: a release write paused 23s,
		// then a CAS conflict, then the re-read out of time): it tried.
		p.wroteAfterStop = true
	}
	p.call = c
	w.mu.Unlock()
	w.poke()
	done := ctx.Done()
	for {
		select {
		case <-c.release:
			return c.err
		case <-done:
			done = nil
			w.poke() // the scheduler decides whether the deadline counts
		}
	}
}

// release answers c with err (or its result if err is nil).
func (w *world) release(c *call, err error) {
	w.mu.Lock()
	if c.p.call != c {
		w.mu.Unlock()
		return
	}
	c.p.call = nil
	if err != nil {
		c.err, c.resp = err, nil
	}
	w.mu.Unlock()
	c.release <- struct{}{}
}

func (w *world) gated(p *proc) *call {
	w.mu.Lock()
	defer w.mu.Unlock()
	return p.call
}

// expired returns a parked call whose context ended while its process was
// running (not paused): the process gives up on it.
func (w *world) expired(now time.Time) *call {
	for _, p := range w.procs {
		c := w.gated(p)
		// A frozen call's deadline moved with the pause: it is sent after
		// it. A late request's client just waits for its deadline.
		if c == nil || (c.frozen && c.state != "blackhole") || c.ctx.Err() == nil || p.pauseUntil.After(now) {
			continue
		}
		return c
	}
	return nil
}

// deliver answers c; note names the event.
func (w *world) deliver(c *call, err error, note string) {
	p := c.p
	if err == nil && c.obs != nil {
		p.seen = c.obs
		if !p.firstRead {
			p.firstRead, p.firstRID = true, c.obs.str("rotation_id")
		}
	}
	if err != nil && c.state != "waiting" {
		w.event("answer-lost-"+c.op, p)
	}
	if err == nil && c.resp != nil && c.status == http.StatusTooManyRequests {
		ra, _ := strconv.Atoi(c.resp.Header.Get("Retry-After"))
		f := &floor{from: p, at: time.Now(), until: time.Now().Add(time.Duration(ra) * time.Second), skew: time.Duration(p.host.skew.Load())}
		w.floors = append(w.floors, f)
		if f.until.After(w.floorUntil) {
			w.floorUntil = f.until
		}
	}
	if note != "" {
		w.event(note)
	}
	w.release(c, err)
}

func (w *world) eligible(now time.Time) []*call {
	var out []*call
	for _, p := range w.procs {
		c := w.gated(p)
		if c == nil || c.state == "blackhole" || p.pauseUntil.After(now) {
			continue
		}
		out = append(out, c)
	}
	return out
}

func (w *world) pause(p *proc, now time.Time, why string) {
	d := w.dur(time.Second, 30*time.Second)
	if w.rng.IntN(5) < 2 {
		d = w.dur(simLease, 15*time.Minute)
	}
	p.pauseUntil = now.Add(d)
	p.pausedAt = p.pauseUntil
	w.mu.Lock()
	if p.call != nil {
		p.call.frozen = true
	}
	w.mu.Unlock()
	w.exemptFloors(p)
	w.event("pause-"+why, p, " for ", d.Round(time.Second))
}

// serve runs one step of a parked call.
func (w *world) serve(c *call, now time.Time) {
	p := c.p
	if c.state == "held" {
		var err error
		if c.ctx.Err() != nil && !c.frozen {
			err = c.ctx.Err()
		}
		w.deliver(c, err, "")
		w.check(time.Now(), "held answer delivered")
		return
	}
	if w.faulty && w.rng.IntN(40) == 0 {
		w.pause(p, now, "before-"+c.op)
		return
	}
	// I/O takes time.
	lat := time.Duration(w.rng.Int64N(int64(100 * time.Millisecond)))
	if w.faulty && w.rng.IntN(40) == 0 {
		lat = w.dur(500*time.Millisecond, 3*time.Second)
	}
	time.Sleep(lat)
	var cause string
	switch c.op {
	case "read":
		w.execRead(c)
		cause = "read by " + p.String()
	case "write":
		cause = "write by " + p.String()
		w.execWrite(c)
	case "post":
		cause = w.execPost(c)
	}
	if c.state == "blackhole" {
		w.check(time.Now(), cause)
		return
	}
	if w.faulty && w.rng.IntN(25) == 0 {
		c.state = "held"
		w.event("answer-held-"+c.op, p)
		if w.rng.IntN(2) == 0 {
			w.pause(p, time.Now(), "after-"+c.op)
		}
		w.check(time.Now(), cause)
		return
	}
	var err error
	if c.ctx.Err() != nil && !c.frozen {
		err = c.ctx.Err() // the process gave up while the call was in flight
	}
	w.deliver(c, err, "")
	w.check(time.Now(), cause)
}

func unavailable(op string, why string) error {
	return fmt.Errorf("vault: %s secret/%s: %w: sim: %s", op, simPath, vault.ErrUnavailable, why)
}

func (w *world) execRead(c *call) {
	now := time.Now()
	if now.Before(w.vaultDownUntil) || (w.faulty && w.rng.IntN(15) == 0) {
		c.err = unavailable("read", "connection refused")
		w.floorWrite(c.p, false, 0) // it cannot record a floor before it reads again
		w.event("vault-unavailable-read")
		return
	}
	c.readRec, c.ver, c.err = w.store.Read(context.Background(), simPath)
	data, v, _ := w.store.Latest(simPath)
	c.obs = &observed{ver: v, data: data}
}

func (w *world) execWrite(c *call) {
	p := c.p
	now := time.Now()
	if now.Before(w.vaultDownUntil) || (w.faulty && w.rng.IntN(15) == 0) {
		c.err = unavailable("write", "connection refused")
		w.floorWrite(p, false, 0)
		w.event("vault-unavailable-write")
		return
	}
	if w.faulty && w.rng.IntN(15) == 0 {
		w.operatorEdit("annotation (CAS race)", func(d map[string]any) bool {
			d["note"] = fmt.Sprintf("edited-%d", w.rng.IntN(1000))
			return true
		})
	}
	before, bv, del := w.store.Latest(simPath)
	if del {
		before = w.deletedData[bv] // a CAS write on a soft-deleted version (Vault allows it)
	}
	v, err := w.store.Write(context.Background(), simPath, c.rec, c.cas)
	c.ver, c.err = v, err
	w.floorWrite(p, err == nil, v)
	if err != nil {
		if errors.Is(err, vault.ErrConflict) {
			w.event("cas-conflict", p)
		}
		return
	}
	w.verWriter[v] = p.pid
	after, _, _ := w.store.Latest(simPath)
	c.obs = &observed{ver: v, data: after}
	lost := w.faulty && w.rng.IntN(12) == 0
	w.landedWrite(p, before, after, v, lost)
	if lost {
		c.err = unavailable("write", "answer lost after the write was applied")
		c.obs = nil
		w.event("vault-write-applied-answer-lost", p)
	}
}

// floorWrite notes p's first Vault write after a 429 it got: a failed one
// (or a failed read before it) means it could not record the floor for
// the others in time (exempt).
func (w *world) floorWrite(p *proc, ok bool, v int) {
	for _, f := range w.floors {
		if f.from == p && !f.wrote {
			f.wrote, f.ver = true, v
			f.exempt = f.exempt || !ok
		}
	}
}

// exemptFloors: p can no longer record its floors (killed, stopped,
// paused), or (p nil) an operator edited the lease.
func (w *world) exemptFloors(p *proc) {
	for _, f := range w.floors {
		if (p == nil || f.from == p) && !f.wrote {
			f.exempt = true
		}
	}
}

// namesakeWrote reports whether a version after v was written by another
// process with p's instance id.
func (w *world) namesakeWrote(p *proc, v int) bool {
	_, latest, _ := w.store.Latest(simPath)
	for u := v + 1; u <= latest; u++ {
		pid := w.verWriter[u]
		if pid == 0 || pid == p.pid {
			continue
		}
		for _, q := range w.procs {
			if q.pid == pid && q.id == p.id {
				return true
			}
		}
	}
	return false
}

// othersWrote reports whether a version after v was written by anyone but p.
func (w *world) othersWrote(p *proc, v int) bool {
	_, latest, _ := w.store.Latest(simPath)
	for u := v + 1; u <= latest; u++ {
		if w.verWriter[u] != p.pid {
			return true
		}
	}
	return false
}

// str is rotation_test.go's (a nil map reads as empty).

func tm(d map[string]any, k string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, str(d, k))
	return t
}

// landedWrite records and checks a write that took effect.
func (w *world) landedWrite(p *proc, before, after map[string]any, v int, lost bool) {
	now := time.Now()
	switch {
	case str(after, "lease_owner") == "":
		w.leaseBy = 0
	case str(after, "lease_owner") != str(before, "lease_owner") || str(after, "lease_until") != str(before, "lease_until"):
		w.leaseBy = p.pid
	}
	rid := str(after, "rotation_id")
	bp, ap := str(before, "phase"), str(after, "phase")
	if bp == "" && before != nil {
		bp = "stable"
	}
	// I4: one pending secret per rotation; none generated while one is in flight.
	if pend := str(after, "pending_client_secret"); pend != "" {
		if old, ok := w.pendingOf[rid]; ok && old != pend {
			w.violate("fork", "I4: rotation %s got a second pending secret %s (had %s), written by %s", rid, w.label(pend), w.label(old), p)
		}
		if pend != str(before, "pending_client_secret") {
			w.label(pend)
			if bp == "staged" || bp == "overlap" {
				w.violate("fork", "I4/I6: %s generated a new secret %s while phase %s of rotation %s was in flight", p, w.label(pend), bp, str(before, "rotation_id"))
			}
			if p.kind == "once" && p.abortLanded && !w.othersWrote(p, p.abortVer) {
				w.violate("lost-answer", "%s staged a new secret %s after its own abort had landed in Vault (the abort's answer was lost: %v); a -once run must end aborted, not rotate again", p, w.label(pend), p.lostAbort)
			}
			w.event("staged", w.label(pend), " by ", p)
		}
		w.pendingOf[rid] = pend
	}
	switch {
	case bp == "staged" && ap == "overlap":
		skew := time.Duration(p.host.skew.Load())
		from := tm(after, "grace_until").Add(-w.graceOf(after) - p.host.initial)
		w.overlapAt[rid] = overlapInfo{at: now, id: p.id, pid: p.pid, skew: skew, late: now.Sub(from), lost: lost}
		w.event("overlap", p)
	case bp == "staged" && ap == "stable":
		p.abortLanded, p.lostAbort, p.abortVer = true, lost, v
		w.event("aborted", p)
	case bp == "overlap" && ap == "stable":
		// A -once is satisfied only by a rotation staged at or after it:
		// ending an older one's grace, it goes on with a rotation of its own.
		if p.kind != "once" || p.firstRead && str(after, "rotation_id") != p.firstRID {
			p.finalLanded, p.lostFinal, p.finalVer = true, lost, v
		}
		w.lastDone = now
		w.event("completed", p)
	}
}

// execPost applies (or not) an Affix request, maybe with a fault, and
// returns the step's cause for a failure message (see landed).
func (w *world) execPost(c *call) string {
	p := c.p
	now := time.Now()
	// The 429 floor: no process sends during another's Retry-After.
	// A request sent within 5s of the 429 may have raced the floor's
	// recording; the floor's end is blurred by the hosts' clock skew:
	// retry_not_before is the receiver's clock reading plus Retry-After,
	// and the sender compares it with its own clock. That is 2*simMaxSkew
	// at most, unless the receiver's clock had stepped back (NTP) beyond
	// simMaxSkew: its floor then ends early in true time, and no process
	// can know (found by the simulation, seed 81: a receiver 61s behind).
	pskew := time.Duration(p.host.skew.Load())
	for _, f := range w.floors {
		// Any process may also have cleared the floor as passed by its own
		// clock (a transition drops a floor that has passed): the widest
		// spread between two hosts' clocks blurs its end too (seed 40 with
		// an idle re-read of 5m: a host 100s behind recorded it).
		blur := max(2*simMaxSkew, pskew-f.skew, w.skewSpread()) + time.Second
		if f.exempt || !c.entered.After(f.at.Add(5*time.Second)) || !c.entered.Add(blur).Before(f.until) {
			continue
		}
		// The sender acts on a version from before the floor was recorded,
		// and the lease was no fence between it and the receiver: it cannot
		// know of the floor. Its request, if it lands after a move, is a
		// stale landing the re-assert repairs (the drift bound covers it).
		//  - A namesake (a restarted pod whose predecessor is frozen, not
		//    dead) takes its instance's lease at once, by design
		//    (TestOwnLeaseIsTakenOverAtOnce) (seed 229: a read answered
		//    8m50s late).
		//  - A sender whose clock stepped back still holds its lease by
		//    that clock when it has ended by its unstepped one, which is
		//    when the others may take it over (seed 1003 of 2000).
		//  - A sender whose lease was taken from it while its own write's
		//    answer was held (in overlap a re-assert or an operator action
		//    takes a live lease): it sends from the version it wrote,
		//    not knowing (seed 40).
		staleView := c.basis == nil || !f.wrote || c.basis.ver < f.ver
		namesake := p != f.from && p.id == f.from.id
		steppedLease := pskew < p.host.initial && c.basis != nil && !c.entered.Add(p.host.initial).Before(tm(c.basis.data, "lease_until"))
		cur, _, _ := w.store.Latest(simPath)
		taken := str(cur, "lease_owner") != p.id
		//  - A sender whose namesake wrote the record since it read it
		//    (the lease names an instance id: the namesake's write
		//    renews "its" lease while the floor's receiver took it in
		//    between) (seeds 52117 and 81988 of the 100,000 run).
		if staleView && (namesake || steppedLease || taken || (c.basis != nil && w.namesakeWrote(p, c.basis.ver))) {
			continue
		}
		w.violate("floor", "%s sent an Affix request %s into a 429's Retry-After floor (%s got it at %s, floor until %s): a Retry-After must be honoured by every process",
			p, w.since(c.entered), f.from, w.since(f.at), w.since(f.until))
	}
	var fault *affixtest.Fault
	var name string
	late := ""
	outOfBand := false
	switch {
	case now.Before(w.affix401Until):
		fault, name = &affixtest.Fault{Status: 401}, "affix-401-during-outage"
	case w.faulty && w.rng.IntN(4) == 0:
		secrets := bodySecrets(c.body)
		switch w.rng.IntN(16) {
		case 0, 1:
			fault, name = &affixtest.Fault{Status: 429, RetryAfter: "3"}, "affix-429"
		case 2:
			fault, name = &affixtest.Fault{Status: 429, RetryAfter: "600"}, "affix-429-600s"
		case 3:
			fault, name = &affixtest.Fault{Status: 500}, "affix-500"
		case 4:
			fault, name = &affixtest.Fault{Status: 409}, "affix-409"
		case 5:
			fault, name = &affixtest.Fault{Drop: true}, "affix-drop"
		case 6:
			fault, name = &affixtest.Fault{ApplyThenDrop: true}, "affix-applied-answer-lost"
		case 7:
			fault, name = &affixtest.Fault{Body: []byte(`{"client_secret": 5}`)}, "affix-malformed-200"
		case 8:
			fault, name = &affixtest.Fault{Status: 400}, "affix-400"
		case 9:
			fault, name = &affixtest.Fault{Status: 401}, "affix-401"
		case 10:
			if len(secrets) == 2 { // Affix kept only the second secret, and says so
				fault, name = &affixtest.Fault{Echo: secrets[1:], ApplyEcho: true}, "affix-mismatched-200-second"
				outOfBand = true
			}
		case 11:
			if len(secrets) == 2 { // Affix kept only the first secret, and says so
				fault, name = &affixtest.Fault{Echo: secrets[:1], ApplyEcho: true}, "affix-mismatched-200-first"
				outOfBand = true
			}
		case 12, 13:
			late = "reset"
		case 14:
			late = "blackhole"
		}
	}
	if late != "" {
		// Sent, not applied yet: Affix applies it later, after the client
		// gave up (a reset connection, or a timeout).
		body, header := c.body, c.header
		landAt := now.Add(w.dur(time.Second, 15*time.Minute))
		w.event("affix-late-"+late, p)
		w.at(landAt, "late-landing", func() { w.landLate(c, p, body, header) })
		if late == "reset" {
			c.err = errors.New("sim: connection reset after the request was sent")
		} else {
			c.state = "blackhole"
		}
		return "late request sent by " + p.String()
	}
	if fault != nil {
		w.fake.Inject(*fault)
		w.event(name)
	}
	resp, err := w.handle(c.body, c.header)
	c.resp, c.err = resp, err
	if resp != nil {
		c.status = resp.StatusCode
	}
	return w.landed(c, p, outOfBand, false)
}

// landLate lands a request that its client already gave up on.
func (w *world) landLate(c *call, p *proc, body []byte, header http.Header) {
	_, _ = w.handle(body, header)
	cause := w.landed(c, p, false, true)
	w.event("late-landed", p)
	w.check(time.Now(), "late "+cause)
}

// landed classifies a request Affix just handled: applied or not, stale or
// not, and checks I3 if it dropped the previous secret. A request applied
// after its client gave up on it (late) is stale: no client can know when,
// or whether, it lands (the design's drift bound covers it).
func (w *world) landed(c *call, p *proc, outOfBand, late bool) string {
	r := w.lastReq
	if !r.Applied {
		return fmt.Sprintf("request by %s not applied (%d)", p, r.Status)
	}
	now := time.Now()
	cur, _, deleted := w.store.Latest(simPath)
	sent := r.ClientSecret
	labels := make([]string, len(sent))
	for i, s := range sent {
		labels[i] = w.label(s)
	}
	cause := fmt.Sprintf("%s applied %v", p, labels)
	skewAt := now.Add(c.skew)
	var why []string
	if late {
		why = append(why, "applied after its sender gave up on it")
	}
	if outOfBand {
		why = append(why, "Affix changed the set itself")
	} else if deleted || cur == nil {
		why = append(why, "record deleted")
	} else {
		if str(cur, "lease_owner") != p.id || !skewAt.Before(tm(cur, "lease_until")) {
			why = append(why, "lease not held")
		}
		if c.basis == nil || str(cur, "rotation_id") != c.basis.str("rotation_id") || simPhase(cur) != simPhase(c.basis.data) {
			why = append(why, "rotation moved on")
		}
		if c.basis != nil && w.namesakeWrote(p, c.basis.ver) {
			// The lease names an instance id, not a process: a namesake
			// (a restarted pod whose predecessor is frozen, not dead)
			// takes it at once, by design, so it fences nothing between
			// them; the drift bound covers what lands.
			why = append(why, "a namesake wrote the record since")
		}
	}
	stale := len(why) > 0
	if stale {
		cause += " (stale: " + strings.Join(why, ", ") + ")"
		w.event("stale-landing")
	} else {
		cause += " (fresh: its sender held the lease and the rotation had not moved on)"
	}
	rt := &root{at: now, cause: cause, stale: stale}
	after := w.fake.Secrets(w.key)
	for _, x := range after {
		if !slices.Contains(w.preSet, x) {
			w.roots["add:"+x] = rt
		}
	}
	for _, x := range w.preSet {
		if !slices.Contains(after, x) {
			w.roots["drop:"+x] = rt
		}
	}
	// I3: a request that drops the previous secret of an overlap.
	if !deleted && simPhase(cur) == "overlap" && !slices.Contains(sent, str(cur, "previous_client_secret")) {
		rid := str(cur, "rotation_id")
		if c.basis != nil && c.basis.str("rotation_id") == rid && simPhase(c.basis.data) == "overlap" {
			ov := w.overlapAt[rid]
			need := tm(c.basis.data, "grace_until")
			// -end-grace drops at the grace_until it set itself: no other
			// clock to allow for, and a shorter grace is its purpose.
			// So does a leaked-secret -once ending an older rotation's grace.
			endGrace := p.action == rotator.ActionEndGrace ||
				strings.Contains(c.basis.str("last_action"), `"action":"end-grace"`) && strings.Contains(c.basis.str("last_action"), rid) ||
				incidentEnded(c.basis.data, rid)
			takeover := ov.id != "" && ov.id != p.id && !endGrace
			if takeover {
				need = need.Add(w.margin)
			}
			if skewAt.Before(need) {
				w.violate("grace", "I3: %s dropped the old secret at %s by its clock, before grace_until%s %s (takeover: %v; last_action %s, grace_by %q)",
					p, skewAt.Format(time.RFC3339), map[bool]string{true: "+clock_skew_margin", false: ""}[takeover], need.Format(time.RFC3339), takeover, c.basis.str("last_action"), c.basis.str("grace_by"))
			}
			// -reaccept-previous reopens a grace of the length the
			// operator chose, from its own write: the grace_until check
			// above is the whole rule then (seed 1698 of the 100,000 run).
			reopened := strings.Contains(c.basis.str("last_action"), `"action":"reaccept-previous"`) && strings.Contains(c.basis.str("last_action"), rid)
			if !ov.at.IsZero() && !endGrace && !reopened {
				// The process that made the new secret current knows when
				// its write returned (the rotator tolerates 1s); another
				// cannot know how late that write landed, nor beat a
				// clock skew beyond the margin.
				grace := w.graceOf(c.basis.data)
				allow := grace - time.Second
				if p.pid != ov.pid {
					allow = grace - max(time.Second, ov.late) - max(0, c.skew-ov.skew-w.margin)
				}
				if got := now.Sub(ov.at); got < allow {
					w.violate("grace", "I3: consumers got %s of grace (true time from the overlap write by %s to the drop by %s), want at least %s (grace %s, skew %s vs %s; the overlap write landed %s after the clock reading grace_until counts from, its answer lost: %v)",
						got.Round(time.Millisecond), ov.id, p, allow, w.cfg.grace, c.skew.Round(time.Millisecond), ov.skew.Round(time.Millisecond), ov.late.Round(time.Millisecond), ov.lost)
				}
			}
		} else {
			w.event("stale-drop")
		}
	}
	return cause
}

// incidentEnded reports whether d's grace was ended by a leaked-secret
// -once: its last_action is a rotate on this rotation that is not the one
// recorded when the rotation was staged (an operator's -once -grace
// records its rotate at staged_at; the incident's cut at another time).
// A grace_until moved by hand since does not give the consumers their
// grace back.
func incidentEnded(d map[string]any, rid string) bool {
	var a struct {
		Action     string    `json:"action"`
		At         time.Time `json:"at"`
		RotationID string    `json:"rotation_id"`
	}
	if json.Unmarshal([]byte(str(d, "last_action")), &a) != nil {
		return false
	}
	return a.Action == rotator.ActionRotate && a.RotationID == rid && !a.At.Equal(tm(d, "staged_at"))
}

// graceOf is the grace of the rotation in d: its grace_period (an
// operator's -once -grace travels with the rotation), else the config's.
func (w *world) graceOf(d map[string]any) time.Duration {
	if g, err := time.ParseDuration(str(d, "grace_period")); err == nil && g > 0 {
		return g
	}
	return w.cfg.grace
}

func simPhase(d map[string]any) string {
	if d == nil {
		return ""
	}
	if p := str(d, "phase"); p != "" {
		return p
	}
	return "stable"
}

// handle serves one request in process, through the fake's real handler.
func (w *world) handle(body []byte, header http.Header) (resp *http.Response, err error) {
	req := httptest.NewRequest(http.MethodPost, affixtest.Path, bytes.NewReader(body))
	req.Header = header.Clone()
	rec := httptest.NewRecorder()
	w.preSet = w.fake.Secrets(w.key)
	func() {
		defer func() {
			if r := recover(); r != nil {
				if r != http.ErrAbortHandler {
					panic(r)
				}
				err = errors.New("sim: connection closed without an answer")
			}
		}()
		w.fake.Handler().ServeHTTP(rec, req)
	}()
	if err != nil {
		return nil, err
	}
	return rec.Result(), nil
}

func bodySecrets(b []byte) []string {
	var v struct {
		ClientSecret []string `json:"client_secret"`
	}
	_ = json.Unmarshal(b, &v)
	return v.ClientSecret
}

// --- chaos ---

// chaos applies one random fault event and schedules the next.
func (w *world) chaos() {
	if !w.faulty {
		return
	}
	now := time.Now()
	defer w.at(now.Add(w.dur(time.Minute, 15*time.Minute)), "chaos", w.chaos)
	live := w.live()
	pick := func() *proc {
		if len(live) == 0 {
			return nil
		}
		return live[w.rng.IntN(len(live))]
	}
	switch k := w.rng.IntN(20); {
	case k < 4: // SIGKILL, restarted later by its supervisor
		if p := pick(); p != nil {
			w.kill(p, "sigkill")
			w.supervise(p, now)
		}
	case k < 6: // SIGTERM
		if p := pick(); p != nil {
			w.stop(p)
			w.supervise(p, now)
		}
	case k < 7: // another daemon, maybe with an instance id already running
		w.startProc("daemon", []string{"pod-a", "pod-b"}[w.rng.IntN(2)])
	case k < 9:
		if w.rng.IntN(3) == 0 {
			w.startAction()
		} else {
			w.startProc("once", "")
		}
	case k < 11:
		if p := pick(); p != nil {
			w.pause(p, now, "process")
		}
	case k < 12:
		w.operatorEdit("grace_until moved later", func(d map[string]any) bool {
			if simPhase(d) != "overlap" {
				return false
			}
			d["grace_until"] = tm(d, "grace_until").Add(w.dur(time.Minute, 20*time.Minute)).UTC().Format(time.RFC3339Nano)
			return true
		})
	case k < 13:
		w.operatorDelete(now)
	case k < 14:
		w.operatorEdit("lease edited", func(d map[string]any) bool {
			if simPhase(d) == "stable" {
				return false
			}
			switch w.rng.IntN(3) {
			case 0:
				delete(d, "lease_owner")
				delete(d, "lease_until")
			case 1:
				d["lease_until"] = now.Add(-time.Second).UTC().Format(time.RFC3339Nano)
			default:
				d["lease_until"] = now.Add(w.dur(0, 2*time.Minute)).UTC().Format(time.RFC3339Nano)
			}
			return true
		})
	case k < 15:
		w.operatorEdit("annotation added", func(d map[string]any) bool {
			d["owner_team"] = fmt.Sprintf("team-%d", w.rng.IntN(10))
			return true
		})
	case k < 16: // the API key stops working until an operator fixes it
		d := w.dur(5*time.Minute, time.Hour)
		w.affix401Until = now.Add(d)
		w.event("affix-401-outage", "for ", d.Round(time.Second))
	case k < 17:
		d := w.dur(time.Minute, 15*time.Minute)
		w.vaultDownUntil = now.Add(d)
		w.event("vault-outage", "for ", d.Round(time.Second))
	case k < 18: // a host's wall clock steps back (NTP)
		h := w.hosts[[]string{"pod-a", "pod-b", "ops"}[w.rng.IntN(3)]]
		h.skew.Add(-int64(w.dur(time.Second, time.Minute)))
		w.event("clock-steps-back", h.name)
	default: // a burst: several processes at once
		w.startProc("once", "")
		if p := pick(); p != nil {
			w.kill(p, "sigkill")
			w.supervise(p, now)
		}
	}
	w.check(time.Now(), "chaos")
}

// restartLoop (scenario "restarts") stops pod-a (SIGKILL or SIGTERM) every
// 25-35 minutes and starts it again up to two minutes later.
func (w *world) restartLoop() {
	if w.final {
		return
	}
	now := time.Now()
	for _, p := range w.live() {
		if w.rng.IntN(2) == 0 {
			w.kill(p, "sigkill")
		} else {
			w.stop(p)
		}
	}
	w.at(now.Add(w.dur(5*time.Second, 2*time.Minute)), "restart", func() {
		if !w.final {
			w.startProc("daemon", "pod-a")
		}
	})
	w.at(now.Add(w.dur(25*time.Minute, 35*time.Minute)), "restart", w.restartLoop)
	w.check(time.Now(), "restart")
}

// supervise restarts a stopped daemon after a while, as systemd or
// Kubernetes would, if no other daemon with its id is running.
func (w *world) supervise(p *proc, now time.Time) {
	if p.kind != "daemon" {
		return
	}
	id := p.id
	w.at(now.Add(w.dur(5*time.Second, 10*time.Minute)), "restart", func() {
		if !w.faulty {
			return
		}
		for _, q := range w.live() {
			if q.id == id && q.kind == "daemon" {
				return
			}
		}
		w.startProc("daemon", id)
	})
}

// operatorEdit is `vault kv patch` (check-and-set on the version read).
func (w *world) operatorEdit(what string, mutate func(map[string]any) bool) {
	d, v, deleted := w.store.Latest(simPath)
	if d == nil || deleted || !mutate(d) {
		return
	}
	if _, err := w.store.Put(simPath, d, v); err != nil {
		panic(err)
	}
	if what == "lease edited" {
		w.leaseBy = 0
		w.exemptFloors(nil)
	}
	w.event("operator-" + strings.ReplaceAll(what, " ", "-"))
	w.check(time.Now(), "operator: "+what)
}

// operatorDelete is `vault kv delete` (a soft delete of the latest
// version), undone some minutes later with `vault kv rollback` unless the
// record was written again meanwhile.
func (w *world) operatorDelete(now time.Time) {
	d, v, deleted := w.store.Latest(simPath)
	if d == nil || deleted {
		return
	}
	w.store.Delete(simPath)
	w.deletedData[v] = d
	// A run that held the lease fails on the deleted record and ends;
	// the lease a rollback brings back is the operator's doing, which no
	// process knows it holds until it reads the record again.
	w.leaseBy = 0
	w.event("operator-vault-kv-delete")
	w.at(now.Add(w.dur(time.Minute, 20*time.Minute)), "rollback", func() { w.rollback(v, d) })
}

// rollback restores data deleted at version v, if that version is still
// the latest and deleted.
func (w *world) rollback(v int, data map[string]any) {
	if _, cur, del := w.store.Latest(simPath); del && cur == v {
		if _, err := w.store.Put(simPath, data, v); err != nil {
			panic(err)
		}
		w.event("operator-vault-kv-rollback")
	}
	w.check(time.Now(), "operator: rollback")
}

// deleted reports whether the record's latest version is deleted.
func (w *world) deleted() bool {
	_, _, del := w.store.Latest(simPath)
	return del
}

// calm ends the faulty period: every process is killed, late requests
// land, outages end, and one healthy daemon runs alone.
func (w *world) calm() {
	now := time.Now()
	w.faulty = false
	for _, p := range w.procs {
		w.kill(p, "")
		p.pauseUntil = time.Time{}
	}
	w.event("calm", "faults stop; every process killed")
	// Late requests land now, and the operator undoes a deletion.
	var rest []*simEvent
	for _, e := range w.queue {
		if e.name == "late-landing" || e.name == "rollback" {
			e.fn()
		} else {
			rest = append(rest, e)
		}
	}
	w.queue = rest
	w.affix401Until, w.vaultDownUntil = time.Time{}, time.Time{}
	w.final = true
	w.finalAt = now
	d, _, _ := w.store.Latest(simPath)
	w.finalFrom = simPhase(d)
	// A 429's floor from before the calm still holds; a staged rotation
	// still has its whole grace ahead.
	due := laterOf(now, w.floorUntil)
	switch w.finalFrom {
	case "overlap":
		due = laterOf(due, tm(d, "grace_until").Add(simMargin))
	case "staged":
		due = due.Add(simLease + w.cfg.grace + simMargin)
	}
	w.finalDue = due.Add(simLease + simFinalSlack)
	w.finalStable = w.finalFrom == "stable"
	w.endAt = laterOf(w.finalDue, now.Add(simDriftBound+5*time.Minute))
	w.check(time.Now(), "calm")
	if w.viol == nil {
		synctest.Wait()
		w.reap(time.Now())
		w.startProc("daemon", "pod-a")
	}
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// finish checks the end of the final period: the rotation in flight
// completed in time, and Affix accepts exactly the set the record implies.
func (w *world) finish(now time.Time) {
	d, _, deleted := w.store.Latest(simPath)
	if deleted || d == nil {
		w.violate("final", "record deleted at the end")
		return
	}
	acc := w.fake.Secrets(w.key)
	cur, prev, pend := str(d, "client_secret"), str(d, "previous_client_secret"), str(d, "pending_client_secret")
	var want []string
	switch simPhase(d) {
	case "stable":
		want = []string{cur}
	case "overlap":
		want = []string{cur, prev}
	case "staged":
		want = []string{cur}
		if slices.Contains(acc, pend) {
			want = append(want, pend)
		}
	}
	if !simSameSet(acc, want) {
		w.violate("final", "after %s without faults, Affix accepts %v but the record (phase %s) implies %v",
			now.Sub(w.finalAt).Round(time.Second), w.labelsOf(acc), simPhase(d), w.labelsOf(want))
	}
	w.event("end")
}

func simSameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func (w *world) labelsOf(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = w.label(x)
	}
	return out
}

// --- checks ---

// blocked reports whether repair or progress is impossible now for reasons
// outside the rotator: Affix refusing the key, Vault down, the record
// deleted, an account-wide 429 floor.
func (w *world) blocked(now time.Time) bool {
	return now.Before(w.affix401Until) || now.Before(w.vaultDownUntil) || w.deleted() || now.Before(w.floorUntil)
}

// check runs the invariants after a step (or after time passed): I1, I2
// with bounded drift, the schedule's anchor, the final liveness bound.
// cause names the step. An I1/I2 violation may begin only from a stale
// landing: the one that last dropped Vault's current secret from Affix
// (I1), or last added the secret Vault does not hold (I2), must have been
// stale (or Affix's own doing), however many steps later the record moved
// so that the violation shows; anything else is a bug at once.
func (w *world) check(now time.Time, cause string) {
	if w.viol != nil {
		return
	}
	if w.blocked(now) {
		w.lastBlocked = now
	}
	d, _, deleted := w.store.Latest(simPath)
	if deleted || d == nil {
		return // consumers see no record; I1/I2 resume at the rollback
	}
	// I1 and I2.
	acc := w.fake.Secrets(w.key)
	cur := str(d, "client_secret")
	var bad, fresh []string
	blame := func(msg, key string) {
		bad = append(bad, msg)
		if r := w.roots[key]; r == nil || !r.stale {
			how := "never by a request"
			if r != nil {
				how = "last at " + w.since(r.at) + " by " + r.cause
			}
			verb := map[bool]string{true: "added", false: "dropped"}[strings.HasPrefix(key, "add:")]
			fresh = append(fresh, msg+" ("+verb+" "+how+")")
		}
	}
	if !slices.Contains(acc, cur) {
		blame("I1: Vault's client_secret "+w.label(cur)+" is not accepted by Affix", "drop:"+cur)
	}
	for _, a := range acc {
		if a != cur && a != str(d, "previous_client_secret") && a != str(d, "pending_client_secret") {
			blame("I2: Affix accepts "+w.label(a)+", which the record does not hold", "add:"+a)
		}
	}
	state := fmt.Sprintf("(phase %s, Affix accepts %v)", simPhase(d), w.labelsOf(acc))
	switch {
	case len(bad) == 0 && w.driftOpen:
		w.driftOpen = false
		w.event("drift-repaired", "after ", now.Sub(w.driftSince).Round(time.Second))
	case len(bad) > 0 && !w.driftOpen:
		if len(fresh) > 0 {
			w.violate("fresh", "%s %s, shown by %s; no stale request began it", strings.Join(fresh, "; "), state, cause)
			return
		}
		w.driftOpen, w.driftSince, w.driftCause = true, now, cause
		w.event("drift-began", strings.Join(bad, "; "))
	case len(bad) > 0:
		// Some daemon has been live, unpaused and unhindered for the
		// whole bound since the drift began.
		for _, p := range w.live() {
			from := laterOf(laterOf(w.driftSince, p.started), laterOf(p.pausedAt, w.lastBlocked))
			if p.kind == "daemon" && !p.pauseUntil.After(now) && now.Sub(from) > simDriftBound {
				w.violate("drift", "%s %s for %s, %s of it with %s live, unpaused and nothing blocking repair (bound %s = reconcile_interval %s + 5m); it began at %s with %s",
					strings.Join(bad, "; "), state, now.Sub(w.driftSince).Round(time.Second), now.Sub(from).Round(time.Second), p, simDriftBound, simReconcile, w.since(w.driftSince), w.driftCause)
				return
			}
		}
	}
	w.checkAnchor(now, d)
	if w.scenario == "restarts" {
		anchor := laterOf(w.lastDone, w.t0.Add(-w.cfg.interval))
		if gap := w.cfg.interval + w.cfg.jitter + w.cfg.grace + simMargin + simAnchorSlack; now.Sub(anchor) > gap {
			w.violate("schedule", "schedule %s with the daemon restarted every 25-35 minutes: no rotation completed since %s (%s ago), want one at least every %s (interval + jitter + grace + margin + %s)",
				w.cfg.spec, w.since(anchor), now.Sub(anchor).Round(time.Second), gap.Round(time.Second), simAnchorSlack)
			return
		}
	}
	if w.final && !w.finalStable {
		if simPhase(d) == "stable" {
			w.finalStable = true
			w.event("final-in-flight-completed")
		} else if now.After(w.finalDue) {
			w.violate("final", "liveness: the rotation in flight at the end of the faults (phase %s) did not complete by %s (see simFinalSlack: %s); phase now %s",
				w.finalFrom, w.since(w.finalDue), simFinalSlack, simPhase(d))
		}
	}
}

// checkAnchor: a stable client is due at schedule.Next(rotated_at) (or
// rotated_at + max_age), plus jitter; a record without rotated_at is
// anchored at the daemon's start. A daemon live and unpaused for
// simAnchorSlack past that, with nothing blocking, must have started.
func (w *world) checkAnchor(now time.Time, d map[string]any) {
	if simPhase(d) != "stable" {
		// In flight, or a grace an operator reopened (-reaccept-previous):
		// no new rotation may start before the record is stable again.
		w.notStableAt = now
		return
	}
	if now.Sub(w.lastBlocked) < simAnchorSlack || now.Sub(w.notStableAt) < simAnchorSlack {
		return
	}
	ra := tm(d, "rotated_at")
	for _, p := range w.live() {
		if p.kind != "daemon" || p.pauseUntil.After(now) || now.Sub(p.pausedAt) < simAnchorSlack {
			continue
		}
		pnow := now.Add(time.Duration(p.host.skew.Load()))
		anchor := ra
		if anchor.IsZero() {
			anchor = p.started.Add(time.Duration(p.host.skew.Load()))
		}
		due := w.cfg.sched.Next(anchor)
		if w.cfg.maxAge > 0 && !ra.IsZero() && ra.Add(w.cfg.maxAge).Before(due) {
			due = ra.Add(w.cfg.maxAge)
		}
		due = due.Add(w.cfg.jitter)
		startP := p.started.Add(time.Duration(p.host.skew.Load()))
		if pnow.After(laterOf(due, startP).Add(simAnchorSlack)) {
			w.violate("anchor", "schedule %s: the record is stable since rotated_at %s, due by %s (jitter %s), yet %s, live since %s, has not started a rotation %s later (the schedule must be anchored on rotated_at, not on the process's start)",
				w.cfg.spec, fmtT(w, ra), w.since(due.Add(-time.Duration(p.host.skew.Load()))), w.cfg.jitter.Round(time.Second), p, w.since(p.started), simAnchorSlack)
			return
		}
	}
}

func fmtT(w *world, t time.Time) string {
	if t.IsZero() {
		return "(none)"
	}
	return w.since(t)
}

// checkExit: a process returned on its own (or after a clean stop).
func (w *world) checkExit(p *proc, now time.Time) {
	if p.stopping {
		d, _, deleted := w.store.Latest(simPath)
		if deleted || simPhase(d) == "stable" || str(d, "lease_owner") != p.id || w.leaseBy != p.pid {
			return
		}
		if !now.Add(time.Duration(p.host.skew.Load())).Before(tm(d, "lease_until")) {
			return
		}
		for _, q := range w.live() {
			if q.id == p.id {
				return // a namesake still holds it legitimately
			}
		}
		if !p.wroteAfterStop {
			w.violate("lease", "%s stopped cleanly (ctx cancelled) holding the lease of phase %s until %s and did not release it: another process waits for the lease to run out instead of proceeding at once",
				p, simPhase(d), w.since(tm(d, "lease_until").Add(-time.Duration(p.host.skew.Load()))))
		}
		return
	}
	if p.kind != "once" {
		return
	}
	w.event("once-exit-"+p.out.Result, p, " byOther=", p.out.ByOther)
	if p.incident > 0 && p.out.Result == rotator.ResultSuccess && p.leaked != "" {
		// The leaked-secret command never reports success while the secret
		// current when it started is still current.
		if d, _, deleted := w.store.Latest(simPath); !deleted && str(d, "client_secret") == p.leaked {
			w.violate("incident", "%s (-once -grace %s) reported success while the secret current when it started (%s) is still current", p, p.incident, w.label(p.leaked))
		}
	}
	// A run that gave up while Vault stayed unavailable never saw the
	// record again: it cannot know its write landed, and says it failed.
	blind := p.out.Result == rotator.ResultFailed && (errors.Is(p.err, vault.ErrUnavailable) || errors.Is(p.err, vault.ErrNotFound))
	if p.finalLanded && !w.othersWrote(p, p.finalVer) && !blind {
		if p.out.Result != rotator.ResultSuccess || p.out.ByOther {
			w.violate("lost-answer", "%s landed the final write itself (its answer lost: %v) but reported result %q byOther=%v (err %v): a write applied with its answer lost must be recognised as this process's own",
				p, p.lostFinal, p.out.Result, p.out.ByOther, p.err)
			return
		}
		if n := simCounter(p.reg, "affix_rotator_rotations_total", "result", rotator.ResultSuccess); n < 1 {
			w.violate("lost-answer", "%s completed the rotation (its final write's answer lost: %v) but rotations_total{result=success} is %v", p, p.lostFinal, n)
		}
	}
	if p.abortLanded && !w.othersWrote(p, p.abortVer) && !blind && p.out.Result != rotator.ResultAborted {
		w.violate("lost-answer", "%s landed an abort (its answer lost: %v) but reported result %q (err %v)", p, p.lostAbort, p.out.Result, p.err)
	}
}

func simCounter(reg *prometheus.Registry, name, label, value string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// describe summarises the seed's configuration for a failure message.
func (w *world) describe() string {
	d, v, del := w.store.Latest(simPath)
	return fmt.Sprintf("config: schedule %s, grace %s, jitter %s, max_age %s, lease %s, faults for %s; %d steps; record v%d deleted=%v phase %s; Affix accepts %v",
		w.cfg.spec, w.cfg.grace, w.cfg.jitter.Round(time.Second), w.cfg.maxAge, simLease, w.cfg.faultFor, w.steps, v, del, simPhase(d), w.labelsOf(w.fake.Secrets(w.key)))
}

// requests labels the secrets Affix received (affixtest.Sequence).
func (w *world) requests() []string { return affixtest.Sequence(w.fake.Requests(), w.s0) }

// --- the processes' I/O ---

type simStore proc

func (st *simStore) Read(ctx context.Context, path string) (vault.Record, int, error) {
	p := (*proc)(st)
	c := &call{op: "read"}
	if err := p.gate(ctx, c); err != nil {
		return vault.Record{}, 0, err
	}
	return c.readRec, c.ver, c.err
}

// ReadVersion reads an old version (-reaccept-previous): history only, no
// effect on the invariants, so not a scheduling point.
func (st *simStore) ReadVersion(ctx context.Context, path string, version int) (vault.Record, error) {
	return (*proc)(st).w.store.ReadVersion(ctx, path, version)
}

func (st *simStore) Write(ctx context.Context, path string, r vault.Record, cas int) (int, error) {
	p := (*proc)(st)
	c := &call{op: "write", rec: r, cas: cas}
	if err := p.gate(ctx, c); err != nil {
		return 0, err
	}
	return c.ver, c.err
}

// simTransport carries one process's Affix requests to the gate.
type simTransport struct{ p *proc }

func (tr simTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	c := &call{op: "post", body: body, header: req.Header.Clone()}
	if err := tr.p.gate(req.Context(), c); err != nil {
		return nil, err
	}
	return c.resp, nil
}

// simLogger logs the rotator's lines when SIM_DEBUG is set (to replay a seed).
func simLogger(name string) *zap.Logger {
	if os.Getenv("SIM_DEBUG") == "" {
		return nil
	}
	l, _ := zap.NewDevelopment()
	return l.With(zap.String("proc", name))
}

// skewClock is one host's wall clock: true time plus an offset (Now, Since,
// Until), with timers on true time, as Go's timers run on the monotonic
// clock whatever the wall clock does.
type skewClock struct {
	clockwork.Clock
	skew *atomic.Int64
}

func (c skewClock) Now() time.Time {
	return c.Clock.Now().Add(time.Duration(c.skew.Load()))
}
func (c skewClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c skewClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }

// simNewAPI sets the rotation options the simulation's bounds assume. It
// returns the clock_skew_margin
// the rotator was given, which the I3 check then demands of a process
// taking over an overlap it did not start. The other bounds already assume
// rotation.reconcile_interval = simReconcile.
func simNewAPI(o *rotator.Options) (clockSkewMargin time.Duration) {
	o.ReconcileInterval = simReconcile
	o.RereadInterval = 30 * time.Second
	o.ClockSkewMargin = simMargin
	return simMargin
}
