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
	"golang.org/x/time/rate"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// rateLimited answers 429 + Retry-After: 1 beyond a token bucket, as an API
// rate-limiting one API key would.
type rateLimited struct {
	next     http.Handler
	lim      *rate.Limiter
	rejected atomic.Int64
	served   atomic.Int64
}

func newRateLimited(next http.Handler, rps float64, burst int) *rateLimited {
	return &rateLimited{next: next, lim: rate.NewLimiter(rate.Limit(rps), burst)}
}

func (h *rateLimited) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.lim.Allow() {
		h.rejected.Add(1)
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"message":"Too Many Requests"}`))
		return
	}
	h.served.Add(1)
	h.next.ServeHTTP(w, r)
}

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

func (e *env) fleet(ctx context.Context, runs, n int, rps float64) error {
	fmt.Printf("\n[fleet] %d clients, one API key, fake limited to %.0f req/s (burst 5, 429 + Retry-After: 1 beyond); client limiter rate %.0f burst 1, max_concurrent 10\n", n, rps, rps)
	keys := make([]string, n)
	paths := make([]string, n)
	for i := range n {
		k, p, _, err := e.seed(ctx, "bench/fleet", time.Time{})
		if err != nil {
			return err
		}
		keys[i], paths[i] = k, p
	}
	shared := "shared-key"
	sched, err := cron.ParseStandard("@every 720h")
	if err != nil {
		return err
	}
	var walls, ideals, rejected, failed sample
	for range runs {
		lim := newRateLimited(&router{next: e.fake.Handler(), shared: shared, keys: keys}, rps, 5)
		srv := httptest.NewServer(lim)
		clientLim := rate.NewLimiter(rate.Limit(rps), 1)
		store, err := vault.New(ctx, vault.Config{Address: e.vault.Addr, KVMount: "secret", Auth: vault.TokenAuth(secret.New(e.vault.Token)), Logger: zap.NewNop()})
		if err != nil {
			srv.Close()
			return err
		}
		r := rotator.New(rotator.Options{InstanceID: "bench-fleet", Store: store, Metrics: rotator.NewMetrics(prometheus.NewRegistry()),
			Logger: discardLogger(), RetryInitial: 200 * time.Millisecond, RetryMax: 5 * time.Second, GiveUpAfter: 2 * time.Minute,
			Limiter: make(chan struct{}, 10)})
		var nFailed atomic.Int64
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range n {
			ac, err := affix.New(srv.URL+"/c/"+strconv.Itoa(i), secret.New(shared), affix.WithLimiter(clientLim), affix.WithTimeout(10*time.Second))
			if err != nil {
				srv.Close()
				return err
			}
			c := &rotator.Client{Name: "c" + strconv.Itoa(i), VaultPath: paths[i], Schedule: sched, GracePeriod: grace, Affix: ac}
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
		srv.Close()
		served := lim.served.Load()
		walls = append(walls, float64(wall))
		ideals = append(ideals, float64(time.Duration(float64(served)/rps*float64(time.Second))))
		rejected = append(rejected, float64(lim.rejected.Load()))
		failed = append(failed, float64(nFailed.Load()))
	}
	fmt.Printf("  failed rotations    %.0f (max %.0f; must be 0)\n", failed.median(), failed.max())
	fmt.Printf("  429s received       %.0f (%.0f–%.0f)\n", rejected.median(), rejected.min(), rejected.max())
	fmt.Printf("  wall time           %s   ideal (requests served / rate) %s   ratio %s\n", fmtDur(walls), fmtDur(ideals), fmtRatio(ratios(walls, ideals)))
	if failed.max() > 0 {
		return fmt.Errorf("%0.f rotations failed", failed.max())
	}
	return nil
}
