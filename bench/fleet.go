package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/pace"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// router maps /c/<i>/<path> to the fake's <path> with client i's key: the
// fake knows one client per key, while the fleet shares one API key (and
// so one rate limit) as Affix accounts do.
type router struct {
	next   http.Handler
	shared string
	keys   []string
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/c/")
	i, p, ok2 := strings.Cut(rest, "/")
	n, err := strconv.Atoi(i)
	if !ok || !ok2 || err != nil || n < 0 || n >= len(rt.keys) || r.Header.Get("Authorization") != rt.shared {
		http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + p
	r2.Header.Set("Authorization", rt.keys[n])
	rt.next.ServeHTTP(w, r2)
}

// floorWatch is the fleet's HTTP transport, under the daemon's pacer: it
// sees every request as it is handed to the network and every 429 as it
// comes back, and counts the requests sent after a 429 arrived and before
// its Retry-After ran out, for the whole account.
type floorWatch struct {
	next http.RoundTripper

	mu         sync.Mutex
	floor      time.Time // latest Retry-After floor
	receivedAt time.Time // when the 429 setting it arrived
	sent       int
	early      int // sent before a floor, more than 1ms after its 429 arrived
	inFlight   int // sent before a floor, within 1ms of its 429's arrival
	firstEarly time.Duration
}

func (f *floorWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	now := time.Now()
	f.sent++
	if now.Before(f.floor) {
		// A request the pacer let through a few microseconds before the
		// 429 reached it was already on its way; count it apart.
		if now.Sub(f.receivedAt) < time.Millisecond {
			f.inFlight++
		} else {
			f.early++
			if f.firstEarly == 0 {
				f.firstEarly = f.floor.Sub(now)
			}
		}
	}
	f.mu.Unlock()
	resp, err := f.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		now := time.Now()
		f.mu.Lock()
		if fl := now.Add(time.Duration(secs) * time.Second); fl.After(f.floor) {
			f.floor, f.receivedAt = fl, now
		}
		f.mu.Unlock()
	}
	return resp, err
}

// fleetGrace is the fleet's grace period: short, so the figure is the
// requests' pacing, not the wait.
const fleetGrace = time.Millisecond

// fleetVariant is one way of running the fleet.
type fleetVariant struct {
	name    string
	paceRPS float64 // the daemon's affix.rate_limit (0: none; only the 429 holds)
}

func (e *env) fleet(ctx context.Context, runs, n int, rps float64, concurrency int) error {
	fmt.Printf("\n[fleet] %d clients due at once, one API key; the fake allows %.0f req/s (burst %.0f, 429 + Retry-After beyond); max_concurrent %d; grace %s\n", n, rps, rps, concurrency, fleetGrace)
	keys := make([]string, n)
	paths := make([]string, n)
	for i := range n {
		k, p, _, err := e.seed(ctx, "bench/fleet", time.Time{})
		if err != nil {
			return err
		}
		keys[i], paths[i] = k, p
	}
	defer e.fake.SetRateLimit(0, 0)
	var errs []string
	for _, v := range []fleetVariant{
		{name: fmt.Sprintf("paced (affix.rate_limit: %.0f, burst 1)", rps), paceRPS: rps},
		{name: "unpaced (affix.rate_limit: 0; only the account-wide 429 hold)", paceRPS: 0},
	} {
		var walls, ideals, limited, failed, early, inFlight, sent sample
		for range runs {
			e.fake.SetRateLimit(rps, int(rps)) // a fresh, full bucket each run
			res, err := e.fleetRun(ctx, v, keys, paths, concurrency)
			if err != nil {
				return err
			}
			walls = append(walls, float64(res.wall))
			ideals = append(ideals, float64(time.Duration(float64(res.served)/rps*float64(time.Second))))
			limited = append(limited, float64(res.limited))
			failed = append(failed, float64(res.failed))
			early = append(early, float64(res.watch.early))
			inFlight = append(inFlight, float64(res.watch.inFlight))
			sent = append(sent, float64(res.watch.sent))
		}
		fmt.Printf("  %s\n", v.name)
		fmt.Printf("    failed rotations             %.0f (max %.0f; must be 0)\n", failed.median(), failed.max())
		fmt.Printf("    requests sent                %.0f (%.0f–%.0f), 429s %.0f (%.0f–%.0f)\n", sent.median(), sent.min(), sent.max(), limited.median(), limited.min(), limited.max())
		fmt.Printf("    sent before a Retry-After    %.0f (max %.0f; must be 0); already on the way when the 429 arrived (<1ms): max %.0f\n", early.median(), early.max(), inFlight.max())
		fmt.Printf("    wall time                    %s   ideal (requests served / rate) %s   ratio %s\n", fmtDur(walls), fmtDur(ideals), fmtRatio(ratios(walls, ideals)))
		if failed.max() > 0 {
			errs = append(errs, fmt.Sprintf("%s: %.0f rotations failed", v.name, failed.max()))
		}
		if early.max() > 0 {
			errs = append(errs, fmt.Sprintf("%s: %.0f requests sent before a Retry-After floor", v.name, early.max()))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

type fleetResult struct {
	wall    time.Duration
	served  int
	limited int // 429s
	failed  int
	watch   *floorWatch
}

// fleetRun rotates every client once, all due at the same instant, through
// one pacer as the daemon wires clients sharing an API key.
func (e *env) fleetRun(ctx context.Context, v fleetVariant, keys, paths []string, concurrency int) (fleetResult, error) {
	shared := "shared-key"
	sched, err := cron.ParseStandard("@every 720h")
	if err != nil {
		return fleetResult{}, err
	}
	before := len(e.fake.Requests())
	srv := httptest.NewServer(&router{next: e.fake.Handler(), shared: shared, keys: keys})
	defer srv.Close()
	watch := &floorWatch{next: http.DefaultTransport.(*http.Transport).Clone()}
	hc := &http.Client{Transport: watch, Timeout: 10 * time.Second}
	acct := pace.New(v.paceRPS, 1, nil)
	store, err := vault.New(ctx, vault.Config{Address: e.vault.Addr, KVMount: "secret", Auth: vault.TokenAuth(secret.New(e.vault.Token)), Logger: zap.NewNop()})
	if err != nil {
		return fleetResult{}, err
	}
	r := rotator.New(rotator.Options{InstanceID: "bench-fleet", Store: store, ReconcileClaims: true, Metrics: rotator.NewMetrics(prometheus.NewRegistry()),
		Logger: discardLogger(), RetryInitial: 200 * time.Millisecond, RetryMax: 5 * time.Second, GiveUpAfter: 5 * time.Minute,
		Limiter: make(chan struct{}, concurrency)})
	var nFailed atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range keys {
		ac, err := affix.New(srv.URL+"/c/"+strconv.Itoa(i), secret.New(shared), affix.WithLimiter(acct), affix.WithHTTPClient(hc), affix.WithTimeout(10*time.Second))
		if err != nil {
			return fleetResult{}, err
		}
		c := &rotator.Client{Name: "c" + strconv.Itoa(i), VaultPath: paths[i], Schedule: sched, GracePeriod: fleetGrace, Affix: ac}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := r.Rotate(ctx, c, rotator.Trigger{Reason: rotator.ReasonOnce, Time: t0})
			if err != nil || out.Result != rotator.ResultSuccess {
				nFailed.Add(1)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	res := fleetResult{wall: wall, failed: int(nFailed.Load()), watch: watch}
	for _, q := range e.fake.Requests()[before:] {
		switch q.Status {
		case http.StatusOK:
			res.served++
		case http.StatusTooManyRequests:
			res.limited++
		}
	}
	return res, nil
}
