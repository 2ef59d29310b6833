package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestOnceProgressIsThinned: over a 24h grace with a progress report every
// 4 s, -once prints at most one line a minute, plus every change of phase
// and every retry (which says when -once gives up).
func TestOnceProgressIsThinned(t *testing.T) {
	pp := newProgressPrinter(time.Minute, 15*time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	grace := 24 * time.Hour
	lines := 0
	print := func(p rotator.Progress) string {
		l, ok := pp.line(p)
		if ok {
			lines++
			return l
		}
		return ""
	}
	if l := print(rotator.Progress{Client: "prod", Phase: vault.PhaseStaged, RotationID: "r1", Now: t0}); !strings.Contains(l, "phase=staged") {
		t.Fatalf("first line not printed: %q", l)
	}
	if l := print(rotator.Progress{Client: "prod", Phase: vault.PhaseOverlap, RotationID: "r1", GraceUntil: t0.Add(grace), Now: t0.Add(time.Second), Waiting: "grace period"}); !strings.Contains(l, "phase=overlap") {
		t.Fatalf("the change of phase is not printed at once: %q", l)
	}
	for now := t0.Add(5 * time.Second); now.Before(t0.Add(grace)); now = now.Add(4 * time.Second) {
		print(rotator.Progress{Client: "prod", Phase: vault.PhaseOverlap, RotationID: "r1", GraceUntil: t0.Add(grace), Now: now, Waiting: "grace period"})
	}
	if max := 2 + int(grace/time.Minute) + 1; lines > max {
		t.Fatalf("%d lines over a 24h grace, want at most %d", lines, max)
	}
	// Retries: each printed, each saying when -once gives up (counted from
	// the first failure of the run).
	fail := t0.Add(grace)
	for i := range 3 {
		l := print(rotator.Progress{Client: "prod", Phase: vault.PhaseOverlap, RotationID: "r1", Now: fail.Add(time.Duration(i) * time.Second), Waiting: "retrying in 1s after: affix: 503"})
		if want := "gives up at " + fail.Add(15*time.Minute).Format(time.RFC3339) + ": -retry-timeout 15m0s"; !strings.Contains(l, want) {
			t.Fatalf("retry %d: %q lacks %q", i, l, want)
		}
	}
	if l := print(rotator.Progress{Client: "prod", Phase: vault.PhaseStable, RotationID: "r1", Now: fail.Add(5 * time.Second)}); !strings.Contains(l, "phase=stable") {
		t.Fatalf("the end is not printed: %q", l)
	}
}

// TestIncidentCommandsAreBounded: with Vault down an incident command
// retries for -retry-timeout (default 1m, 15m for a plain -once), each
// retry line saying when it stops, then fails; an interrupt while it
// waits says that nothing was changed.
func TestIncidentCommandsAreBounded(t *testing.T) {
	dir := t.TempDir()
	dead, err := vaulttest.FreeAddr() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	y := "vault: {address: \"http://" + dead + "\"}\nclients:\n  - name: prod\n    vault_path: affix/prod\n    schedule: \"@every 720h\"\n    grace_period: 24h\n"
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return map[string]string{"VAULT_TOKEN": "t", "AFFIX_API_KEY": "k"}[k] }

	// The default bound: the first retry line says 1m.
	for _, args := range [][]string{
		{"-end-grace", "-client", "prod", "-reason", "r"},
		{"-extend-grace", "1h", "-client", "prod", "-reason", "r"},
		{"-reaccept-previous", "1h", "-client", "prod", "-reason", "r"},
		{"-once", "-grace", "1h", "-client", "prod", "-reason", "r"},
		{"-once"},
	} {
		want := "-retry-timeout 1m0s"
		if len(args) == 1 {
			want = "-retry-timeout 15m0s"
		}
		out := &vaulttest.SyncBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int)
		go func() {
			done <- Main(ctx, append([]string{"-config", path}, args...), Env{Stdout: out, Stderr: out, Getenv: getenv})
		}()
		deadline := time.After(30 * time.Second)
		for !strings.Contains(out.String(), "cannot connect to vault; retrying until") {
			select {
			case <-deadline:
				t.Fatalf("%v: no retry line:\n%s", args, out.String())
			case <-time.After(10 * time.Millisecond):
			}
		}
		cancel()
		code := <-done
		if code != ExitFailed || !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "interrupted while waiting for vault: nothing was changed") {
			t.Errorf("%v: exit %d, want 1, %q and the interrupt line:\n%s", args, code, want, out.String())
		}
	}

	// The bound holds: with -retry-timeout 2s, the command fails after
	// about 2 s, every retry line naming the same stop time.
	var out bytes.Buffer
	start := time.Now()
	code := Main(context.Background(), []string{"-config", path, "-end-grace", "-client", "prod", "-reason", "r", "-retry-timeout", "2s"}, Env{Stdout: &out, Stderr: &out, Getenv: getenv})
	took := time.Since(start)
	if code != ExitFailed || took > 10*time.Second || !strings.Contains(out.String(), "FAILED: cannot connect to vault for 2s (-retry-timeout); nothing was changed") {
		t.Fatalf("exit %d after %s:\n%s", code, took, out.String())
	}
	stops := map[string]bool{}
	for _, l := range strings.Split(out.String(), "\n") {
		if i := strings.Index(l, "retrying until "); i >= 0 {
			stops[strings.Fields(l[i+len("retrying until "):])[0]] = true
		}
	}
	if len(stops) != 1 {
		t.Fatalf("retry lines name %d stop times, want 1:\n%s", len(stops), out.String())
	}
}
