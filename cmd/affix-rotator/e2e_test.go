package main_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// TestOnceFullRotation runs `-once` against real Vault and the Affix fake:
// the exact request sequence, the record in each phase, the grace honoured,
// and progress lines on stdout.
func TestOnceFullRotation(t *testing.T) {
	s := newStack(t)
	// Slow the first request so that the staged record can be observed.
	s.fake.Inject(affixtest.Fault{Delay: 500 * time.Millisecond})
	cfg := s.config("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 2s\n")
	p := s.start("-config", cfg, "-once")

	staged := s.waitFor("staged", 20*time.Second, func(r map[string]any) bool { return r["phase"] == "staged" })
	if str(staged, "client_secret") != s.s0 || str(staged, "pending_client_secret") == "" || !strings.HasPrefix(str(staged, "lease_owner"), "host-a/once-") {
		t.Fatalf("staged record: current is old %v, pending set %v, lease_owner %q", str(staged, "client_secret") == s.s0, staged["pending_client_secret"] != nil, staged["lease_owner"])
	}
	pending := str(staged, "pending_client_secret")
	overlap := s.waitFor("overlap", 20*time.Second, func(r map[string]any) bool { return r["phase"] == "overlap" })
	if str(overlap, "client_secret") != pending || str(overlap, "previous_client_secret") != s.s0 || overlap["pending_client_secret"] != nil {
		t.Fatal("overlap record does not hold current=new, previous=old")
	}
	grace, err := time.Parse(time.RFC3339Nano, str(overlap, "grace_until"))
	if err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	final := s.record()
	if str(final, "phase") != "stable" || str(final, "client_secret") != pending || final["previous_client_secret"] != nil || str(final, "rotated_at") == "" {
		t.Fatalf("final record: %v", final["phase"])
	}
	if got := strings.Join(s.requests(), " "); got != "200[N1,S0] 200[N1]" {
		t.Fatalf("requests %s", got)
	}
	if drop := s.fake.Requests()[1].Time; drop.Before(grace) {
		t.Fatalf("old secret dropped at %s, before grace_until %s", drop, grace)
	}
	out := p.out.String()
	for _, want := range []string{"prod: phase=staged", "prod: phase=overlap", "grace_left=", "prod: done: rotation"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

// daemonConfig makes a daemon that rotates at once at start (no rotated_at
// and a max_age) and then hourly.
func (s *stack) daemonConfig(name, id, grace string) string {
	return s.config(name, id, fmt.Sprintf("    schedule: \"@every 1h\"\n    grace_period: %s\n    max_age: 2h\n", grace))
}

// TestSIGKILLInStaged kills the daemon while its first request to Affix is
// in flight and restarts it: the rotation finishes with the secret staged
// before the kill; no other secret is generated (I6).
func TestSIGKILLInStaged(t *testing.T) {
	s := newStack(t)
	s.fake.Inject(affixtest.Fault{Delay: 30 * time.Second})
	cfg := s.daemonConfig("d.yaml", "pod-a", "1s")
	p := s.start("-config", cfg)
	staged := s.waitFor("staged", 20*time.Second, func(r map[string]any) bool { return r["phase"] == "staged" })
	time.Sleep(200 * time.Millisecond) // the request is in flight
	p.kill9(t)
	pending := str(staged, "pending_client_secret")

	s.start("-config", cfg) // same instance id: takes over at once
	final := s.waitFor("stable after restart", 30*time.Second, func(r map[string]any) bool {
		return r["phase"] == "stable" && str(r, "rotated_at") != ""
	})
	if str(final, "client_secret") != pending {
		t.Fatal("I6 violated: the restarted daemon finished with another secret")
	}
	for _, r := range s.fake.Requests() {
		if len(r.ClientSecret) == 0 || r.ClientSecret[0] != pending {
			t.Fatalf("a request carried a secret other than the staged one: %v", s.requests())
		}
	}
	if !s.fake.Accepts(s.key, pending) || s.fake.Accepts(s.key, s.s0) {
		t.Fatal("Affix does not accept exactly the new secret at the end")
	}
}

// TestSIGKILLInOverlap kills the daemon during the grace period and restarts
// it: it drops the old secret only after grace_until, with the same secret.
func TestSIGKILLInOverlap(t *testing.T) {
	s := newStack(t)
	cfg := s.daemonConfig("d.yaml", "pod-a", "3s")
	p := s.start("-config", cfg)
	overlap := s.waitFor("overlap", 20*time.Second, func(r map[string]any) bool { return r["phase"] == "overlap" })
	p.kill9(t)
	current := str(overlap, "client_secret")
	grace, _ := time.Parse(time.RFC3339Nano, str(overlap, "grace_until"))

	s.start("-config", cfg)
	final := s.waitFor("stable after restart", 30*time.Second, func(r map[string]any) bool {
		return r["phase"] == "stable" && str(r, "rotated_at") != ""
	})
	if str(final, "client_secret") != current {
		t.Fatal("I6 violated: finished with another secret")
	}
	reqs := s.fake.Requests()
	if got := strings.Join(s.requests(), " "); got != "200[N1,S0] 200[N1]" {
		t.Fatalf("requests %s", got)
	}
	if reqs[1].Time.Before(grace) {
		t.Fatalf("I3 violated: dropped at %s before grace_until %s", reqs[1].Time, grace)
	}
}

// checkHistory replays Affix's requests and fails on any sign of two
// rotations forking: a new secret introduced while another rotation's new
// secret is still pending or overlapping, or a drop of a secret that is not
// the newest.
func checkHistory(t *testing.T, s *stack) int {
	t.Helper()
	cur, inflight, rotations := s.s0, "", 0
	for i, r := range s.fake.Requests() {
		if r.Status != 200 {
			continue
		}
		cs := r.ClientSecret
		switch len(cs) {
		case 2:
			if cs[1] != cur || (inflight != "" && cs[0] != inflight) {
				t.Fatalf("I4 violated at request %d: fork %v", i, s.requests())
			}
			inflight = cs[0]
		case 1:
			if cs[0] != inflight && cs[0] != cur {
				t.Fatalf("I4 violated at request %d: dropped to a secret not in flight %v", i, s.requests())
			}
			if cs[0] == inflight {
				cur, inflight = inflight, ""
				rotations++
			}
		default:
			t.Fatalf("request %d carries %d secrets", i, len(cs))
		}
	}
	return rotations
}

// TestRaceDaemonsAndOnce runs two daemons (different instance ids) and a
// one-shot run on one client at once, rotating every 2 s with a 1 s grace,
// for several rotations: one driver at a time, never a fork (I4), and the
// secret in Vault is accepted at the end (I1).
func TestRaceDaemonsAndOnce(t *testing.T) {
	s := newStack(t)
	extra := "    schedule: \"@every 2s\"\n    grace_period: 1s\n    max_age: 2s\n"
	a := s.config("a.yaml", "pod-a", extra)
	other, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	b := s.configListen("b.yaml", "pod-b", other, extra)
	pa := s.start("-config", a)
	pb := s.start("-config", b)
	once := s.start("-config", a, "-once")
	if code := once.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("-once exit %d:\n%s", code, once.out.String())
	}
	time.Sleep(8 * time.Second)
	pa.kill9(t)
	pb.kill9(t)
	n := checkHistory(t, s)
	if n < 2 {
		t.Fatalf("only %d rotations completed; requests %v", n, s.requests())
	}
	rec := s.record()
	if !s.fake.Accepts(s.key, str(rec, "client_secret")) {
		t.Fatal("I1 violated: Vault's secret is not accepted at the end")
	}
	t.Logf("%d rotations, %d requests, no fork", n, len(s.fake.Requests()))
}

// TestAbortExitsOne: a definite rejection makes -once exit 1 with the old
// secret intact.
func TestAbortExitsOne(t *testing.T) {
	s := newStack(t)
	s.fake.Inject(affixtest.Fault{Status: 401})
	cfg := s.config("c.yaml", "h", "    schedule: \"@every 720h\"\n    grace_period: 1s\n")
	p := s.start("-config", cfg, "-once")
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	rec := s.record()
	if str(rec, "client_secret") != s.s0 || str(rec, "phase") != "stable" || !strings.Contains(str(rec, "last_error"), "401") {
		t.Fatalf("record after abort: %v", rec["phase"])
	}
}

// TestHTTPEndpoints: /healthz, /readyz, /status and /metrics of the daemon.
func TestHTTPEndpoints(t *testing.T) {
	s := newStack(t)
	cfg := s.daemonConfig("d.yaml", "pod-a", "1s")
	s.start("-config", cfg)
	s.waitFor("stable after the start-up rotation", 30*time.Second, func(r map[string]any) bool { return str(r, "rotated_at") != "" })
	base := "http://" + s.listen
	if got := get(t, base+"/healthz"); got != "ok\n" {
		t.Fatalf("/healthz %q", got)
	}
	if got := get(t, base+"/readyz"); got != "ok\n" {
		t.Fatalf("/readyz %q", got)
	}
	var status string
	for i := 0; i < 100; i++ {
		status = get(t, base+"/status")
		if strings.Contains(status, `"last_result": "success"`) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{`"client": "prod"`, `"phase": "stable"`, `"next_run"`, `"last_result": "success"`} {
		if !strings.Contains(status, want) {
			t.Fatalf("/status lacks %s:\n%s", want, status)
		}
	}
	metrics := get(t, base+"/metrics")
	for _, re := range []string{
		`affix_rotator_rotations_total\{client="prod",result="success"\} 1`,
		`affix_rotator_phase\{client="prod",phase="stable"\} 1`,
		`affix_rotator_affix_requests_total\{client="prod",code="200"\} 2`,
		`affix_rotator_last_success_timestamp_seconds\{client="prod"\} 1\.\d+e\+09`,
		`affix_rotator_next_rotation_timestamp_seconds\{client="prod"\} 1\.\d+e\+09`,
		`affix_rotator_vault_requests_total\{op="write",result="ok"\} 3`,
		`affix_rotator_build_info\{goversion="go[^"]+",version="[^"]+"\} 1`,
		`affix_rotator_rotation_duration_seconds_count 1`,
		`affix_rotator_last_rotation_duration_seconds\{client="prod"\} \d`,
		`affix_rotator_rotation_end_to_end_seconds_count 1`,
		`affix_rotator_expected_interval_seconds\{client="prod"\} \d`,
		`go_goroutines `, `process_resident_memory_bytes `,
	} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Fatalf("/metrics lacks %s", re)
		}
	}
	resp, err := http.Get(base + "/nope")
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("unknown path: %v %v", resp, err)
	}
}
