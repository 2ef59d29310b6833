package main_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// TestChaosSIGKILL runs the real binary against real Vault and the Affix
// fake, rotating every 2 s with a 1 s grace, and SIGKILLs it at random
// moments, restarting it each time (alternating two instance ids, so that
// both same-id takeover and lease expiry happen). Vault is sealed for a
// while in the middle. At the end the request history shows no fork (I4),
// no drop before its grace (I3) and no lost secret, and Vault's secret is
// accepted (I1).
func TestChaosSIGKILL(t *testing.T) {
	srv, err := vaulttest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	s := newStackOn(t, srv)
	extra := "    schedule: \"@every 2s\"\n    grace_period: 1s\n    max_age: 2s\n"
	cfgs := []string{s.config("a.yaml", "pod-a", extra), s.config("b.yaml", "pod-b", extra)}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	kills, start := 0, time.Now()
	var p *proc
	for i := 0; time.Since(start) < 25*time.Second; i++ {
		p = s.start("-config", cfgs[rng.IntN(2)])
		time.Sleep(time.Duration(200+rng.IntN(2500)) * time.Millisecond)
		if i == 3 {
			// Vault sealed under a running daemon for 3 s.
			if err := srv.Seal(context.Background()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second)
			if err := srv.Unseal(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		p.kill9(t)
		kills++
	}
	// A last daemon runs undisturbed until one more rotation completes.
	before := checkHistory(t, s)
	p = s.start("-config", cfgs[0])
	deadline := time.Now().Add(60 * time.Second)
	for checkHistory(t, s) <= before && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	p.kill9(t)
	n := checkHistory(t, s)
	if n <= before {
		t.Fatalf("no rotation completed after the chaos; requests %v", s.requests())
	}
	checkGrace(t, s)
	rec := s.record()
	if !s.fake.Accepts(s.key, str(rec, "client_secret")) {
		t.Fatal("I1 violated at the end")
	}
	t.Logf("chaos: %d SIGKILLs, %d rotations completed, %d requests, 0 violations, %s", kills, n, len(s.fake.Requests()), time.Since(start).Round(time.Second))
}

// checkGrace: every drop comes at least a grace period (1 s) after the
// [new, old] request it follows. Times are compared on the wall clock, as
// grace_until is (the monotonic reading is stripped: this machine's wall
// clock is slewed against it).
func checkGrace(t *testing.T, s *stack) {
	t.Helper()
	var introduced = map[string]time.Time{}
	for _, r := range s.fake.Requests() {
		if r.Status != 200 {
			continue
		}
		switch len(r.ClientSecret) {
		case 2:
			if _, ok := introduced[r.ClientSecret[0]]; !ok {
				introduced[r.ClientSecret[0]] = r.Time.Round(0)
			}
		case 1:
			if at, ok := introduced[r.ClientSecret[0]]; ok && r.Time.Round(0).Sub(at) < time.Second {
				t.Fatalf("I3 violated: old secret dropped %s after the overlap began", r.Time.Round(0).Sub(at))
			}
		}
	}
}
