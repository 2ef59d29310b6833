package simworld

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// simReread is rotation.reread_interval.
	simReread = 30 * time.Second
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

// Classes are the classes of checks; every violation message starts with
// its class in brackets, and a skip map (Simulate) switches classes off.
var Classes = []string{"fresh", "drift", "grace", "fork", "lease", "floor", "anchor", "schedule", "lost-answer", "final", "incident", "operator", "bootstrap", "reread", "future-count", "once-future", "reread-startup"}

// Scenarios Simulate plays: "chaos" (every fault) and "restarts" (one
// daemon restarted every 25-35 minutes, no other fault).
const (
	ScenarioChaos    = "chaos"
	ScenarioRestarts = "restarts"
)

// Simulate plays one seed of scenario with the check classes in skip
// switched off, and returns the world (for its events and trail) and the
// first violation (nil: none). It must be called inside a testing/synctest
// bubble (synctest.Test); a seed replays exactly.
func Simulate(seed uint64, skip map[string]bool, scenario string) (*World, error) {
	w := newWorld(seed, skip, scenario)
	err := w.run()
	return w, err
}

// Events returns how many times each kind of event happened in the seed.
func (w *World) Events() map[string]int { return w.events }

// Trail returns the last events (for a failure message).
func (w *World) Trail() []string { return w.trail }

// All returns every event with its fake time (the determinism test).
func (w *World) All() []string { return w.all }

// Steps returns how many scheduler steps the seed took.
func (w *World) Steps() int { return w.steps }

// Describe summarises the seed's configuration and end state.
func (w *World) Describe() string { return w.describe() }

// Requests labels the secrets Affix received, in order.
func (w *World) Requests() []string { return w.requests() }

// --- the world ---

// World is one seeded simulation: the store, the Affix fake, the
// processes, the scheduler's queue and the oracle's tracking.
type World struct {
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
	claims                                    map[string]time.Time   // reconcile claims written: owner -> until

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

	// The cases beyond the original chaos (pickCases, faults.go).
	xrng  *rand.Rand      // their own stream, so that the original faults keep theirs
	cases map[string]bool // which of them this seed plays
	// nextIncident forces the next -once to be a leaked-secret one with
	// this grace (an operator running it again after a kill).
	nextIncident time.Duration
	marker       int             // the change marker's version (world-backed ChangeMarker)
	recorded     map[string]bool // every secret a record version ever held (current, previous or pending)
	metaDeleted  bool            // the path's metadata was deleted: it looks never used
	metaEpoch    int             // how many metadata deletes so far (observed.epoch)
	crossing     bool            // the write being checked crossed a metadata delete (its CAS passed on a restarted number)
	// taintUntil: until then (true time) the record holds a lease, grace
	// or 429 floor written by a clock that had jumped ahead (the liveness
	// bounds wait for it, see clockJump).
	taintUntil  time.Time
	reaccept    *reacceptWatch       // an operator's -reaccept-previous a daemon must end in time
	notices     []*noticeWatch       // rotations a -once completed, for the daemons to show
	prevOf      map[string]string    // rotation id -> the secret it replaced
	stagedTrue  map[string]time.Time // rotation id -> true time it was staged
	extended    *extendWatch         // an -extend-grace that landed in the gap of two failed writes
	gapArmed    bool                 // the next drop of the previous secret gets two failed writes
	nextGapCase bool                 // the next process started is the gap case's -extend-grace

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
// initial, its offset before any step back; jump, a forward jump in force
// (beyond clock_skew_margin: minutes to days, faults.go's clockJump).
// peak (initial + jump) is its largest offset since the last jump, which
// the checks use where an earlier reading would make them stricter than
// the process could know.
type host struct {
	name    string
	skew    atomic.Int64
	initial time.Duration
	jump    atomic.Int64
	// changedAt is when its clock last stepped or jumped (true time).
	// The simulated clock moves its monotonic reading with the wall
	// clock, so a daemon's in-memory intervals (its next reconcile) move
	// with a jump, where Go's monotonic clock would not: the drift check
	// counts a daemon from its host's last clock change, plus how far it
	// went back (seeds 31520 and 60408: a reconcile 28 minutes late
	// after a clock jumped back 28 minutes).
	changedAt time.Time
	backBy    time.Duration
}

func (h *host) peak() time.Duration { return h.initial + time.Duration(h.jump.Load()) }

type overlapInfo struct {
	at   time.Time // true time the overlap write landed
	id   string    // instance id of its writer
	pid  int
	skew time.Duration
	jump time.Duration // its host's forward jump then
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
	// atVer is the version the receiver's request was sent from.
	atVer int
}

// root is the Affix request landing that last added or dropped a secret:
// an I1/I2 violation may begin only from a stale one (or from Affix
// changing its set itself).
type root struct {
	at    time.Time
	cause string
	stale bool
	// jumped: its sender's clock had jumped forward beyond the margin: a
	// grace it measured ends early, and no process can do better (the
	// I3 check allows for the jump the same way).
	jumped bool
}

type simEvent struct {
	at   time.Time
	seq  int
	name string
	fn   func()
}

func newWorld(seed uint64, skip map[string]bool, scenario string) *World {
	w := &World{seed: seed, scenario: scenario, skipped: map[string]bool{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), skip: skip,
		store: vaultmem.New("secret"), key: "sim-api-key", wake: make(chan struct{}, 1), hosts: map[string]*host{},
		labels: map[string]string{}, recorded: map[string]bool{}, prevOf: map[string]string{}, stagedTrue: map[string]time.Time{}, cases: map[string]bool{}, roots: map[string]*root{}, deletedData: map[int]map[string]any{}, claims: map[string]time.Time{}, verWriter: map[int]int{}, pendingOf: map[string]string{}, overlapAt: map[string]overlapInfo{}, events: map[string]int{}}
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
	w.xrng = rand.New(rand.NewPCG(seed^0x5eed5eed, seed+0x51))
	w.s0 = "s0-" + strconv.FormatUint(seed, 36) + "-aaaaaaaaaaaaaaaaaaaaaaaa"
	w.label(w.s0)
	w.fake.AddClient(w.key, "cid", w.s0)
	seedRec := map[string]any{"client_secret": w.s0}
	// A record with no rotated_at is one an operator seeded by hand
	// (scenario restarts: every even seed).
	if (w.rng.IntN(2) == 0 && scenario != ScenarioRestarts) || (scenario == ScenarioRestarts && seed%2 == 1) {
		seedRec["rotated_at"] = w.t0.Add(-time.Duration(w.rng.Int64N(int64(sp.d)))).UTC().Format(time.RFC3339Nano)
	}
	if _, err := w.store.Put(simPath, seedRec, 0); err != nil {
		panic(err)
	}
	w.recorded[w.s0] = true
	for _, h := range []string{"pod-a", "pod-b", "ops"} {
		w.hosts[h] = &host{name: h}
		w.hosts[h].initial = time.Duration(w.rng.Int64N(int64(2*simMaxSkew+1))) - simMaxSkew
		w.hosts[h].skew.Store(int64(w.hosts[h].initial))
	}
	w.pickCases()
	return w
}

func (w *World) label(s string) string {
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
func (w *World) event(kind string, detail ...any) {
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

func (w *World) since(t time.Time) string {
	return "t+" + t.Sub(w.t0).Round(time.Millisecond).String()
}

func (w *World) violate(class, format string, args ...any) {
	if w.viol != nil {
		return
	}
	if os.Getenv("SIM_HISTORY") != "" { // the last record versions, for a replay
		h := w.store.History(simPath)
		for v := max(0, len(h)-8); v < len(h); v++ {
			d := h[v]
			fmt.Printf("v%d writer=%d phase=%s rid=%s grace_until=%s grace_by=%s lease=%s lease_until=%s retry_not_before=%s last_action=%s\n", v+1, w.verWriter[v+1], str(d, "phase"), str(d, "rotation_id"), str(d, "grace_until"), str(d, "grace_by"), str(d, "lease_owner"), str(d, "lease_until"), str(d, "retry_not_before"), str(d, "last_action"))
		}
	}
	if w.skip[class] {
		if !w.skipped[class] {
			w.skipped[class] = true
			// Rotation ids are random: left out, so that the trail replays.
			w.event("skipped-"+class, ridPattern.ReplaceAllString(fmt.Sprintf(format, args...), "<rotation-id>"))
		}
		return
	}
	w.viol = fmt.Errorf("[%s] at %s: %s", class, w.since(time.Now()), fmt.Sprintf(format, args...))
}

// ridPattern matches a rotation id (16 hex digits).
var ridPattern = regexp.MustCompile(`\b[0-9a-f]{16}\b`)

func (w *World) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// at schedules fn at t.
func (w *World) at(t time.Time, name string, fn func()) {
	w.seq++
	e := &simEvent{at: t, seq: w.seq, name: name, fn: fn}
	i := sort.Search(len(w.queue), func(i int) bool {
		q := w.queue[i]
		return q.at.After(t) || (q.at.Equal(t) && q.seq > e.seq)
	})
	w.queue = slices.Insert(w.queue, i, e)
}

func (w *World) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)+1))
}

// run plays the seed: a faulty period with several processes, then a
// fault-free one with one healthy daemon, checking after every step.
func (w *World) run() error {
	defer w.shutdown()
	d0, _, _ := w.store.Latest(simPath)
	w.lastDone = tm(d0, "rotated_at")
	if w.lastDone.IsZero() {
		w.lastDone = w.t0 // seeded by hand: the schedule counts from the version's created_time
		w.event("seeded-record")
	}
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
func (w *World) advance(now time.Time) {
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
func (w *World) shutdown() {
	for _, p := range w.procs {
		w.kill(p, "")
	}
	for _, p := range w.procs {
		<-p.done
	}
}

// --- processes ---

type proc struct {
	w       *World
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
	metrics *metricsReg // the collectors its rotator registered, by name

	// set by the process goroutine before done is closed
	out rotator.Outcome
	err error

	// scheduler state
	call       *call // guarded by w.mu
	mcall      *call // guarded by w.mu: the change-marker watcher's call
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

	actionD    time.Duration // kind action: the duration the operator gave (extend, reaccept)
	firstPhase string        // the phase of the first record read
	firstStage time.Time     // its staged_at
	firstSkew  time.Duration // the process's clock offset then
	firstAt    time.Time     // when (true time)
	startSkew  time.Duration // its host's clock offset when it started
	futureRead int           // reads of a version with a time beyond now + margin by its clock
	failWrites int           // its next Vault writes fail (the gap case)
	gapAction  bool          // start an -extend-grace after the first of them
	landedAny  bool          // some write of its own landed
	bumpFailed bool          // a change-marker bump of its own failed
	bumpAt     time.Time     // its last bump of the marker that landed
	markerBase time.Time     // when its watcher's first read of the marker was answered
	gapCase    bool          // kind action: the -extend-grace of the gap case
	gapProc    *proc         // the gap case's -extend-grace, started by this run's failed write
	gapFails   int
	postedAny  bool // some Affix request of its own was applied
}

func (p *proc) String() string { return fmt.Sprintf("%s#%d(%s)", p.id, p.pid, p.kind) }

type observed struct {
	ver  int
	data map[string]any
	// epoch is the world's metadata-delete count when it was observed:
	// version numbers start over at each delete.
	epoch int
}

func (o *observed) str(k string) string {
	if o == nil || o.data == nil {
		return ""
	}
	s, _ := o.data[k].(string)
	return s
}

func (w *World) startProc(kind, id string) *proc {
	w.pids++
	hostName := id
	if kind == "once" || kind == "action" {
		w.onces++
		id = fmt.Sprintf("ops/%s-%d", kind, w.onces)
		hostName = "ops"
	}
	h := w.hosts[hostName]
	p := &proc{w: w, pid: w.pids, id: id, kind: kind, host: h, done: make(chan struct{}), started: time.Now(), startSkew: time.Duration(h.skew.Load()), reg: prometheus.NewRegistry(), action: w.nextAction}
	w.nextAction = ""
	p.gapCase, w.nextGapCase = w.nextGapCase, false
	switch p.action {
	case rotator.ActionExtendGrace:
		p.actionD = time.Duration(1+p.pid%20) * time.Minute
	case rotator.ActionReacceptPrevious:
		p.actionD = time.Duration(5+p.pid%25) * time.Minute
	}
	p.metrics = &metricsReg{Registerer: p.reg, byName: map[string]prometheus.Collector{}}
	p.clock = skewClock{clockwork.NewRealClock(), &h.skew}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	opt := rotator.Options{InstanceID: id, Store: (*simStore)(p), Clock: p.clock, Metrics: rotator.NewMetrics(p.metrics),
		LeaseDuration: simLease, RetryInitial: time.Second, RetryMax: simRetryMax, RequestTimeout: simRequestTimeout,
		Rand: rand.New(rand.NewPCG(w.rng.Uint64(), uint64(p.pid))), Logger: simLogger(p.String())}
	if kind == "once" || kind == "action" {
		opt.GiveUpAfter = 15 * time.Minute
	}
	w.margin = simNewAPI(&opt)
	if w.cases["marker"] {
		opt.Changes = (*simChanges)(p)
	}
	r := rotator.New(opt)
	api, err := affix.New("http://affix.sim", secret.New(w.key), affix.WithTimeout(simRequestTimeout),
		affix.WithHTTPClient(&http.Client{Transport: simTransport{p}}))
	if err != nil {
		panic(err)
	}
	c := &rotator.Client{Name: "sim", VaultPath: simPath, Schedule: w.cfg.sched, GracePeriod: w.cfg.grace,
		Jitter: w.cfg.jitter, MaxAge: w.cfg.maxAge, Affix: api}
	trig := rotator.Trigger{Reason: rotator.ReasonOnce}
	if kind == "once" && (w.rng.IntN(4) == 0 || w.nextIncident > 0) {
		// The leaked-secret incident: -once -grace D, D up to the grace.
		p.incident = time.Duration(1+w.rng.IntN(max(1, int(w.cfg.grace/time.Minute)))) * time.Minute
		if w.nextIncident > 0 {
			p.incident, w.nextIncident = w.nextIncident, 0
		}
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
		_, p.err = r.ExtendGrace(p.ctx, c, p.actionD, audit)
	default:
		_, p.err = r.ReacceptPrevious(p.ctx, c, p.actionD, audit)
	}
}

// startAction starts an operator's incident command (-end-grace,
// -extend-grace, -reaccept-previous), racing whatever runs.
func (w *World) startAction() {
	actions := []string{rotator.ActionEndGrace, rotator.ActionExtendGrace, rotator.ActionReacceptPrevious}
	a := actions[w.rng.IntN(len(actions))]
	w.event("operator-" + a)
	w.nextAction = a
	w.startProc("action", "")
}

// skewSpread is the widest difference between two hosts' clocks now.
func (w *World) skewSpread() time.Duration {
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

func (w *World) live() []*proc {
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
func (w *World) kill(p *proc, why string) {
	if p.exited || p.killed {
		return
	}
	w.mu.Lock()
	p.killed = true
	cs := []*call{p.call, p.mcall}
	w.mu.Unlock()
	p.cancel()
	w.exemptFloors(p)
	for _, c := range cs {
		if c != nil {
			w.release(c, errKilled)
		}
	}
	w.checkFutureCounted(p)
	if why != "" {
		w.event(why, p)
	}
}

// stop is SIGTERM: ctx cancelled, the process may still do I/O to clean up.
func (w *World) stop(p *proc) {
	if p.exited || p.killed || p.stopping {
		return
	}
	p.stopping = true
	p.cancel()
	w.exemptFloors(p)
	w.event("clean-stop", p)
}

// reap handles processes that returned.
func (w *World) reap(now time.Time) {
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
		w.checkFutureCounted(p)
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
	skew    time.Duration // the process's peak clock offset (host.peak)
	jump    time.Duration // its host's forward jump in force
	basis   *observed
	frozen  bool // the process was paused while this call waited: its deadline froze with it
	release chan struct{}

	state string // waiting | held | blackhole
	// write
	rec vault.Record
	cas int
	// claim
	claim vault.Claim
	drop  []string
	// results
	obs     *observed
	ver     int
	claims  []vault.Claim // write: the claims Vault answered it with
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
	c.skew = p.host.peak()
	c.jump = time.Duration(p.host.jump.Load())
	c.release = make(chan struct{}, 1)
	c.frozen = p.pauseUntil.After(now)
	if p.stopping && !errors.Is(ctx.Err(), context.Canceled) && c.op != "marker-read" {
		// A call after the stop on a context the stop did not cancel: the
		// release (a write, or the read it needs first when the record may
		// have moved; if that read fails, the lease cannot be released
		// safely). Its own deadline may have passed while the process was
		// paused (seed 1193 of the 100,000 run: a release write paused 23s,
		// then a CAS conflict, then the re-read out of time): it tried.
		p.wroteAfterStop = true
	}
	*p.slot(c.op) = c
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
func (w *World) release(c *call, err error) {
	w.mu.Lock()
	slot := c.p.slot(c.op)
	if *slot != c {
		w.mu.Unlock()
		return
	}
	*slot = nil
	if err != nil {
		c.err, c.resp = err, nil
	}
	w.mu.Unlock()
	c.release <- struct{}{}
}

func (w *World) gated(p *proc) []*call {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*call
	for _, c := range []*call{p.call, p.mcall} {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// slot is where a call of op parks: the change-marker watcher (a goroutine
// of the daemon's own, reading the marker) has a slot apart from the
// client loop's.
func (p *proc) slot(op string) **call {
	if op == "marker-read" {
		return &p.mcall
	}
	return &p.call
}

// expired returns a parked call whose context ended while its process was
// running (not paused): the process gives up on it.
func (w *World) expired(now time.Time) *call {
	for _, p := range w.procs {
		for _, c := range w.gated(p) {
			// A frozen call's deadline moved with the pause: it is sent after
			// it. A late request's client just waits for its deadline.
			if (c.frozen && c.state != "blackhole") || c.ctx.Err() == nil || p.pauseUntil.After(now) {
				continue
			}
			return c
		}
	}
	return nil
}

// deliver answers c; note names the event.
func (w *World) deliver(c *call, err error, note string) {
	p := c.p
	if err == nil && c.obs != nil {
		p.seen = c.obs
		if !p.firstRead {
			p.firstRead, p.firstRID = true, c.obs.str("rotation_id")
			p.firstPhase, p.firstStage, p.firstSkew, p.firstAt = simPhase(c.obs.data), tm(c.obs.data, "staged_at"), time.Duration(p.host.skew.Load()), time.Now()
		}
		if c.op == "read" && p.kind != "action" && w.verWriter[c.obs.ver] != p.pid {
			// Its own writes are not counted (the rotator checks the
			// versions it did not write), nor an operator action's
			// reads (it decides on no record time).
			pnow := time.Now().Add(time.Duration(p.host.skew.Load()))
			for _, f := range []string{"rotated_at", "staged_at", "seeded_at"} {
				if tm(c.obs.data, f).After(pnow.Add(w.margin)) {
					p.futureRead++
					w.event("read-time-beyond-margin", p)
					break
				}
			}
		}
	}
	if err != nil && c.state != "waiting" {
		w.event("answer-lost-"+c.op, p)
	}
	if err == nil && c.resp != nil && c.status == http.StatusTooManyRequests {
		ra, _ := strconv.Atoi(c.resp.Header.Get("Retry-After"))
		v := 0
		if c.basis != nil {
			v = c.basis.ver // the receiver's view when it sent
		}
		f := &floor{from: p, at: time.Now(), until: time.Now().Add(time.Duration(ra) * time.Second), skew: time.Duration(p.host.skew.Load()), atVer: v}
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

func (w *World) eligible(now time.Time) []*call {
	var out []*call
	for _, p := range w.procs {
		for _, c := range w.gated(p) {
			if c.state == "blackhole" || p.pauseUntil.After(now) {
				continue
			}
			out = append(out, c)
		}
	}
	return out
}

func (w *World) pause(p *proc, now time.Time, why string) {
	d := w.dur(time.Second, 30*time.Second)
	if w.rng.IntN(5) < 2 {
		d = w.dur(simLease, 15*time.Minute)
	}
	p.pauseUntil = now.Add(d)
	p.pausedAt = p.pauseUntil
	w.freeze(p)
	w.exemptFloors(p)
	w.event("pause-"+why, p, " for ", d.Round(time.Second))
}

// serve runs one step of a parked call.
func (w *World) serve(c *call, now time.Time) {
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
	// Timers that fired meanwhile woke goroutines, maybe this process's
	// own change-marker watcher beside the loop whose call this is: let
	// them park before the call is applied (they read the process's
	// state at their gate).
	synctest.Wait()
	var cause string
	switch c.op {
	case "read":
		w.execRead(c)
		cause = "read by " + p.String()
	case "write":
		cause = "write by " + p.String()
		w.execWrite(c)
	case "claim":
		cause = "claim by " + p.String()
		w.execClaim(c)
	case "post":
		cause = w.execPost(c)
	case "marker-read", "marker-bump":
		w.execMarker(c)
		cause = c.op + " by " + p.String()
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

func (w *World) execRead(c *call) {
	now := time.Now()
	if now.Before(w.vaultDownUntil) || (w.faulty && w.rng.IntN(15) == 0) {
		c.err = unavailable("read", "connection refused")
		w.floorWrite(c.p, false, 0) // it cannot record a floor before it reads again
		w.event("vault-unavailable-read")
		return
	}
	c.readRec, c.ver, c.err = w.store.Read(context.Background(), simPath)
	data, v, _ := w.store.Latest(simPath)
	c.obs = &observed{ver: v, data: data, epoch: w.metaEpoch}
}

// execClaim applies a reconcile claim: Vault down or a random failure
// refuses it; one may land with its answer lost.
func (w *World) execClaim(c *call) {
	if time.Now().Before(w.vaultDownUntil) || (w.faulty && w.rng.IntN(15) == 0) {
		c.err = unavailable("claim", "connection refused")
		w.event("vault-unavailable-claim")
		return
	}
	c.err = w.store.Claim(context.Background(), simPath, c.claim, c.drop)
	if c.err == nil {
		w.claims[c.claim.Owner] = c.claim.Until
		w.event("reconcile-claim", c.p)
		if w.faulty && w.rng.IntN(12) == 0 {
			c.err = unavailable("claim", "answer lost after the claim was applied")
			w.event("vault-claim-applied-answer-lost", c.p)
		}
	}
}

func (w *World) execWrite(c *call) {
	p := c.p
	now := time.Now()
	if now.Before(w.vaultDownUntil) || (w.faulty && w.rng.IntN(15) == 0) {
		c.err = unavailable("write", "connection refused")
		w.floorWrite(p, false, 0)
		w.event("vault-unavailable-write")
		return
	}
	if p.failWrites > 0 {
		// The gap case: this process just dropped the previous secret;
		// its write fails, it reads again, an operator's -extend-grace
		// lands, and its next write fails too (writes in between fail
		// while the operator's has not landed, at most ten).
		q := p.gapProc
		switch {
		case p.gapAction:
			p.gapAction = false
			p.failWrites--
			w.nextAction = rotator.ActionExtendGrace
			w.event("operator-extend-grace-in-the-gap")
			w.nextGapCase = true
			p.gapProc = w.startProc("action", "")
		case q != nil && w.extended == nil && !q.exited && !q.killed && p.gapFails < 10:
		default:
			p.failWrites--
		}
		p.gapFails++
		c.err = unavailable("write", "connection refused (gap case)")
		w.floorWrite(p, false, 0)
		w.event("vault-write-fails-after-drop", p)
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
	v, claims, err := w.store.WriteClaimed(context.Background(), simPath, c.rec, c.cas)
	c.ver, c.claims, c.err = v, claims, err
	w.floorWrite(p, err == nil, v)
	if err != nil {
		if errors.Is(err, vault.ErrConflict) {
			w.event("cas-conflict", p)
		}
		return
	}
	w.verWriter[v] = p.pid
	p.landedAny = true
	after, _, _ := w.store.Latest(simPath)
	if bv == 0 {
		// The path looked never used (its metadata deleted): only an
		// operator's one-shot bootstrap may create the record, and no
		// process here is one.
		w.violate("bootstrap", "%s created the record at %s (version %d) on a path that looked never used: a daemon or -once without bootstrap must fail loudly, never create the record (phase %s, client_secret %s)",
			p, simPath, v, simPhase(after), w.label(str(after, "client_secret")))
	}
	c.obs = &observed{ver: v, data: after, epoch: w.metaEpoch}
	w.crossing = c.basis != nil && c.basis.epoch < w.metaEpoch
	if w.crossing {
		// Its check-and-set passed only because the version numbers
		// started over at a metadata delete it slept through: it wrote
		// its old record over the new one (seed 565). Vault cannot fence
		// this (docs/runbook.md: stop the daemons before deleting a
		// record's metadata); what follows is the operator's doing, and
		// the drift bound covers its repair.
		rt := &root{at: time.Now(), cause: "a write from before a metadata delete (version numbers started over)", stale: true}
		for _, x := range w.fake.Secrets(w.key) {
			w.roots["add:"+x], w.roots["drop:"+x] = rt, rt
		}
		for _, f := range []string{"client_secret", "previous_client_secret", "pending_client_secret"} {
			if x := str(after, f); x != "" {
				w.roots["drop:"+x] = rt
			}
		}
		w.event("write-across-a-metadata-delete", p)
	}
	lost := w.faulty && w.rng.IntN(12) == 0
	w.landedWrite(p, before, after, v, lost)
	w.crossing = false
	if lost {
		c.err = unavailable("write", "answer lost after the write was applied")
		c.obs = nil
		w.event("vault-write-applied-answer-lost", p)
	}
}

// floorWrite notes p's first Vault write after a 429 it got: a failed one
// (or a failed read before it) means it could not record the floor for
// the others in time (exempt).
func (w *World) floorWrite(p *proc, ok bool, v int) {
	for _, f := range w.floors {
		if f.from == p && !f.wrote {
			f.wrote, f.ver = true, v
			f.exempt = f.exempt || !ok
		}
	}
}

// exemptFloors: p can no longer record its floors (killed, stopped,
// paused), or (p nil) an operator edited the lease.
func (w *World) exemptFloors(p *proc) {
	for _, f := range w.floors {
		if (p == nil || f.from == p) && !f.wrote {
			f.exempt = true
		}
	}
}

// namesakeWrote reports whether a version after v was written by another
// process with p's instance id.
func (w *World) namesakeWrote(p *proc, v int) bool {
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
func (w *World) othersWrote(p *proc, v int) bool {
	_, latest, _ := w.store.Latest(simPath)
	for u := v + 1; u <= latest; u++ {
		if w.verWriter[u] != p.pid {
			return true
		}
	}
	return false
}

// str reads a string field of raw record data (a nil map reads as empty).
func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

func tm(d map[string]any, k string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, str(d, k))
	return t
}

// execPost applies (or not) an Affix request, maybe with a fault, and
// returns the step's cause for a failure message (see landed).
func (w *World) execPost(c *call) string {
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
		steppedLease := pskew < p.host.peak() && c.basis != nil && !c.entered.Add(p.host.peak()).Before(tm(c.basis.data, "lease_until"))
		cur, _, _ := w.store.Latest(simPath)
		taken := str(cur, "lease_owner") != p.id
		//  - A sender whose namesake wrote the record since it read it
		//    (the lease names an instance id: the namesake's write
		//    renews "its" lease while the floor's receiver took it in
		//    between) (seeds 52117 and 81988 of the 100,000 run).
		if staleView && (namesake || steppedLease || taken || (c.basis != nil && w.namesakeWrote(p, c.basis.ver))) {
			continue
		}
		//  - A receiver whose namesake (same instance id, which the
		//    design forbids for replicas: the lease fences nothing
		//    between them) wrote the record since the version it sent
		//    from could not record its floor under its lease, nor could
		//    any process know of it (seed 19379: a daemon's namesake on a
		//    clock 3h ahead had moved the rotation on).
		if w.namesakeWrote(f.from, f.atVer) {
			continue
		}
		//  - A sender whose clock had jumped ahead beyond the margin sees
		//    every lease and floor of the others end early; no process
		//    can do better (seed 10633: a -once 4 minutes into a 10-minute
		//    floor, its receiver's lease expired by the sender's clock).
		if c.jump > w.margin {
			continue
		}
		w.violate("floor", "%s sent an Affix request %s into a 429's Retry-After floor (%s got it at %s, floor until %s): a Retry-After must be honoured by every process",
			p, w.since(c.entered), f.from, w.since(f.at), w.since(f.until))
	}
	w.checkRequest(c)
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
func (w *World) landLate(c *call, p *proc, body []byte, header http.Header) {
	_, _ = w.handle(body, header)
	cause := w.landed(c, p, false, true)
	w.event("late-landed", p)
	w.check(time.Now(), "late "+cause)
}

// handle serves one request in process, through the fake's real handler.
func (w *World) handle(body []byte, header http.Header) (resp *http.Response, err error) {
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

func (w *World) describe() string {
	d, v, del := w.store.Latest(simPath)
	return fmt.Sprintf("config: schedule %s, grace %s, jitter %s, max_age %s, lease %s, faults for %s; %d steps; record v%d deleted=%v phase %s; Affix accepts %v",
		w.cfg.spec, w.cfg.grace, w.cfg.jitter.Round(time.Second), w.cfg.maxAge, simLease, w.cfg.faultFor, w.steps, v, del, simPhase(d), w.labelsOf(w.fake.Secrets(w.key)))
}

// requests labels the secrets Affix received (affixtest.Sequence).
func (w *World) requests() []string { return affixtest.Sequence(w.fake.Requests(), w.s0) }

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
	v, _, err := st.WriteClaimed(ctx, path, r, cas)
	return v, err
}

// WriteClaimed is Write answered with the reconcile claims the record's
// metadata held when the write was applied (rotator.Options.ReconcileClaims).
func (st *simStore) WriteClaimed(ctx context.Context, path string, r vault.Record, cas int) (int, []vault.Claim, error) {
	p := (*proc)(st)
	c := &call{op: "write", rec: r, cas: cas}
	if err := p.gate(ctx, c); err != nil {
		return 0, nil, err
	}
	return c.ver, c.claims, c.err
}

// Claim writes a reconcile claim into the record's custom metadata: a
// scheduling point like any Vault call, with the same faults.
func (st *simStore) Claim(ctx context.Context, path string, cl vault.Claim, drop []string) error {
	p := (*proc)(st)
	c := &call{op: "claim", claim: cl, drop: drop}
	if err := p.gate(ctx, c); err != nil {
		return err
	}
	return c.err
}

// simChanges is a process's view of the change marker (rotator.ChangeMarker):
// a counter kept by the world, read and bumped through the gate like the
// record, with the same Vault faults.
type simChanges proc

func (m *simChanges) ChangesVersion(ctx context.Context) (int, error) {
	c := &call{op: "marker-read"}
	if err := (*proc)(m).gate(ctx, c); err != nil {
		return 0, err
	}
	return c.ver, c.err
}

func (m *simChanges) BumpChanges(ctx context.Context, client, what string) error {
	c := &call{op: "marker-bump"}
	return (*proc)(m).gate(ctx, c)
}

// execMarker serves the change marker: Vault down or a random failure
// refuses it; a bump may land with its answer lost.
func (w *World) execMarker(c *call) {
	if time.Now().Before(w.vaultDownUntil) || (w.faulty && w.rng.IntN(15) == 0) {
		c.err = fmt.Errorf("vault: %s %s: %w: sim: connection refused", c.op, vault.ChangesPath, vault.ErrUnavailable)
		if c.op == "marker-bump" {
			c.p.bumpFailed = true
		}
		w.event("vault-unavailable-marker")
		return
	}
	if c.op == "marker-read" {
		c.ver = w.marker
		if c.p.markerBase.IsZero() {
			c.p.markerBase = time.Now()
		}
		return
	}
	w.marker++
	c.p.bumpAt = time.Now()
	w.event("marker-bumped", c.p)
	if w.faulty && w.rng.IntN(12) == 0 {
		c.err = fmt.Errorf("vault: bump %s: %w: sim: answer lost after the write was applied", vault.ChangesPath, vault.ErrUnavailable)
	}
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

// NewTimer makes a timer of zero or less fire after 1ns, not at once: a
// daemon's loop selects on its timer and on the change marker's signal,
// and when both were ready the runtime picked either, so that a seed with
// the marker did not replay exactly. 1ns later, the signal already there
// wins, a valid schedule of the same race.
func (c skewClock) NewTimer(d time.Duration) clockwork.Timer {
	return c.Clock.NewTimer(max(d, time.Nanosecond))
}
func (c skewClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }

// simNewAPI sets the rotation options the simulation's bounds assume. It
// returns the clock_skew_margin
// the rotator was given, which the I3 check then demands of a process
// taking over an overlap it did not start. The other bounds already assume
// rotation.reconcile_interval = simReconcile.
func simNewAPI(o *rotator.Options) (clockSkewMargin time.Duration) {
	o.ReconcileInterval = simReconcile
	o.ReconcileClaims = true // as the CLI runs it
	o.RereadInterval = simReread
	o.ClockSkewMargin = simMargin
	return simMargin
}

// metricsReg registers the rotator's collectors and keeps them by metric
// name, so that the oracle reads a series with testutil.ToFloat64.
type metricsReg struct {
	prometheus.Registerer
	byName map[string]prometheus.Collector
}

func (m *metricsReg) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64) // each of the rotator's collectors has one
	c.Describe(ch)
	close(ch)
	for d := range ch {
		s := d.String()
		if i := strings.Index(s, `fqName: "`); i >= 0 {
			name := s[i+len(`fqName: "`):]
			m.byName[name[:strings.IndexByte(name, '"')]] = c
		}
	}
	return m.Registerer.Register(c)
}

func (m *metricsReg) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := m.Register(c); err != nil {
			panic(err)
		}
	}
}

// freeze marks p's parked calls as frozen by a pause.
func (w *World) freeze(p *proc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range []*call{p.call, p.mcall} {
		if c != nil {
			c.frozen = true
		}
	}
}
