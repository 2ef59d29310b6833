package main_test

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
)

// actionStack is a stack whose daemon re-reads its records every second.
func actionStack(t *testing.T, grace string) (*stack, string) {
	t.Helper()
	s := newStack(t)
	cfg := s.daemonConfig("d.yaml", "pod-a", grace)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(string(b), "clock_skew_margin: 500ms}", "clock_skew_margin: 500ms, reread_interval: 1s}", 1)
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

// lastAction decodes the record's last_action.
func lastAction(t *testing.T, rec map[string]any) map[string]string {
	t.Helper()
	var a map[string]string
	if err := json.Unmarshal([]byte(str(rec, "last_action")), &a); err != nil {
		t.Fatalf("last_action is not JSON: %v", err)
	}
	return a
}

func graceUntil(t *testing.T, rec map[string]any) time.Time {
	t.Helper()
	g, err := time.Parse(time.RFC3339Nano, str(rec, "grace_until"))
	if err != nil {
		t.Fatalf("grace_until: %v", err)
	}
	return g
}

// TestEndGraceWhileDaemonRuns: with a daemon in a 10m grace, -end-grace
// leaves Affix accepting only the current secret and the record stable
// within 5 s, without a restart, audited; the daemon sends nothing more for
// that rotation.
func TestEndGraceWhileDaemonRuns(t *testing.T) {
	s, cfg := actionStack(t, "10m")
	d := s.start("-config", cfg)
	overlap := s.waitFor("overlap", 20*time.Second, func(r map[string]any) bool { return r["phase"] == "overlap" })
	current := str(overlap, "client_secret")

	start := time.Now()
	p := s.start("-config", cfg, "-end-grace", "-client", "prod", "-reason", "previous secret leaked")
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("-end-grace: exit %d\n%s", code, p.out.String())
	}
	final := s.waitFor("stable", 5*time.Second, func(r map[string]any) bool { return r["phase"] == "stable" })
	took := time.Since(start)
	if acc := s.fake.Secrets(s.key); len(acc) != 1 || acc[0] != current || str(final, "client_secret") != current {
		t.Fatalf("after -end-grace Affix accepts %d secrets (want only the current one)", len(acc))
	}
	a := lastAction(t, final)
	if a["action"] != "end-grace" || a["reason"] != "previous secret leaked" || a["by"] == "" {
		t.Fatalf("last_action = %v", a)
	}
	// The daemon re-reads every second: give it three, then check that it
	// sent nothing more and is still running.
	time.Sleep(3 * time.Second)
	if got := strings.Join(s.requests(), " "); got != "200[N1,S0] 200[N1]" {
		t.Fatalf("requests %s: the daemon acted again after -end-grace", got)
	}
	select {
	case <-d.done:
		t.Fatal("the daemon exited")
	default:
	}
	if !strings.Contains(p.out.String(), "grace ended") {
		t.Fatalf("output: %s", p.out.String())
	}
	t.Logf("-end-grace: record stable and Affix accepting only the current secret %s after the command started", took.Round(time.Millisecond))
}

// TestExtendGraceHonoured: -extend-grace moves grace_until later, tells
// Affix [current, previous] (the driving process may have sent its drop
// already), and the running daemon drops the old secret only after the
// new time.
func TestExtendGraceHonoured(t *testing.T) {
	s, cfg := actionStack(t, "4s")
	s.start("-config", cfg)
	overlap := s.waitFor("overlap", 20*time.Second, func(r map[string]any) bool { return r["phase"] == "overlap" })
	was := graceUntil(t, overlap)
	p := s.start("-config", cfg, "-extend-grace", "5s", "-client", "prod", "-reason", "slow consumers")
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("-extend-grace: exit %d\n%s", code, p.out.String())
	}
	moved := graceUntil(t, s.record())
	if d := moved.Sub(was); d != 5*time.Second {
		t.Fatalf("grace_until moved by %s, want 5s", d)
	}
	s.waitFor("stable", 30*time.Second, func(r map[string]any) bool { return r["phase"] == "stable" })
	reqs := s.fake.Requests()
	if got := strings.Join(s.requests(), " "); got != "200[N1,S0] 200[N1,S0] 200[N1]" {
		t.Fatalf("requests %s, want the rotation's, extend-grace's [N1,S0] and the drop", got)
	}
	if drop := reqs[2].Time; drop.Before(moved) {
		t.Fatalf("I3 violated: old secret dropped at %s, before the extended grace_until %s", drop, moved)
	}
}

// TestReacceptPrevious: after a completed rotation, -reaccept-previous makes
// Affix accept the previous secret again at once, and the running daemon
// drops it again when the new grace ends.
func TestReacceptPrevious(t *testing.T) {
	s, cfg := actionStack(t, "1s")
	s.start("-config", cfg)
	done := s.waitFor("stable after a rotation", 20*time.Second, func(r map[string]any) bool {
		return r["phase"] == "stable" && str(r, "rotated_at") != ""
	})
	current := str(done, "client_secret")
	if s.fake.Accepts(s.key, s.s0) {
		t.Fatal("the old secret is still accepted after the rotation")
	}
	p := s.start("-config", cfg, "-reaccept-previous", "3s", "-client", "prod", "-reason", "app broke after the drop")
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("-reaccept-previous: exit %d\n%s", code, p.out.String())
	}
	if !s.fake.Accepts(s.key, s.s0) || !s.fake.Accepts(s.key, current) {
		t.Fatal("after -reaccept-previous Affix does not accept both the previous and the current secret")
	}
	rec := s.record()
	if rec["phase"] != "overlap" || str(rec, "previous_client_secret") != s.s0 || str(rec, "client_secret") != current {
		t.Fatalf("record after -reaccept-previous: phase %v", rec["phase"])
	}
	until := graceUntil(t, rec)
	s.waitFor("stable again", 30*time.Second, func(r map[string]any) bool { return r["phase"] == "stable" })
	reqs := s.fake.Requests()
	last := reqs[len(reqs)-1]
	if last.Time.Before(until) || len(last.ClientSecret) != 1 || last.ClientSecret[0] != current {
		t.Fatalf("the previous secret was not dropped after the new grace (last request %v at %s, grace_until %s)", affixtest.Fingerprints(last.ClientSecret), last.Time, until)
	}
	if s.fake.Accepts(s.key, s.s0) {
		t.Fatal("the previous secret is still accepted at the end")
	}
	// The daemon learns of the reopened grace through the change marker
	// within reread_interval (1s here), whatever the phase: the drop comes
	// by grace_until + reread_interval + clock_skew_margin (500ms), with
	// room for a loaded machine. (A stable record alone is read every
	// 10 × reread_interval.)
	if late := last.Time.Sub(until); late > 1500*time.Millisecond+5*time.Second {
		t.Fatalf("the previous secret was dropped %s after grace_until, want within reread_interval + clock_skew_margin (1.5s; 5s of slack)", late)
	} else {
		t.Logf("-reaccept-previous 3s: dropped %s after grace_until (bound: reread_interval 1s + clock_skew_margin 500ms)", late.Round(time.Millisecond))
	}
}

// TestLeakedSecretOnceDuringOverlap: the leaked-secret command while a
// daemon waits in a 10m grace: `-once -grace 5s` ends with a new secret
// current and the secret that was current when it ran rejected, within the
// grace plus the margins, and exits 0 only then.
func TestLeakedSecretOnceDuringOverlap(t *testing.T) {
	s, cfg := actionStack(t, "10m")
	s.start("-config", cfg)
	overlap := s.waitFor("overlap", 20*time.Second, func(r map[string]any) bool { return r["phase"] == "overlap" })
	leaked := str(overlap, "client_secret")
	start := time.Now()
	p := s.start("-config", cfg, "-once", "-client", "prod", "-grace", "5s", "-reason", "current secret pasted in a chat")
	if code := p.wait(t, 90*time.Second); code != 0 {
		t.Fatalf("-once -grace 5s during an overlap: exit %d\n%s", code, p.out.String())
	}
	took := time.Since(start)
	if s.fake.Accepts(s.key, leaked) {
		t.Fatalf("-once -grace 5s exited 0 while the leaked secret is still accepted\n%s", p.out.String())
	}
	rec := s.record()
	if str(rec, "client_secret") == leaked || rec["phase"] != "stable" {
		t.Fatalf("after -once -grace 5s: phase %v, the leaked secret current: %v", rec["phase"], str(rec, "client_secret") == leaked)
	}
	if took > 60*time.Second {
		t.Fatalf("-once -grace 5s took %s, want about the grace plus the margins", took)
	}
	t.Logf("-once -grace 5s in a 10m overlap: leaked secret rejected and the command done in %s", took.Round(time.Millisecond))
}

var onceGrace = flag.Duration("once-grace", 3*time.Second, "the -grace of TestOnceShortGrace (go test ./cmd/affix-rotator -run TestOnceShortGrace -once-grace 30s -v)")

// TestOnceShortGrace: -once -grace on a client configured with a 24h grace
// rotates with the short grace, warns what it risks, and is audited.
func TestOnceShortGrace(t *testing.T) {
	g := *onceGrace
	s := newStack(t)
	cfg := s.config("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 24h\n    consumers: {max_refresh: 1h}\n")
	start := time.Now()
	p := s.start("-config", cfg, "-once", "-client", "prod", "-grace", g.String(), "-reason", "current secret leaked")
	if code := p.wait(t, g+60*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.out.String())
	}
	took := time.Since(start)
	if took > g+15*time.Second {
		t.Fatalf("-once -grace %s took %s", g, took)
	}
	rec := s.record()
	if rec["phase"] != "stable" || s.fake.Accepts(s.key, s.s0) {
		t.Fatal("rotation not complete")
	}
	if a := lastAction(t, rec); a["action"] != "rotate" || a["reason"] != "current secret leaked" {
		t.Fatalf("last_action = %v", a)
	}
	if out := p.out.String(); !strings.Contains(out, "WARNING: -grace "+g.String()+" is shorter than the configured grace_period 24h0m0s") {
		t.Fatalf("no warning in output:\n%s", out)
	}
	if out := p.out.String(); !strings.Contains(out, "WARNING: -grace "+g.String()+" does not exceed consumers.max_refresh 1h0m0s") {
		t.Fatalf("no consumers.max_refresh warning in output:\n%s", out)
	}
	reqs := s.fake.Requests()
	if gap := reqs[1].Time.Sub(reqs[0].Time); gap < g || gap > g+7*time.Second {
		t.Fatalf("grace observed %s, want about %s", gap, g)
	}
	t.Logf("-once -grace %s with a configured 24h grace took %s (grace observed at Affix %s)", g, took.Round(time.Millisecond), reqs[1].Time.Sub(reqs[0].Time).Round(time.Millisecond))
}

// TestActionRefusals: bad input exits 2; an action that does not fit the
// phase, or a token that cannot write the record, exits 1 and changes
// nothing.
func TestActionRefusals(t *testing.T) {
	s := newStack(t)
	cfg := s.config("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 24h\n")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown client", []string{"-end-grace", "-client", "nope", "-reason", "r"}, 2, `no client named "nope"`},
		{"no client", []string{"-end-grace"}, 2, "needs -client"},
		{"zero duration", []string{"-extend-grace", "0s", "-client", "prod"}, 2, "must be positive"},
		{"negative duration", []string{"-reaccept-previous", "-1h", "-client", "prod"}, 2, "must be positive"},
		{"two actions", []string{"-end-grace", "-extend-grace", "1h", "-client", "prod"}, 2, "exclusive"},
		{"grace without once", []string{"-grace", "1m", "-client", "prod"}, 2, "only meaningful with -once"},
		{"end-grace without a reason", []string{"-end-grace", "-client", "prod"}, 2, `needs -reason "why"`},
		{"extend-grace with an empty reason", []string{"-extend-grace", "1h", "-client", "prod", "-reason", " "}, 2, `needs -reason "why"`},
		{"reaccept-previous without a reason", []string{"-reaccept-previous", "1h", "-client", "prod"}, 2, `needs -reason "why"`},
		{"once -grace without a reason", []string{"-once", "-grace", "1m", "-client", "prod"}, 2, `needs -reason "why"`},
		{"end-grace in stable", []string{"-end-grace", "-client", "prod", "-reason", "r"}, 1, "phase stable"},
		{"extend-grace in stable", []string{"-extend-grace", "1h", "-client", "prod", "-reason", "r"}, 1, "-reaccept-previous"},
		{"reaccept with no rotation", []string{"-reaccept-previous", "1h", "-client", "prod", "-reason", "r"}, 1, "no completed rotation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := s.start(append([]string{"-config", cfg}, tc.args...)...)
			if code := p.wait(t, 20*time.Second); code != tc.code || !strings.Contains(p.out.String(), tc.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s", code, tc.code, tc.want, p.out.String())
			}
		})
	}
	// A token that may only read the record.
	c := s.vault.Client()
	ctx := context.Background()
	if err := c.Sys().PutPolicyWithContext(ctx, "affix-read-only", `path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"affix-read-only"}, DisplayName: "ops-alice"})
	if err != nil {
		t.Fatal(err)
	}
	s.env = []string{"VAULT_TOKEN=" + tok.Auth.ClientToken}
	before := s.record()
	p := s.start("-config", cfg, "-extend-grace", "1h", "-client", "prod", "-reason", "test")
	out := p.out.String
	if code := p.wait(t, 20*time.Second); code != 1 || !strings.Contains(out(), `lacks the "update" capability on secret/data/`+s.path) {
		t.Fatalf("read-only token: exit %d, output:\n%s", code, out())
	}
	if strings.Contains(out(), tok.Auth.ClientToken) {
		t.Fatal("the token appears in the output")
	}
	if after := s.record(); after["last_action"] != before["last_action"] || after["phase"] != before["phase"] {
		t.Fatal("a refused action changed the record")
	}
}

// TestOnceInterrupted: SIGINT during -once's grace says the rotation stays
// resumable and how to go on (not "FAILED: context canceled"); the record
// keeps its phase; the grace prints no line every few seconds.
func TestOnceInterrupted(t *testing.T) {
	s := newStack(t)
	cfg := s.config("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 1h\n")
	p := s.start("-config", cfg, "-once", "-client", "prod")
	eventually(t, "the grace", 60*time.Second, func() bool { return strings.Contains(p.out.String(), "prod: phase=overlap") })
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit %d after SIGINT, want 1", code)
	}
	want := "prod: interrupted: the rotation stays resumable; run `affix-rotator once --config " + cfg + " --client prod` to go on"
	if out := p.out.String(); !strings.Contains(out, want) || strings.Contains(out, "context canceled") {
		t.Fatalf("output lacks %q (or says context canceled):\n%s", want, out)
	}
	if n := strings.Count(p.out.String(), "prod: phase=overlap"); n > 2 {
		t.Fatalf("%d progress lines in overlap within seconds, want at most 2 (one a minute)", n)
	}
	if ph := str(s.record(), "phase"); ph != "overlap" {
		t.Fatalf("phase %q after the interrupt, want overlap", ph)
	}
}

// TestIncidentCommandBoundedWhenAffixIsDown: with Affix answering 503, an
// incident command retries for -retry-timeout (1m by default), each retry
// line saying when it gives up, then exits 1 leaving the rotation
// resumable; interrupted, it says how to go on.
func TestIncidentCommandBoundedWhenAffixIsDown(t *testing.T) {
	s := newStack(t)
	cfg := s.config("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 24h\n")
	faults := make([]affixtest.Fault, 200)
	for i := range faults {
		faults[i] = affixtest.Fault{Status: http.StatusServiceUnavailable}
	}
	s.fake.Inject(faults...)

	// The default bound: 1m, named on the retry lines; then an interrupt.
	p := s.start("once", "--config", cfg, "--client", "prod", "--grace", "5m", "--reason", "INC-1: current secret leaked")
	eventually(t, "a retry line", 60*time.Second, func() bool {
		return strings.Contains(p.out.String(), "-retry-timeout 1m0s; the rotation stays resumable)")
	})
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 1 || !strings.Contains(p.out.String(), "prod: interrupted: the rotation stays resumable") {
		t.Fatalf("interrupted: exit %d:\n%s", code, p.out.String())
	}

	// A shorter bound: it gives up on time, every retry line naming when.
	start := time.Now()
	p = s.start("once", "--config", cfg, "--client", "prod", "--grace", "5m", "--reason", "INC-1: current secret leaked", "--retry-timeout", "3s")
	code := p.wait(t, 60*time.Second)
	took := time.Since(start)
	out := p.out.String()
	if code != 1 || took > 30*time.Second || !strings.Contains(out, "prod: FAILED: ") || !strings.Contains(out, "giving up after 3s") {
		t.Fatalf("exit %d after %s:\n%s", code, took, out)
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "waiting: retrying in") {
			n++
			if !strings.Contains(l, "(gives up at ") || !strings.Contains(l, "-retry-timeout 3s; the rotation stays resumable)") {
				t.Errorf("a retry line does not say when it stops: %q", l)
			}
		}
	}
	if n == 0 {
		t.Fatalf("no retry line:\n%s", out)
	}
	if ph := str(s.record(), "phase"); ph != "staged" {
		t.Fatalf("phase %q after giving up, want staged (resumable)", ph)
	}
}
