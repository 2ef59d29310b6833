// Command bench measures affix-rotator against baselines measured in the same
// run, on a real Vault dev server and the in-process Affix fake. See
// docs/PERFORMANCE.md.
//
//	go run ./bench [-runs 5] [-idle 60s] [-fleet 1000] [-consumer-rotations 20] [-skip idle,shell,fleet,consumer]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// cpuProfile, when set, is where the overhead figure writes a CPU profile
// of our rotations.
var cpuProfile string

type env struct {
	vault *vaulttest.Server
	fake  *affixtest.Server
}

func main() {
	runs := flag.Int("runs", 5, "runs per figure (median, min–max)")
	idle := flag.Duration("idle", 60*time.Second, "idle window for the CPU figure")
	fleet := flag.Int("fleet", 1000, "clients in the fleet figure")
	fleetRate := flag.Float64("fleet-rate", 50, "requests/s the fake allows the account in the fleet figure")
	fleetConc := flag.Int("fleet-concurrency", 10, "the daemon's rotation.max_concurrent in the fleet figure")
	scrapeClients := flag.Int("scrape-clients", 1000, "configured clients for the /metrics scrape figure")
	consumerRotations := flag.Int("consumer-rotations", 20, "rotations in the consumer figure")
	consumerGrace := flag.Duration("consumer-grace", 5*time.Second, "the daemon's grace_period in the consumer figure")
	consumerRender := flag.Duration("consumer-render", time.Second, "Vault Agent's static_secret_render_interval in the consumer figure (whole seconds)")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of 500 of our rotations (overhead figure) to this file")
	skip := flag.String("skip", "", "comma-separated figures to skip: overhead,idle,scrape,shell,fleet,consumer")
	flag.Parse()
	skipped := map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		skipped[strings.TrimSpace(s)] = true
	}

	fmt.Printf("affix-rotator bench: %s %s/%s, %d CPUs, runs=%d, %s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), *runs, time.Now().UTC().Format(time.RFC3339))
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at start: %s", la)
	}
	v, err := vaulttest.Start("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer v.Stop()
	fake := affixtest.NewServer()
	defer fake.Close()
	e := &env{vault: v, fake: fake}
	ctx := context.Background()

	failed := false
	step := func(name string, fn func() error) {
		if skipped[name] {
			fmt.Printf("\n[%s] skipped\n", name)
			return
		}
		if err := fn(); err != nil {
			fmt.Printf("[%s] ERROR: %v\n", name, err)
			failed = true
		}
	}
	step("overhead", func() error { return e.overhead(ctx, *runs) })
	step("shell", func() error { return e.shell(ctx, *runs) })
	step("idle", func() error { return e.idleCost(ctx, *runs, *idle) })
	step("scrape", func() error { return e.scrape(ctx, *scrapeClients) })
	step("fleet", func() error { return e.fleet(ctx, *runs, *fleet, *fleetRate, *fleetConc) })
	step("consumer", func() error { return e.consumerFigure(ctx, *consumerRotations, *consumerGrace, *consumerRender) })
	if failed {
		os.Exit(1)
	}
}

// seed creates an Affix client for a fresh API key and its stable record
// in Vault, and returns the key, the path and the current secret.
func (e *env) seed(ctx context.Context, prefix string, rotatedAt time.Time) (key, path, s0 string, err error) {
	k, _ := secret.Generate()
	id := strings.ReplaceAll(k.Reveal(), "-", "")[:16]
	key, path = "key-"+id, prefix+"/"+id
	g, err := secret.Generate()
	if err != nil {
		return "", "", "", err
	}
	s0 = g.Reveal()
	e.fake.AddClient(key, "cid-"+id, s0)
	data := map[string]any{"client_secret": s0, "phase": "stable"}
	if !rotatedAt.IsZero() {
		data["rotated_at"] = rotatedAt.UTC().Format(time.RFC3339Nano)
	}
	if _, err := e.vault.Client().KVv2("secret").Put(ctx, path, data); err != nil {
		return "", "", "", err
	}
	return key, path, s0, nil
}
