package main_test

import (
	"context"
	"math/rand/v2"
	"syscall"
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
	s, srv := chaosStack(t)
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
	p = s.start("-config", cfgs[0])
	n := settle(t, s, p)
	t.Logf("chaos: %d SIGKILLs, %d rotations completed, %d requests, 0 violations, %s", kills, n, len(s.fake.Requests()), time.Since(start).Round(time.Second))
}

// settle lets ps run until one more rotation completes, SIGKILLs them, and
// checks the whole request history: no fork (I4), every drop a full 1 s
// grace after its [new, old] (I3), and Vault's secret accepted (I1). It
// returns the rotations completed.
func settle(t *testing.T, s *stack, ps ...*proc) int {
	t.Helper()
	before := checkHistory(t, s)
	deadline := time.Now().Add(60 * time.Second)
	for checkHistory(t, s) <= before && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range ps {
		stop9(p)
	}
	n := checkHistory(t, s)
	if n <= before {
		t.Fatalf("no rotation completed after the chaos; requests %v", s.requests())
	}
	checkGrace(t, s, time.Second)
	if !s.fake.Accepts(s.key, str(s.record(), "client_secret")) {
		t.Fatal("I1 violated at the end")
	}
	return n
}

// chaosStack is a stack on a Vault server of its own (the chaos tests seal
// it).
func chaosStack(t *testing.T) (*stack, *vaulttest.Server) {
	t.Helper()
	srv, err := vaulttest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return newStackOn(t, srv), srv
}

// checkGrace: every drop comes at least a grace period after the [new, old]
// request it follows. Times are compared on the wall clock, as
// grace_until is (the monotonic reading is stripped: this machine's wall
// clock is slewed against it).
func checkGrace(t *testing.T, s *stack, grace time.Duration) {
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
			if at, ok := introduced[r.ClientSecret[0]]; ok && r.Time.Round(0).Sub(at) < grace {
				t.Fatalf("I3 violated: old secret dropped %s after the overlap began", r.Time.Round(0).Sub(at))
			}
		}
	}
}

// TestChaosVaultSealedAcrossGrace: Vault is sealed while a rotation is in
// its grace and stays sealed past grace_until, twice; the daemon is
// SIGKILLed and restarted while Vault is sealed the second time. Each
// rotation completes once Vault is back, dropping the old secret only after
// grace_until, with no fork and Vault's secret accepted.
func TestChaosVaultSealedAcrossGrace(t *testing.T) {
	s, srv := chaosStack(t)
	const grace = 2 * time.Second
	cfg := s.config("a.yaml", "pod-a", "    schedule: \"@every 3s\"\n    grace_period: 2s\n    max_age: 3s\n")
	start, kills := time.Now(), 0
	p := s.start("-config", cfg)
	for round := range 2 {
		rec := s.waitFor("a rotation in its grace", 60*time.Second, func(r map[string]any) bool { return r["phase"] == "overlap" })
		id := str(rec, "rotation_id")
		gu, err := time.Parse(time.RFC3339Nano, str(rec, "grace_until"))
		if err != nil {
			t.Fatalf("grace_until: %v", err)
		}
		if err := srv.Seal(context.Background()); err != nil {
			t.Fatal(err)
		}
		if round == 1 {
			// Killed mid-grace, restarted against a sealed Vault.
			time.Sleep(200 * time.Millisecond)
			p.kill9(t)
			kills++
			p = s.start("-config", cfg)
		}
		time.Sleep(time.Until(gu) + 1500*time.Millisecond) // sealed past grace_until
		if err := srv.Unseal(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.waitFor("the rotation to complete after the unseal", 60*time.Second, func(r map[string]any) bool {
			return str(r, "rotation_id") != id || r["phase"] == "stable"
		})
		// The drop of this rotation came after Vault was back, so after
		// grace_until.
		for _, r := range s.fake.Requests() {
			if r.Status == 200 && len(r.ClientSecret) == 1 && r.ClientSecret[0] == str(rec, "client_secret") && r.Time.Round(0).Before(gu) {
				t.Fatalf("I3 violated: old secret dropped at %s, before grace_until %s", r.Time, gu)
			}
		}
	}
	p.kill9(t)
	kills++
	n := checkHistory(t, s)
	checkGrace(t, s, grace)
	if !s.fake.Accepts(s.key, str(s.record(), "client_secret")) {
		t.Fatal("I1 violated at the end")
	}
	t.Logf("chaos (Vault sealed across the grace twice): %d SIGKILLs, %d restarts, %d rotations completed, %d requests, 0 violations, %s",
		kills, 1, n, len(s.fake.Requests()), time.Since(start).Round(time.Second))
}

// stop9 SIGKILLs p unless it has already exited.
func stop9(p *proc) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// TestChaosTwoDaemonsAndOnce: two daemons (two instance ids) drive one
// client while -once runs are started on it too, and all of them are
// SIGKILLed and restarted at random moments. At the end the request history
// shows no fork (I4) and no early drop (I3), rotations completed, and
// Vault's secret is accepted (I1).
func TestChaosTwoDaemonsAndOnce(t *testing.T) {
	s, _ := chaosStack(t)
	extra := "    schedule: \"@every 2s\"\n    grace_period: 1s\n    max_age: 2s\n"
	other, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfgs := []string{s.config("a.yaml", "pod-a", extra), s.configListen("b.yaml", "pod-b", other, extra)}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	daemons := []*proc{s.start("-config", cfgs[0]), s.start("-config", cfgs[1])}
	var onces []*proc
	kills, restarts, onceRuns, start := 0, 0, 0, time.Now()
	for time.Since(start) < 25*time.Second {
		time.Sleep(time.Duration(200+rng.IntN(1500)) * time.Millisecond)
		switch rng.IntN(3) {
		case 0, 1: // kill a daemon, restart it
			i := rng.IntN(2)
			daemons[i].kill9(t)
			kills++
			daemons[i] = s.start("-config", cfgs[i])
			restarts++
		case 2: // a -once run, sometimes killed later
			onces = append(onces, s.start("-config", cfgs[rng.IntN(2)], "-once"))
			onceRuns++
			if len(onces) > 1 && rng.IntN(2) == 0 {
				j := rng.IntN(len(onces))
				select {
				case <-onces[j].done:
				default:
					stop9(onces[j])
					kills++
				}
			}
		}
	}
	// The survivors finish a rotation undisturbed.
	n := settle(t, s, append(daemons, onces...)...)
	t.Logf("chaos (two daemons and -once): %d SIGKILLs, %d daemon restarts, %d -once runs, %d rotations completed, %d requests, 0 violations, %s",
		kills, restarts, onceRuns, n, len(s.fake.Requests()), time.Since(start).Round(time.Second))
}
