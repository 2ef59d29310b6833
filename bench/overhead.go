package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// grace is the rotations' grace period in the overhead and shell figures:
// long enough that every program sleeps through it and reads the record
// again after it (as a correct rotation must: an operator may have moved
// grace_until). The figures leave the sleep out: they are the work before
// and after it.
const grace = 20 * time.Millisecond

// countingObserver counts Vault requests and forwards them to the metrics,
// as the daemon wires them.
type countingObserver struct {
	n    atomic.Int64
	io   atomic.Int64 // nanoseconds in Vault requests
	next vault.Observer
}

func (o *countingObserver) VaultRequest(op, result string, d time.Duration, up bool) {
	o.n.Add(1)
	o.io.Add(int64(d))
	if o.next != nil {
		o.next.VaultRequest(op, result, d, up)
	}
}

// discardLogger is the daemon's JSON logger at level info, writing nowhere,
// so the cost of building the log lines is counted.
func discardLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zapcore.InfoLevel))
}

type stepTimes struct {
	toOverlap, toStable time.Duration
	vaultReqs           int64
	// io is the time spent in the round trips themselves (Vault requests
	// and POSTs, the grace excluded): what is left is the program's own.
	io time.Duration
}

// timedAffix times the rotator's POSTs.
type timedAffix struct {
	next rotator.Affix
	io   *atomic.Int64
}

func (a timedAffix) UpdateClient(ctx context.Context, req affix.UpdateRequest) (*affix.UpdateResponse, error) {
	t := time.Now()
	defer func() { a.io.Add(int64(time.Since(t))) }()
	return a.next.UpdateClient(ctx, req)
}

// ours is the real rotator, on the real Store and Affix client.
type ours struct {
	r          *rotator.Rotator
	c          *rotator.Client
	obs        *countingObserver
	overlap    atomic.Int64 // unix nanos when the overlap write was committed
	graceUntil atomic.Int64 // unix nanos of the grace's end
}

func (e *env) newOurs(ctx context.Context) (*ours, error) {
	key, path, _, err := e.seed(ctx, "bench/ours", time.Time{})
	if err != nil {
		return nil, err
	}
	m := rotator.NewMetrics(prometheus.NewRegistry())
	o := &ours{obs: &countingObserver{next: m}}
	store, err := vault.New(ctx, vault.Config{Address: e.vault.Addr, KVMount: "secret", Timeout: 30 * time.Second,
		Auth: vault.TokenAuth(secret.New(e.vault.Token)), Observer: o.obs, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	ac, err := affix.New(e.fake.URL, secret.New(key))
	if err != nil {
		return nil, err
	}
	sched, err := cron.ParseStandard("@every 720h")
	if err != nil {
		return nil, err
	}
	o.c = &rotator.Client{Name: "bench", VaultPath: path, Schedule: sched, GracePeriod: grace, Affix: timedAffix{ac, &o.obs.io}}
	o.r = rotator.New(rotator.Options{InstanceID: "bench", Store: store, ReconcileClaims: true, Metrics: m, Logger: discardLogger(),
		Progress: func(p rotator.Progress) {
			if p.Phase == vault.PhaseOverlap && p.Waiting == "" {
				o.overlap.CompareAndSwap(0, time.Now().UnixNano())
				o.graceUntil.Store(p.GraceUntil.UnixNano())
			}
		}})
	return o, nil
}

func (o *ours) rotate(ctx context.Context) (stepTimes, error) {
	o.overlap.Store(0)
	n0, io0 := o.obs.n.Load(), o.obs.io.Load()
	t0 := time.Now()
	out, err := o.r.Rotate(ctx, o.c, rotator.Trigger{Reason: rotator.ReasonOnce, Time: t0})
	t2 := time.Now()
	if err != nil {
		return stepTimes{}, err
	}
	if out.Result != rotator.ResultSuccess {
		return stepTimes{}, fmt.Errorf("rotator: result %q", out.Result)
	}
	t1, gu := time.Unix(0, o.overlap.Load()), time.Unix(0, o.graceUntil.Load())
	return stepTimes{toOverlap: t1.Sub(t0), toStable: t2.Sub(gu), vaultReqs: o.obs.n.Load() - n0, io: time.Duration(o.obs.io.Load() - io0)}, nil
}

// bare does the same round trips with the Vault API client and net/http
// directly: no state machine, no lease checks, no metrics, no logs.
type bare struct {
	kv   *api.KVv2
	http *http.Client
	url  string
	key  string
	path string
}

func (e *env) newBare(ctx context.Context) (*bare, error) {
	key, path, _, err := e.seed(ctx, "bench/bare", time.Time{})
	if err != nil {
		return nil, err
	}
	cfg := api.DefaultConfig()
	cfg.Address = e.vault.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(e.vault.Token)
	return &bare{kv: c.KVv2("secret"), http: &http.Client{Timeout: 30 * time.Second}, url: e.fake.URL + affix.Path, key: key, path: path}, nil
}

func (b *bare) post(ctx context.Context, secrets ...string) error {
	body, _ := json.Marshal(map[string]any{"client_secret": secrets})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", b.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("affix: %d %s", resp.StatusCode, rb)
	}
	var out struct {
		ClientSecret []string `json:"client_secret"`
	}
	if err := json.Unmarshal(rb, &out); err != nil || len(out.ClientSecret) != len(secrets) {
		return fmt.Errorf("affix: unexpected answer %s", rb)
	}
	return nil
}

func (b *bare) rotate(ctx context.Context) (stepTimes, error) {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	var io time.Duration
	timed := func(f func() error) error {
		t := time.Now()
		err := f()
		io += time.Since(t)
		return err
	}
	var kvs *api.KVSecret
	get := func() (err error) { kvs, err = b.kv.Get(ctx, b.path); return err }
	put := func(data map[string]any, ver int) func() error {
		return func() (err error) { kvs, err = b.kv.Put(ctx, b.path, data, api.WithCheckAndSet(ver)); return err }
	}
	t0 := time.Now()
	if err := timed(get); err != nil {
		return stepTimes{}, err
	}
	old, _ := kvs.Data["client_secret"].(string)
	ver := kvs.VersionMetadata.Version
	g, _ := secret.Generate()
	pending := g.Reveal()
	rid := fmt.Sprintf("%x", time.Now().UnixNano())
	lease := ts(time.Now().Add(5 * time.Minute))
	staged := map[string]any{"client_secret": old, "pending_client_secret": pending, "phase": "staged", "rotation_id": rid, "lease_owner": "bare", "lease_until": lease}
	if err := timed(put(staged, ver)); err != nil {
		return stepTimes{}, err
	}
	ver = kvs.VersionMetadata.Version
	if err := timed(func() error { return b.post(ctx, pending, old) }); err != nil {
		return stepTimes{}, err
	}
	graceUntil := time.Now().Add(grace)
	overlap := map[string]any{"client_secret": pending, "previous_client_secret": old, "phase": "overlap", "rotation_id": rid, "grace_until": ts(graceUntil), "lease_owner": "bare", "lease_until": ts(graceUntil.Add(5 * time.Minute))}
	if err := timed(put(overlap, ver)); err != nil {
		return stepTimes{}, err
	}
	t1 := time.Now()
	time.Sleep(time.Until(graceUntil)) // the same grace as the rotator's
	if err := timed(get); err != nil {
		return stepTimes{}, err
	}
	ver = kvs.VersionMetadata.Version
	if err := timed(func() error { return b.post(ctx, pending) }); err != nil {
		return stepTimes{}, err
	}
	stable := map[string]any{"client_secret": pending, "phase": "stable", "rotation_id": rid, "rotated_at": ts(time.Now())}
	if err := timed(put(stable, ver)); err != nil {
		return stepTimes{}, err
	}
	t2 := time.Now()
	return stepTimes{toOverlap: t1.Sub(t0), toStable: t2.Sub(graceUntil), vaultReqs: 5, io: io}, nil
}

// rotationsPerRun: each figure of a run is the median of this many
// rotations, which keeps a shared 2-core machine's scheduler hiccups out.
const rotationsPerRun = 20

func (e *env) overhead(ctx context.Context, runs int) error {
	fmt.Printf("\n[overhead] one rotation, real rotator vs bare round trips (median of %d rotations per run; the %s grace sleep left out)\n", rotationsPerRun, grace)
	o, err := e.newOurs(ctx)
	if err != nil {
		return err
	}
	b, err := e.newBare(ctx)
	if err != nil {
		return err
	}
	// Warm up connections and code paths.
	for range 3 {
		if _, err := o.rotate(ctx); err != nil {
			return err
		}
		if _, err := b.rotate(ctx); err != nil {
			return err
		}
	}
	var oA, oB, bA, bB, oTot, bTot, oOwn, bOwn []time.Duration
	var oReqs int64
	med := func(ds []time.Duration) time.Duration { return time.Duration(durSample(ds).median()) }
	for range runs {
		var sa, sb, st, ta, tb, tt, so, to []time.Duration
		for i := range rotationsPerRun {
			// Interleaved, so both see the same machine state, and in
			// alternating order, so neither always follows the other.
			var o1, b1 stepTimes
			first, second := func() (err error) { o1, err = o.rotate(ctx); return err }, func() (err error) { b1, err = b.rotate(ctx); return err }
			if i%2 == 1 {
				first, second = second, first
			}
			if err := first(); err != nil {
				return err
			}
			if err := second(); err != nil {
				return err
			}
			sa, sb, st = append(sa, o1.toOverlap), append(sb, o1.toStable), append(st, o1.toOverlap+o1.toStable)
			so = append(so, o1.toOverlap+o1.toStable-o1.io)
			oReqs += o1.vaultReqs
			ta, tb, tt = append(ta, b1.toOverlap), append(tb, b1.toStable), append(tt, b1.toOverlap+b1.toStable)
			to = append(to, b1.toOverlap+b1.toStable-b1.io)
		}
		oA, oB, oTot = append(oA, med(sa)), append(oB, med(sb)), append(oTot, med(st))
		bA, bB, bTot = append(bA, med(ta)), append(bB, med(tb)), append(bTot, med(tt))
		oOwn, bOwn = append(oOwn, med(so)), append(bOwn, med(to))
	}
	row := func(name string, a, b []time.Duration) {
		fmt.Printf("  %-22s ours %-28s bare %-28s ratio %s\n", name, fmtDur(durSample(a)), fmtDur(durSample(b)), fmtRatio(ratios(durSample(a), durSample(b))))
	}
	row("trigger→overlap", oA, bA)
	row("grace end→stable", oB, bB)
	row("whole rotation", oTot, bTot)
	fmt.Printf("  %-22s ours %-28s bare %s\n", "outside round trips", fmtDur(durSample(oOwn)), fmtDur(durSample(bOwn)))
	fmt.Printf("  Vault requests per rotation: ours %.2f, bare 5 (Affix POSTs: 2 each); target ratio ≤ 1.05×\n", float64(oReqs)/float64(runs*rotationsPerRun))
	if cpuProfile == "" {
		return nil
	}
	// Where this process spends its CPU in our rotations alone, the bare
	// program not running: go tool pprof -top <file>.
	f, err := os.Create(cpuProfile)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	const profiled = 500
	t0 := time.Now()
	for range profiled {
		if _, err := o.rotate(ctx); err != nil {
			pprof.StopCPUProfile()
			return err
		}
	}
	pprof.StopCPUProfile()
	fmt.Printf("  CPU profile of %d of our rotations (%s) written to %s\n", profiled, time.Since(t0).Round(time.Millisecond), cpuProfile)
	return nil
}
