package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/backoff"
	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/redact"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// run is the daemon, -once or an operator action; warnings (from
// startCheck) are logged at start.
func run(ctx context.Context, cfg *config.Config, f flags, env Env, warnings []*config.Error) int {
	// The secrets in play, redacted from every line logged, /status,
	// /readyz and webhook payloads: API keys, the Vault token (and those
	// logins obtain), webhook signing keys.
	secrets := &redact.Set{Min: minRedacted}
	// What the one-shot commands print (a FAILED line quotes an error)
	// goes through it too: each print is one write.
	env.Stdout = redact.Writer{W: env.Stdout, Set: secrets}
	log, err := newLogger(cfg.Log, redact.Writer{W: env.Stderr, Set: secrets})
	if err != nil {
		fmt.Fprintf(env.Stderr, "affix-rotator: log: %v\n", err)
		return ExitUsage
	}
	defer func() { _ = log.Sync() }()

	auth, err := vaultAuth(cfg.Vault.Auth, env.Getenv)
	if err != nil {
		fmt.Fprintf(env.Stderr, "affix-rotator: invalid config %s:\n%v\n", f.config, err)
		return ExitUsage
	}
	secrets.AddValues(auth.Token)
	addAPIKeys(secrets, cfg, env.Getenv)
	selected := cfg.Clients
	if f.client != "" {
		selected = nil
		for _, c := range cfg.Clients {
			if c.Name == f.client {
				selected = append(selected, c)
			}
		}
	}
	clients, err := buildClients(cfg, selected, env.Getenv)
	if err != nil {
		fmt.Fprintf(env.Stderr, "affix-rotator: invalid config %s:\n%v\n", f.config, err)
		return ExitUsage
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := rotator.NewMetrics(reg)

	instanceID := cfg.InstanceID
	switch {
	case f.once:
		instanceID = fmt.Sprintf("%s/once-%s", cfg.InstanceID, randomHex(4))
	case f.action() != "":
		instanceID = fmt.Sprintf("%s/%s-%s", cfg.InstanceID, f.action(), randomHex(4))
	}
	log = log.With(zap.String("instance_id", instanceID))

	logStart(log, cfg, f, env.Getenv, clients)
	logWarnings(log, warnings)
	logProxies(log, cfg, vaultAddress(cfg, env.Getenv), env.Getenv)
	for _, w := range cfg.SecretFileWarnings() {
		log.Warn("secret file too open: "+w.Problem, zap.String("key", w.KeyPath()))
	}
	notifier, err := buildNotifier(cfg, env.Getenv, reg, log, secrets)
	if err != nil {
		fmt.Fprintf(env.Stderr, "affix-rotator: invalid config %s:\n%v\n", f.config, err)
		return ExitUsage
	}
	// On the way out (SIGTERM, -once done or failed), what is queued is
	// delivered for a bounded time.
	defer flushNotifications(notifier, log)
	events := eventsTo(notifier)
	if !f.oneShot() {
		return runDaemon(ctx, cfg, f, env, log, auth, reg, metrics, instanceID, clients, events, secrets)
	}
	var store atomic.Pointer[vault.Store]
	defer func() { closeStore(store.Load(), log) }()
	r, code := connectAndBuild(ctx, cfg, f, env, log, auth, metrics, nil, instanceID, &store, events, secrets)
	if r == nil {
		return code
	}
	if f.action() != "" {
		return runAction(ctx, r, store.Load(), clients[0], f, log, env)
	}
	if f.grace > 0 {
		audit, code := prepareAction(ctx, store.Load(), clients[0], rotator.ActionRotate, f.reason, log, env)
		if code != ExitOK {
			return code
		}
		c := *clients[0]
		if f.grace < c.GracePeriod {
			fmt.Fprintf(env.Stdout, "%s: WARNING: -grace %s is shorter than the configured grace_period %s: consumers that have not read the new secret within %s of it becoming current will fail to authenticate with the old one\n", c.Name, f.grace, c.GracePeriod, f.grace)
		}
		for _, cc := range cfg.Clients {
			if mr := cc.Consumers.MaxRefresh.D(); cc.Name == c.Name && mr > 0 && f.grace <= mr {
				fmt.Fprintf(env.Stdout, "%s: WARNING: -grace %s does not exceed consumers.max_refresh %s: the slowest consumers will still hold the old secret when it is dropped and fail to authenticate until they refresh\n", c.Name, f.grace, mr)
			}
		}
		c.GracePeriod = f.grace
		clients = []*rotator.Client{&c}
		return runOnce(ctx, r, clients, f, env, &audit)
	}
	return runOnce(ctx, r, clients, f, env, nil)
}

// oneShot reports whether the command runs once and exits (no listener).
func (f flags) oneShot() bool { return f.once || f.action() != "" }

// connectAndBuild connects to Vault, retrying while Vault is unreachable
// (for ever in the daemon, for -retry-timeout with -once), and builds the
// rotator.
//
// A Vault that denies the credentials (401/403) is not an outage: -once and
// the operator actions exit 1 at once, saying so on stdout; the daemon logs
// an ERROR saying what to check and keeps trying (the token can be fixed).
// health (daemon only) records each failure for /status and /readyz.
// events (nil: none) is told what happens to rotations (notifications).
func connectAndBuild(ctx context.Context, cfg *config.Config, f flags, env Env, log *zap.Logger, auth vault.Auth, metrics *rotator.Metrics, health *vaultHealth, instanceID string, store *atomic.Pointer[vault.Store], events func(rotator.Event), secrets *redact.Set) (*rotator.Rotator, int) {
	vc := vault.Config{
		Address: cfg.Vault.Address, Namespace: cfg.Vault.Namespace, KVMount: cfg.Vault.KVMount,
		Timeout: cfg.Vault.Timeout.D(), CACert: cfg.Vault.TLS.CACert, InsecureSkipVerify: cfg.Vault.TLS.InsecureSkipVerify,
		Auth: auth, Observer: metrics, Logger: log, Secrets: secrets,
	}
	if health != nil {
		vc.Observer = health
	}
	bo := backoff.New(time.Second, 30*time.Second, nil)
	start := time.Now()
	for {
		s, err := vault.New(ctx, vc)
		if err == nil {
			store.Store(s)
			break
		}
		if ctx.Err() != nil {
			if f.oneShot() {
				fmt.Fprintln(env.Stdout, "interrupted while waiting for vault: nothing was changed")
			}
			return nil, ExitFailed
		}
		if health != nil {
			health.failed(err)
		}
		if errors.Is(err, vault.ErrDenied) {
			hint := fmt.Sprintf("vault denied the credentials (auth method %s): %s", auth.Method, auth.DeniedHint())
			if f.oneShot() {
				log.Error(hint, zap.Error(err))
				fmt.Fprintf(env.Stdout, "FAILED: %s: %v\n", hint, err)
				return nil, ExitFailed
			}
			d := bo.Next()
			log.Error(hint+"; retrying", zap.Error(err), zap.Duration("retry_in", d))
			select {
			case <-ctx.Done():
				return nil, ExitFailed
			case <-time.After(d):
			}
			continue
		}
		if f.oneShot() && f.retryTimeout > 0 && time.Since(start) > f.retryTimeout {
			log.Error("cannot connect to vault; giving up", zap.Error(err), zap.Duration("retry_timeout", f.retryTimeout))
			fmt.Fprintf(env.Stdout, "FAILED: cannot connect to vault for %s (-retry-timeout); nothing was changed: %v\n", f.retryTimeout, err)
			return nil, ExitFailed
		}
		d := bo.Next()
		if f.oneShot() && f.retryTimeout > 0 {
			stopAt := start.Add(f.retryTimeout)
			d = max(time.Millisecond, min(d, time.Until(stopAt)+time.Millisecond))
			log.Warn(fmt.Sprintf("cannot connect to vault; retrying until %s, then giving up (-retry-timeout %s)", stopAt.UTC().Format(time.RFC3339), f.retryTimeout),
				zap.Error(err), zap.Duration("retry_in", d), zap.Time("gives_up_at", stopAt))
		} else {
			log.Warn("cannot connect to vault; retrying", zap.Error(err), zap.Duration("retry_in", d))
		}
		select {
		case <-ctx.Done():
			if f.oneShot() {
				fmt.Fprintln(env.Stdout, "interrupted while waiting for vault: nothing was changed")
			}
			return nil, ExitFailed
		case <-time.After(d):
		}
	}
	opt := rotator.Options{
		InstanceID: instanceID,
		Store:      store.Load(),
		Changes:    store.Load(),
		// Hourly reconciles of stable clients add no KV version
		// (docs/design.md, "The reconcile claim").
		ReconcileClaims: true,
		Redact:          secrets.String,
		Metrics:         metrics,
		Logger:          log,
		LeaseDuration:   cfg.Rotation.LeaseDuration.D(),
		RetryInitial:    cfg.Rotation.RetryInitial.D(),
		RetryMax:        cfg.Rotation.RetryMax.D(),
		RequestTimeout:  maxAffixTimeout(cfg),
		Limiter:         make(chan struct{}, max(1, cfg.Rotation.MaxConcurrent)),

		ReconcileInterval: cfg.Rotation.ReconcileInterval.D(),
		RereadInterval:    cfg.Rotation.RereadInterval.D(),
		ClockSkewMargin:   cfg.Rotation.ClockSkewMargin.D(),
		Events:            events,
	}
	if f.oneShot() {
		opt.GiveUpAfter = f.retryTimeout
		opt.FailOnDenied = true
	}
	return rotator.New(opt), ExitOK
}

func maxAffixTimeout(cfg *config.Config) time.Duration {
	d := cfg.Affix.Timeout.D()
	for _, c := range cfg.Clients {
		d = max(d, cfg.AffixFor(c).Timeout.D())
	}
	return d
}

// runOnce rotates the selected clients now, concurrently, printing progress
// lines, and exits 0 only if every one of them ended stable with a rotation
// completed after the run started.
//
// Progress: a line on every change of phase (or rotation), on every retry
// (saying when -once gives up), and otherwise at most once a minute per
// client (a 24h grace prints about 1,440 lines, not one every few seconds).
// An interrupt (SIGINT, SIGTERM) says how to go on.
func runOnce(ctx context.Context, rot *rotator.Rotator, clients []*rotator.Client, f flags, env Env, audit *rotator.Audit) int {
	var mu sync.Mutex
	printf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(env.Stdout, format, args...)
	}
	now := time.Now()
	pr := newProgressPrinter(time.Minute, f.retryTimeout)
	rot.SetProgress(func(p rotator.Progress) {
		if line, ok := pr.line(p); ok {
			printf("%s\n", line)
		}
	}, time.Minute)
	var wg sync.WaitGroup
	failed := atomic.Bool{}
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			trig := rotator.Trigger{Reason: rotator.ReasonOnce, Time: now}
			if audit != nil {
				trig.Audit, trig.Grace = audit, c.GracePeriod
			}
			out, err := rot.Rotate(ctx, c, trig)
			switch {
			case err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
				failed.Store(true)
				printf("%s: %s\n", c.Name, interrupted(f, c.Name))
			case err != nil:
				failed.Store(true)
				printf("%s: FAILED: %v\n", c.Name, err)
			case out.Result == rotator.ResultSuccess && out.ByOther:
				printf("%s: done: rotation %s was completed by another process\n", c.Name, out.RotationID)
			case out.Result == rotator.ResultSuccess:
				printf("%s: done: rotation %s complete, the old secret is no longer accepted\n", c.Name, out.RotationID)
			default:
				failed.Store(true)
				printf("%s: FAILED: ended with result %q\n", c.Name, out.Result)
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		return ExitFailed
	}
	return ExitOK
}

// interrupted is what -once or an operator action prints when SIGINT or
// SIGTERM stops it: the record keeps its phase, and the command to go on.
func interrupted(f flags, client string) string {
	resume := fmt.Sprintf("affix-rotator once --config %s --client %s", f.config, client)
	switch f.action() {
	case rotator.ActionExtendGrace, rotator.ActionReacceptPrevious:
		return fmt.Sprintf("interrupted: the rotation stays resumable; run `affix-rotator status --config %s --client %s` to see where it stands, then %s again (or let a daemon go on)", f.config, client, f.action())
	}
	return fmt.Sprintf("interrupted: the rotation stays resumable; run `%s` to go on (or let a daemon go on)", resume)
}

// progressPrinter thins out -once's progress lines (see runOnce).
type progressPrinter struct {
	mu           sync.Mutex
	every        time.Duration // at most one line per client this often while nothing changes
	retryTimeout time.Duration // -retry-timeout: when retries give up (0: never)
	last         map[string]printed
}

type printed struct {
	phase, rotation, kind string
	at                    time.Time
	failingSince          time.Time // first retry of the current run of failures
}

func newProgressPrinter(every, retryTimeout time.Duration) *progressPrinter {
	return &progressPrinter{every: every, retryTimeout: retryTimeout, last: map[string]printed{}}
}

// line returns the line to print for p, and whether to print it.
func (pp *progressPrinter) line(p rotator.Progress) (string, bool) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	prev, seen := pp.last[p.Client]
	cur := printed{phase: string(p.Phase), rotation: p.RotationID, kind: waitingKind(p.Waiting), at: p.Now}
	retrying := strings.HasPrefix(p.Waiting, "retrying in ")
	if retrying {
		cur.failingSince = prev.failingSince
		if cur.failingSince.IsZero() {
			cur.failingSince = p.Now
		}
	}
	s := formatProgress(p)
	if retrying && pp.retryTimeout > 0 {
		s += fmt.Sprintf(" (gives up at %s: -retry-timeout %s; the rotation stays resumable)", cur.failingSince.Add(pp.retryTimeout).UTC().Format(time.RFC3339), pp.retryTimeout)
	}
	changed := !seen || prev.phase != cur.phase || prev.rotation != cur.rotation || prev.kind != cur.kind
	if !changed && !retrying && p.Now.Sub(prev.at) < pp.every {
		prev.failingSince = cur.failingSince
		pp.last[p.Client] = prev
		return s, false
	}
	pp.last[p.Client] = cur
	return s, true
}

// waitingKind is what a waiting text says without its numbers ("grace
// period", "rotation driven by x (lease until "): a new kind is printed at
// once.
func waitingKind(w string) string {
	if i := strings.IndexAny(w, "0123456789"); i >= 0 {
		return w[:i]
	}
	return w
}

func formatProgress(p rotator.Progress) string {
	s := fmt.Sprintf("%s: phase=%s", p.Client, p.Phase)
	if p.RotationID != "" {
		s += " rotation=" + p.RotationID
	}
	if !p.GraceUntil.IsZero() && p.Now.Before(p.GraceUntil) {
		s += fmt.Sprintf(" grace_left=%s (until %s)", p.GraceUntil.Sub(p.Now).Round(time.Second), p.GraceUntil.UTC().Format(time.RFC3339))
	}
	if p.Waiting != "" {
		s += " waiting: " + p.Waiting
	}
	return s
}

func shutdown(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
