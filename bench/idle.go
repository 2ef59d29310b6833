package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

const clkTck = 100 // USER_HZ on Linux (getconf CLK_TCK)

// daemon is the real binary running against the bench's Vault and fake.
type daemon struct {
	cmd    *exec.Cmd
	listen string
	out    bytes.Buffer
	done   chan struct{}
}

func buildBinary(dir string) (string, error) {
	bin := filepath.Join(dir, "affix-rotator")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/affix-rotator")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build (run the bench from the module root): %w", err)
	}
	return bin, nil
}

// startDaemon seeds n records (rotated an hour ago, schedule 720h, so
// nothing rotates) and starts the binary on them.
func (e *env) startDaemon(ctx context.Context, bin, dir string, n int) (*daemon, error) {
	listen, err := vaulttest.FreeAddr()
	if err != nil {
		return nil, err
	}
	keys := make([]string, n)
	paths := make([]string, n)
	errs := make(chan error, n)
	var mu sync.Mutex
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			k, p, _, err := e.seed(ctx, fmt.Sprintf("bench/idle%d", n), time.Now().Add(-time.Hour))
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			paths[i], keys[i] = p, k
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	var y strings.Builder
	fmt.Fprintf(&y, `listen: %q
instance_id: bench
log: {level: info, format: json}
vault:
  address: %q
  kv_mount: secret
  auth: {method: token, token_env: VAULT_TOKEN}
affix:
  base_url: %q
  timeout: 5s
clients:
`, listen, e.vault.Addr, e.fake.URL)
	env := append(os.Environ(), "VAULT_TOKEN="+e.vault.Token, "VAULT_ADDR=", "VAULT_NAMESPACE=")
	for i, p := range paths {
		// Each client its own API key: the key selects the Affix client.
		fmt.Fprintf(&y, "  - {name: c%d, vault_path: %s, schedule: \"@every 720h\", grace_period: 24h, affix: {api_key_env: AFFIX_API_KEY_%d}}\n", i, p, i)
		env = append(env, fmt.Sprintf("AFFIX_API_KEY_%d=%s", i, keys[i]))
	}
	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yaml", n))
	if err := os.WriteFile(cfg, []byte(y.String()), 0o600); err != nil {
		return nil, err
	}
	d := &daemon{listen: listen, done: make(chan struct{})}
	d.cmd = exec.Command(bin, "run", "--config", cfg)
	d.cmd.Env = env
	d.cmd.Stdout, d.cmd.Stderr = &d.out, &d.out
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get("http://" + listen + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d, nil
			}
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("daemon exited: %s", d.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("daemon not ready after 60s: %s", d.out.String())
		}
	}
}

func (d *daemon) stop() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// rss returns VmRSS in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// cpuTicks returns utime+stime of the process in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // f[0] is field 3 (state)
	ut, err1 := strconv.ParseInt(f[11], 10, 64)              // field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64)              // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return ut + st, nil
}

// cpuNanos sums the on-CPU nanoseconds of the process's live threads
// (/proc/PID/task/*/schedstat), finer than the 10 ms ticks of /proc/PID/stat.
func cpuNanos(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // thread gone
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += n
		}
	}
	return sum, nil
}

func (e *env) idleCost(ctx context.Context, runs int, window time.Duration) error {
	fmt.Printf("\n[idle] real binary, 10 clients, nothing due; RSS after 5s, CPU over %d windows of %s\n", runs, window)
	dir, err := os.MkdirTemp("", "bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := buildBinary(dir)
	if err != nil {
		return err
	}
	d, err := e.startDaemon(ctx, bin, dir, 10)
	if err != nil {
		return err
	}
	defer d.stop()
	pid := d.cmd.Process.Pid
	time.Sleep(5 * time.Second)
	var rssS, tickS, nsS sample
	for range runs {
		r, err := rss(pid)
		if err != nil {
			return err
		}
		t0, _ := cpuTicks(pid)
		n0, _ := cpuNanos(pid)
		time.Sleep(window)
		t1, _ := cpuTicks(pid)
		n1, _ := cpuNanos(pid)
		rssS = append(rssS, float64(r))
		tickS = append(tickS, float64((t1-t0)*(1000/clkTck)))
		nsS = append(nsS, float64(n1-n0)/1e6)
	}
	mib := func(v float64) float64 { return v / (1 << 20) }
	fmt.Printf("  RSS                 %.1f MiB (%.1f–%.1f)   vs target 20 MiB: %.2f×\n", mib(rssS.median()), mib(rssS.min()), mib(rssS.max()), mib(rssS.median())/20)
	fmt.Printf("  CPU /proc/stat      %.0f ms (%.0f–%.0f) per %s (10 ms ticks)   vs target 10 ms: %.2f×\n", tickS.median(), tickS.min(), tickS.max(), window, tickS.median()/10)
	fmt.Printf("  CPU schedstat       %.2f ms (%.2f–%.2f) per %s (live threads, ns)   vs target 10 ms: %.3f×\n", nsS.median(), nsS.min(), nsS.max(), window, nsS.median()/10)
	return nil
}

// scrapes times n GETs of /metrics.
func scrapes(listen string, n int) (sample, int, error) {
	var s sample
	size := 0
	for range n {
		t0 := time.Now()
		resp, err := http.Get("http://" + listen + "/metrics")
		if err != nil {
			return nil, 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, 0, err
		}
		s = append(s, float64(time.Since(t0)))
		size = len(b)
	}
	return s, size, nil
}

// settled waits until /metrics shows a next run scheduled for n clients.
func settled(listen string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + listen + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Count(string(b), "affix_rotator_next_rotation_timestamp_seconds{") >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon with %d clients not settled after %s", n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) scrape(ctx context.Context, clients int) error {
	fmt.Printf("\n[scrape] GET /metrics on the real binary, %d clients vs 10 clients (median of 20 scrapes)\n", clients)
	dir, err := os.MkdirTemp("", "bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := buildBinary(dir)
	if err != nil {
		return err
	}
	var res [2]sample
	var size [2]int
	for i, n := range []int{10, clients} {
		d, err := e.startDaemon(ctx, bin, dir, n)
		if err != nil {
			return err
		}
		// Scrape a settled daemon: every client's record read and its next
		// run scheduled (a scrape during the start-up reads measures those).
		if err := settled(d.listen, n, time.Minute); err != nil {
			d.stop()
			return err
		}
		res[i], size[i], err = scrapes(d.listen, 20)
		d.stop()
		if err != nil {
			return err
		}
	}
	// size: the exposition's bytes (text format, after gzip is undone).
	fmt.Printf("  10 clients          %s  (%d bytes, %d KiB)\n", fmtDur(res[0]), size[0], size[0]/1024)
	fmt.Printf("  %-5d clients       %s  (%d bytes, %d KiB)   ratio %.1f× (medians)\n", clients, fmtDur(res[1]), size[1], size[1]/1024, res[1].median()/res[0].median())
	// Target: at most 1 MiB at 1,000 clients (per-client histograms made it
	// 2.9 MiB; see docs/PERFORMANCE.md).
	perClient := float64(size[1]-size[0]) / float64(clients-10)
	at1000 := float64(size[0]) + perClient*990
	fmt.Printf("  per client          %.0f bytes; at 1000 clients %.0f KiB vs target 1024 KiB: %.2f×\n", perClient, at1000/1024, at1000/(1<<20))
	return nil
}
