// Package rotator drives the rotation of Affix client secrets through the
// phases stable → staged → overlap → stable (docs/design.md). Every decision is
// re-derived from the Vault record on each step and every transition is one
// check-and-set write, so a process killed at any point, or a second process
// racing it, resumes the rotation in flight instead of forking it. Time comes
// from an injected clock, so schedules and grace periods are tested without
// sleeping.
package rotator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/vault"
)

// Store is what the rotator needs of Vault: versioned reads and
// check-and-set writes of one record per client.
type Store interface {
	Read(ctx context.Context, path string) (vault.Record, int, error)
	Write(ctx context.Context, path string, r vault.Record, cas int) (int, error)
}

// Affix is what the rotator needs of the Affix management API.
type Affix interface {
	UpdateClient(ctx context.Context, req affix.UpdateRequest) (*affix.UpdateResponse, error)
}

// Client is one Affix client under rotation.
type Client struct {
	Name      string // label in metrics and logs
	VaultPath string // KV path of its record, relative to the mount
	Schedule  cron.Schedule
	// ScheduleSpec is the schedule as configured, for logs.
	ScheduleSpec string
	GracePeriod  time.Duration
	Jitter       time.Duration // random delay up to this after each scheduled time
	MaxAge       time.Duration // rotate at start-up when the last rotation is older (0: never)
	Bootstrap    bool          // a missing record is a brand-new Affix client: post [new] alone
	Affix        Affix
	// Optional fields sent with every update, exactly as configured.
	AppName      *string
	RedirectURIs []string
	WebhookURI   affix.Nullable
}

// Options configure a Rotator.
type Options struct {
	InstanceID    string // lease identity
	Store         Store
	Clock         clockwork.Clock // default: the real clock
	Metrics       *Metrics        // default: none
	Logger        *zap.Logger     // default: none
	LeaseDuration time.Duration   // default 5m
	RetryInitial  time.Duration   // default 1s
	RetryMax      time.Duration   // default 5m
	// RequestTimeout bounds one Affix request (default 30s). Before each
	// request the rotator makes sure its lease outlives it.
	RequestTimeout time.Duration
	// GiveUpAfter ends a rotation with ResultFailed when one step has failed
	// for this long (0: retry for ever, as the daemon does: the record stays
	// in its phase and the next run resumes it).
	GiveUpAfter time.Duration
	// FailOnDenied ends a rotation with ResultFailed as soon as Vault
	// denies a request (-once); the daemon retries at ERROR (denied.go).
	FailOnDenied bool
	// FollowInterval caps how long a process waits on another's lease
	// before reading the record again (default 5s; in overlap it waits
	// until grace_until instead).
	FollowInterval time.Duration
	// Progress, if set, is called on every phase change and, every
	// ProgressInterval, while waiting (for the -once progress lines).
	Progress         func(Progress)
	ProgressInterval time.Duration
	// Limiter bounds how many rotations do I/O at once (nil: no bound).
	// Waiting (grace, backoff, leases) does not hold a slot.
	Limiter chan struct{}
	// Rand seeds jitter and backoff (nil: random), for reproducible
	// simulations. It is only ever used under the Rotator's lock: each
	// rotation and each client loop draws a seed from it for a source of
	// its own.
	Rand *mrand.Rand
	// ReconcileInterval: how often the daemon sends Affix the set of
	// secrets the record implies again (stable: [current]; overlap:
	// [current, previous]), so that drift from a late request or an
	// out-of-band change lasts at most this long (0: never).
	ReconcileInterval time.Duration
	// RereadInterval: during a grace period (driving or following), the
	// record is read again at least this often, so that a grace_until
	// moved by an operator is honoured (default 30s).
	RereadInterval time.Duration
	// ClockSkewMargin: a process that drops the old secret of an overlap
	// it did not start waits until grace_until plus this margin, since its
	// clock may run ahead of the one that wrote grace_until.
	ClockSkewMargin time.Duration
	// Redact, if set, removes the secrets in play (API keys, the Vault
	// token, webhook keys) from the text the rotator writes into the record
	// (last_error, step_error), in every encoding.
	Redact func(string) string
	// ReconcileClaims: a stable client's reconcile fences its request with
	// a claim in the record's custom metadata instead of the record's
	// lease, so that it writes no KV version (claim.go). Store must then
	// have Claim and WriteClaimed (vault.Store and vaultmem do), and every
	// process writing the record must run with it (the CLI always does).
	ReconcileClaims bool
	// Changes, if set, is the change marker (changes.go): operator actions
	// and -once write it after they change a record, and the daemon (Run,
	// Serve) reads it every RereadInterval, in a goroutine of its own on
	// Clock, to read its stable records again at once when it moved.
	Changes ChangeMarker
	// Events, if set, is told what happens to rotations (started, new
	// secret current, completed, aborted, failed, operator actions; see
	// Event), for webhook notifications. It is called on the rotation's
	// goroutine and must return at once: it must never block or fail a
	// rotation (notify.Notifier.Send only queues).
	Events func(Event)
}

// Progress describes where a rotation stands.
type Progress struct {
	Client     string
	Phase      vault.Phase
	RotationID string
	GraceUntil time.Time
	Now        time.Time
	Waiting    string // why the rotation is idle, if it is
}

// Rotator runs rotations. It is safe for concurrent use by one goroutine per client.
type Rotator struct {
	opt    Options
	clock  clockwork.Clock
	log    *zap.Logger
	status *statusBoard
	randMu sync.Mutex // guards opt.Rand

	assertMu sync.Mutex
	asserted map[string]time.Time // by client name

	changes changeSignal // the change marker moved (changes.go)
}

// assertedSince returns when this process last saw Affix confirm the set
// the record of client implies, or, if it never has, when it first looked
// at the client. It outlives runs: a reconcile run that finds another
// process's live lease ends at once, and the next run must not start the
// reconcile interval again from zero.
func (r *Rotator) assertedSince(client string, now time.Time) time.Time {
	r.assertMu.Lock()
	defer r.assertMu.Unlock()
	t, ok := r.asserted[client]
	if !ok {
		t = now
		r.asserted[client] = t
	}
	return t
}

// confirmed records that Affix confirmed the set the record of client implies at t.
func (r *Rotator) confirmed(client string, t time.Time) {
	r.assertMu.Lock()
	defer r.assertMu.Unlock()
	r.asserted[client] = t
}

// New returns a Rotator with defaults filled in.
func New(opt Options) *Rotator {
	if opt.Clock == nil {
		opt.Clock = clockwork.NewRealClock()
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.LeaseDuration <= 0 {
		opt.LeaseDuration = 5 * time.Minute
	}
	if opt.RetryInitial <= 0 {
		opt.RetryInitial = time.Second
	}
	if opt.RetryMax < opt.RetryInitial {
		opt.RetryMax = max(5*time.Minute, opt.RetryInitial)
	}
	if opt.RequestTimeout <= 0 {
		opt.RequestTimeout = 30 * time.Second
	}
	if opt.FollowInterval <= 0 {
		opt.FollowInterval = 5 * time.Second
	}
	if opt.Rand == nil {
		opt.Rand = mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	}
	if opt.RereadInterval <= 0 {
		opt.RereadInterval = 30 * time.Second
	}
	if _, ok := opt.Store.(claimStore); opt.ReconcileClaims && !ok {
		panic(fmt.Sprintf("rotator: ReconcileClaims needs a store with Claim and WriteClaimed; %T has not", opt.Store))
	}
	return &Rotator{opt: opt, clock: opt.Clock, log: opt.Logger, status: newStatusBoard(opt.Clock.Now()), asserted: map[string]time.Time{}}
}

// newRand returns a random source of the caller's own, seeded from
// Options.Rand: a *rand.Rand is not safe for concurrent use, and every
// client runs in a goroutine of its own.
func (r *Rotator) newRand() *mrand.Rand {
	r.randMu.Lock()
	defer r.randMu.Unlock()
	return mrand.New(mrand.NewPCG(r.opt.Rand.Uint64(), r.opt.Rand.Uint64()))
}

// Trigger says why Rotate was called, which decides whether a stable client
// starts a new rotation. A client that is not stable is always resumed.
type Trigger struct {
	Reason string    // ReasonSchedule, ReasonOnce, ReasonStartup
	Time   time.Time // when it fired
	MaxAge time.Duration
	// Audit, if set, marks a rotation an operator asked for (-once -grace):
	// the rotation it starts records it as the record's last_action.
	Audit *Audit
	// Grace, if positive, is an operator's grace for this rotation (-once
	// -grace): it is written in the record when the rotation is staged, so
	// whoever confirms it uses it. With Reason ReasonOnce it also marks the
	// leaked-secret incident: a grace in flight of a rotation staged before
	// Time is ended at once (the secret current at Time must stop being
	// accepted within Grace), then a new rotation runs with Grace.
	Grace time.Duration
}

// Trigger reasons.
const (
	// ReasonSchedule: the cron schedule fired at Time. A rotation completed
	// at or after Time (by a replica, say) satisfies it.
	ReasonSchedule = "schedule"
	// ReasonOnce: a human asked for a rotation at Time (-once); same rule.
	ReasonOnce = "once"
	// ReasonStartup: the daemon started; rotate only if the last rotation
	// is older than MaxAge (or unknown), else just resume what is in flight.
	ReasonStartup = "startup"
	// ReasonReconcile: send Affix the set the record implies again
	// (rotation.reconcile_interval); never starts a rotation, resumes one
	// in flight, and waits out another process's lease (its holder may be
	// frozen) before it sends.
	ReasonReconcile = "reconcile"
	// ReasonAction: an operator action drives the record it just wrote;
	// never starts a rotation.
	ReasonAction = "action"
)

// wantsNew reports whether a stable record needs a new rotation for t
// (not a -once: see run.satisfied). rotatedAt is the record's rotated_at
// as trusted (Rotator.trusted).
func (t Trigger) wantsNew(rotatedAt, now time.Time) bool {
	switch t.Reason {
	case ReasonReconcile, ReasonAction:
		return false
	case ReasonStartup:
		return t.MaxAge > 0 && (rotatedAt.IsZero() || now.Sub(rotatedAt) > t.MaxAge)
	default:
		return rotatedAt.Before(t.Time)
	}
}

// Outcome is how a call to Rotate ended.
type Outcome struct {
	Result     string // ResultSuccess, ResultAborted, ResultFailed, or "" (nothing to do)
	RotationID string
	// ByOther: the rotation that satisfied the trigger was completed by
	// another process (a replica, the daemon during -once).
	ByOther bool
	// RotatedAt is the record's rotated_at when Rotate returned (zero if
	// unknown; a time in the future beyond the clock-skew margin is taken
	// as now): the anchor of the client's schedule.
	RotatedAt time.Time
	// SeededAt anchors the schedule of a record with no rotated_at (seeded
	// by hand): the record's seeded_at, or the created_time of the version
	// read. Zero if unknown.
	SeededAt time.Time
}

// ErrAborted wraps the reason a rotation was aborted (Affix definitely
// rejected the new secret; the old one stays current).
var ErrAborted = errors.New("rotation aborted")

func newRotationID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sleep waits d on the injected clock, emitting progress every
// ProgressInterval; it returns ctx's error if ctx ends first, and nil as
// soon as changed is closed (another process changed a record).
func (r *Rotator) sleep(ctx context.Context, d time.Duration, p *Progress, changed <-chan struct{}) error {
	for d > 0 {
		step := d
		if r.opt.Progress != nil && r.opt.ProgressInterval > 0 && step > r.opt.ProgressInterval {
			step = r.opt.ProgressInterval
		}
		t := r.clock.NewTimer(step)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
			t.Stop()
			return nil
		case <-t.Chan():
		}
		d -= step
		if d > 0 && p != nil && r.opt.Progress != nil {
			q := *p
			q.Now = r.clock.Now()
			r.opt.Progress(q)
		}
	}
	return ctx.Err()
}

func (r *Rotator) progress(c *Client, rec vault.Record, waiting string) {
	if r.opt.Progress == nil {
		return
	}
	r.opt.Progress(Progress{Client: c.Name, Phase: rec.Phase, RotationID: rec.RotationID, GraceUntil: rec.GraceUntil, Now: r.clock.Now(), Waiting: waiting})
}

func (r *Rotator) acquire(ctx context.Context) (release func(), err error) {
	if r.opt.Limiter == nil {
		return func() {}, nil
	}
	select {
	case r.opt.Limiter <- struct{}{}:
		return func() { <-r.opt.Limiter }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fields returns the log fields every rotation line carries.
func fields(c *Client, rec vault.Record) []zap.Field {
	return []zap.Field{zap.String("client", c.Name), zap.String("rotation_id", rec.RotationID), zap.String("phase", string(rec.Phase))}
}

// SetProgress installs a progress callback (see Options.Progress). Call it
// before the first Rotate.
func (r *Rotator) SetProgress(fn func(Progress), interval time.Duration) {
	r.opt.Progress, r.opt.ProgressInterval = fn, interval
}
