package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/cli"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// statusStack is a stack with more clients whose records are written by
// hand: prod (seeded, stable, no rotated_at), done (stable, rotated an hour
// ago), staged and overlap (rotations in flight).
type statusStack struct {
	*stack
	secrets []string // every secret value written: none may appear in any output
	now     time.Time
}

func newStatusStack(t *testing.T) *statusStack {
	s := &statusStack{stack: newStack(t), now: time.Now().UTC()}
	s.secrets = append(s.secrets, s.s0, s.key, s.vault.Token)
	return s
}

func (s *statusStack) gen() string {
	v, _ := secret.Generate()
	s.secrets = append(s.secrets, v.Reveal())
	return v.Reveal()
}

func (s *statusStack) put(path string, data map[string]any) {
	s.t.Helper()
	if _, err := s.vault.Client().KVv2("secret").Put(context.Background(), path, data); err != nil {
		s.t.Fatal(err)
	}
}

func (s *statusStack) rfc(d time.Duration) string { return s.now.Add(d).Format(time.RFC3339Nano) }

// client renders one more client entry for the config.
func client(name, path string) string {
	return fmt.Sprintf("  - name: %s\n    vault_path: %s\n    schedule: \"@every 720h\"\n    grace_period: 1h\n    affix: {api_key_env: KEY_%s}\n",
		name, path, strings.ToUpper(name))
}

func (s *statusStack) writeRecords() string {
	s.put(s.path+"-done", map[string]any{"client_secret": s.gen(), "phase": "stable", "rotation_id": "r-done", "rotated_at": s.rfc(-time.Hour), "lease_owner": "pod-a", "lease_until": s.rfc(-50 * time.Minute)})
	s.put(s.path+"-staged", map[string]any{"client_secret": s.gen(), "pending_client_secret": s.gen(), "phase": "staged", "rotation_id": "r-staged",
		"rotated_at": s.rfc(-720 * time.Hour), "lease_owner": "pod-a", "lease_until": s.rfc(5 * time.Minute)})
	s.put(s.path+"-overlap", map[string]any{"client_secret": s.gen(), "previous_client_secret": s.gen(), "phase": "overlap", "rotation_id": "r-overlap",
		"grace_until": s.rfc(2 * time.Hour), "rotated_at": s.rfc(-30 * 24 * time.Hour), "client_id": "cid-ov",
		"lease_owner": "pod-b", "lease_until": s.rfc(2*time.Hour + 5*time.Minute), "retry_not_before": s.rfc(10 * time.Minute),
		"last_error":  "affix: 429 Too Many Requests",
		"last_action": fmt.Sprintf(`{"action":"extend-grace","by":"token-ops-alice (entity e-42)","reason":"consumers are slow","at":%q,"rotation_id":"r-overlap"}`, s.rfc(-3*time.Minute)),
		"team":        "payments"})
	return s.config("status.yaml", "pod-a", "    schedule: \"@every 720h\"\n    grace_period: 1h\n"+
		client("done", s.path+"-done")+client("staged", s.path+"-staged")+client("overlap", s.path+"-overlap"))
}

func (s *statusStack) noSecret(out string) {
	s.t.Helper()
	for _, v := range s.secrets {
		if v != "" && strings.Contains(out, v) {
			s.t.Fatalf("I5 violated: -status output holds a secret value:\n%s", out)
		}
	}
}

// TestStatusTable: -status reads every client's record from Vault (no
// daemon) and shows phase, rotation, age, next run, grace left, lease, the
// 429's floor, last error and last action; never a secret.
func TestStatusTable(t *testing.T) {
	s := newStatusStack(t)
	cfg := s.writeRecords()
	p := s.start("status", "--config", cfg)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, p.out.String())
	}
	out := p.out.String()
	t.Logf("-status:\n%s", out)
	s.noSecret(out)
	lines := strings.Split(out, "\n")
	row := func(name string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, name+" ") {
				return l
			}
		}
		t.Fatalf("no row for %s:\n%s", name, out)
		return ""
	}
	if !strings.HasPrefix(lines[0], "CLIENT") || !strings.Contains(lines[0], "NEXT RUN") || !strings.Contains(lines[0], "GRACE LEFT") {
		t.Fatalf("header: %q", lines[0])
	}
	for name, wants := range map[string][]string{
		// Seeded a second or so before -status ran: 30 days minus that
		// (the hours are truncated: 29d23h), or 30d0h within the second.
		"prod":    {"stable", "(in "},
		"done":    {"stable", "r-done", "1h00m", "(in 29d", "pod-a (expired"},
		"staged":  {"staged", "r-staged", "after the rotation in flight", "pod-a (", "left)"},
		"overlap": {"overlap", "r-overlap", "30d0h", "after the rotation in flight", " (until ", "pod-b (2h0"},
	} {
		r := row(name)
		if name == "prod" && !strings.Contains(r, "(in 29d23h)") && !strings.Contains(r, "(in 30d0h)") {
			t.Errorf("row prod: next run not 30 days after the seeding: %s", r)
		}
		for _, w := range wants {
			if !strings.Contains(r, w) {
				t.Errorf("row %s lacks %q: %s", name, w, r)
			}
		}
	}
	for _, w := range []string{
		"overlap: last action: extend-grace by token-ops-alice (entity e-42) at ",
		`on rotation r-overlap: "consumers are slow"`,
		"overlap: last error: affix: 429 Too Many Requests",
		"overlap: retry not before ",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "payments") {
		t.Error("an operator's extra field is shown")
	}
}

// TestStatusJSON: -o json for scripts, one client with -client.
func TestStatusJSON(t *testing.T) {
	s := newStatusStack(t)
	cfg := s.writeRecords()
	p := s.start("status", "--config", cfg, "-o", "json")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, p.out.String())
	}
	s.noSecret(p.out.String())
	var rep cli.StatusReport
	if err := json.Unmarshal([]byte(p.out.String()), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, p.out.String())
	}
	if rep.Vault != s.vault.Addr || len(rep.Clients) != 4 {
		t.Fatalf("report: vault %q, %d clients", rep.Vault, len(rep.Clients))
	}
	by := map[string]cli.ClientRecord{}
	for _, c := range rep.Clients {
		if c.State != "ok" || c.Error != "" {
			t.Fatalf("%s: state %s error %q", c.Client, c.State, c.Error)
		}
		by[c.Client] = c
	}
	// A seeded record (no rotated_at) is scheduled from when it was seeded
	// (the created_time of its version), as the daemon does.
	if c := by["prod"]; c.Phase != "stable" || c.NextRun == nil || c.NextRun.Sub(time.Now().Add(720*time.Hour)).Abs() > time.Minute ||
		!strings.Contains(c.NextRunNote, "counts from when the record was seeded") || c.Path != "secret/"+s.path || c.Version != 1 {
		t.Fatalf("prod: %+v", c)
	}
	done := by["done"]
	if done.Phase != "stable" || done.RotatedAt == nil || done.NextRun == nil || done.NextRun.Sub(done.RotatedAt.Add(720*time.Hour)).Abs() > time.Second ||
		done.AgeSeconds == nil || *done.AgeSeconds < 3590 || *done.AgeSeconds > 3700 || done.LeaseActive || done.LeaseOwner != "pod-a" {
		t.Fatalf("done: %+v", done)
	}
	if c := by["staged"]; c.Phase != "staged" || c.RotationID != "r-staged" || c.NextRun != nil || !c.LeaseActive || c.GraceUntil != nil {
		t.Fatalf("staged: %+v", c)
	}
	ov := by["overlap"]
	if ov.Phase != "overlap" || ov.GraceUntil == nil || ov.GraceLeftSeconds == nil || *ov.GraceLeftSeconds < 7000 || *ov.GraceLeftSeconds > 7200 ||
		ov.LeaseOwner != "pod-b" || !ov.LeaseActive || ov.RetryNotBefore == nil || ov.LastError == "" || ov.ClientID != "cid-ov" {
		t.Fatalf("overlap: %+v", ov)
	}
	if a := ov.LastAction; a == nil || a.Action != "extend-grace" || a.By != "token-ops-alice (entity e-42)" || a.Reason != "consumers are slow" || a.At == nil || a.RotationID != "r-overlap" {
		t.Fatalf("overlap last_action: %+v", a)
	}

	p = s.start("status", "--config", cfg, "-o", "json", "--client", "overlap")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("-client: exit %d:\n%s", code, p.out.String())
	}
	rep = cli.StatusReport{}
	if err := json.Unmarshal([]byte(p.out.String()), &rep); err != nil || len(rep.Clients) != 1 || rep.Clients[0].Client != "overlap" {
		t.Fatalf("-client overlap: %v %+v", err, rep.Clients)
	}
}

// TestStatusUnreadable: a missing and a malformed record are shown with
// why (the seed command; the MalformedError naming the field) and exit 1;
// a missing record of a bootstrap client is fine.
func TestStatusUnreadable(t *testing.T) {
	s := newStatusStack(t)
	broken := s.gen()
	s.put(s.path+"-broken", map[string]any{"client_secret": broken, "pending_client_secret": s.gen()})
	s.put(s.path+"-deleted", map[string]any{"client_secret": s.gen()})
	if err := s.vault.Client().KVv2("secret").Delete(context.Background(), s.path+"-deleted"); err != nil {
		t.Fatal(err)
	}
	cfg := s.config("bad.yaml", "pod-a", "    schedule: \"@every 720h\"\n    grace_period: 1h\n"+
		client("missing", s.path+"-missing")+client("broken", s.path+"-broken")+client("deleted", s.path+"-deleted")+
		client("fresh", s.path+"-fresh")+"    bootstrap: true\n")
	for _, format := range []string{"table", "json"} {
		p := s.start("status", "--config", cfg, "-o", format)
		if code := p.wait(t, 30*time.Second); code != 1 {
			t.Fatalf("%s: exit %d, want 1:\n%s", format, code, p.out.String())
		}
		out := p.out.String()
		t.Logf("-status -o %s:\n%s", format, out)
		s.noSecret(out)
		for _, w := range []string{
			"vault kv put -cas=0 secret/" + s.path + "-missing client_secret=-`",
			"field \\\"phase\\\"", "vault kv undelete -versions=1 secret/" + s.path + "-deleted",
			"bootstrap is on", "3 of 5 records could not be read",
		} {
			if format == "table" {
				w = strings.ReplaceAll(w, `\"`, `"`)
			}
			if !strings.Contains(out, w) {
				t.Errorf("%s output lacks %q:\n%s", format, w, out)
			}
		}
	}
	p := s.start("status", "--config", cfg, "--client", "fresh")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("bootstrap client with no record: exit %d, want 0:\n%s", code, p.out.String())
	}
}

// TestStatusFlags: bad -status flags exit 2 and say why.
func TestStatusFlags(t *testing.T) {
	s := newStatusStack(t)
	cfg := s.config("c.yaml", "pod-a", "    schedule: \"@every 720h\"\n    grace_period: 1h\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-status", "-client", "nope"}, `"nope"`},
		{[]string{"-status", "-o", "yaml"}, `"yaml"`},
		{[]string{"-o", "json"}, "-o is only meaningful with -status"},
		{[]string{"-status", "-once"}, "-status cannot be combined"},
	} {
		p := s.start(append([]string{"-config", cfg}, tc.args...)...)
		if code := p.wait(t, 30*time.Second); code != 2 {
			t.Fatalf("%v: exit %d, want 2:\n%s", tc.args, code, p.out.String())
		}
		if !strings.Contains(p.out.String(), tc.want) {
			t.Fatalf("%v: output lacks %s:\n%s", tc.args, tc.want, p.out.String())
		}
	}
}
