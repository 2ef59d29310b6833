package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 12 * time.Second: "12s", 4*time.Minute + 5*time.Second: "4m05s", 3*time.Hour + 7*time.Minute: "3h07m",
		21*24*time.Hour + 4*time.Hour + 59*time.Minute: "21d4h", -90 * time.Second: "1m30s",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%s) = %q, want %q", d, got, want)
		}
	}
}

type fakeReader map[string]any // path -> vault.Record or error

func (f fakeReader) Read(_ context.Context, path string) (vault.Record, int, error) {
	switch v := f[path].(type) {
	case vault.Record:
		return v, 3, nil
	case error:
		return vault.Record{}, 0, v
	}
	return vault.Record{}, 0, fmt.Errorf("vault: %w at secret/%s", vault.ErrNotFound, path)
}

func (fakeReader) Path(p string) string { return "secret/" + p }

// TestStatusNextRun: the next run from the record, with jitter and max_age,
// and what a schedule that never fires and an unavailable Vault look like.
func TestStatusNextRun(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	rot := now.Add(-time.Hour)
	stable := vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("TOPSECRET"), RotatedAt: rot}
	r := fakeReader{
		"a/jitter": stable, "a/maxage": stable, "a/never": stable,
		"a/denied": fmt.Errorf("vault: read secret/a/denied: %w", vault.ErrDenied),
	}
	cfg := &config.Config{}
	clients := []config.Client{
		{Name: "jitter", VaultPath: "a/jitter", Schedule: "@every 24h", Jitter: config.Duration(time.Hour)},
		{Name: "maxage", VaultPath: "a/maxage", Schedule: "@every 720h", MaxAge: config.Duration(2 * time.Hour)},
		{Name: "never", VaultPath: "a/never", Schedule: "0 0 30 2 *"},
		{Name: "denied", VaultPath: "a/denied", Schedule: "@daily"},
	}
	out := readStatus(context.Background(), r, nil, cfg, clients, now)
	if got := out[0].NextRun; got == nil || !got.Equal(rot.Add(24*time.Hour)) || !strings.Contains(out[0].NextRunNote, "up to 1h0m0s") {
		t.Fatalf("jitter: %v %q", got, out[0].NextRunNote)
	}
	if got := out[1].NextRun; got == nil || !got.Equal(rot.Add(2*time.Hour)) {
		t.Fatalf("max_age: %v", got)
	}
	if out[2].NextRun != nil || !strings.Contains(out[2].NextRunNote, "never") {
		t.Fatalf("never: %+v", out[2])
	}
	if out[3].State != stateError || out[3].readable() {
		t.Fatalf("denied: %+v", out[3])
	}
	var b strings.Builder
	if err := writeStatusTable(&b, StatusReport{GeneratedAt: now, Clients: out}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "TOPSECRET") || !strings.Contains(b.String(), "denied: error: vault: read secret/a/denied: permission denied") {
		t.Fatalf("table:\n%s", b.String())
	}

	// Vault unreachable: every client is shown with the error.
	out = readStatus(context.Background(), nil, errors.New("vault: connection refused"), cfg, clients, now)
	for _, c := range out {
		if c.State != stateError || c.Error != "vault: connection refused" {
			t.Fatalf("no Vault: %+v", c)
		}
	}
}

// TestStatusSpeaksTheRecord: -status reads the facts the rotator keeps in
// the record: a seeded record's next run is a date counted from when it was
// seeded (on bf7ad79: "at the daemon's next start"), and a rotation stuck
// in flight shows its own step error, its grace and since when it fails,
// in the same words /status uses (state ok, phase apart).
func TestStatusSpeaksTheRecord(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	seeded := now.Add(-30 * time.Minute)
	r := fakeReader{
		"a/seeded": vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("TOPSECRET"), VersionTime: seeded},
		"a/stuck": vault.Record{Phase: vault.PhaseStaged, ClientSecret: secret.New("TOPSECRET"), PendingClientSecret: secret.New("NEWSECRET"),
			RotationID: "r2", StagedAt: now.Add(-time.Hour), GracePeriod: 5 * time.Minute, StepError: "affix: 500 Internal Server Error", FailingSince: now.Add(-50 * time.Minute),
			LastError: ""},
	}
	clients := []config.Client{
		{Name: "seeded", VaultPath: "a/seeded", Schedule: "@every 1h"},
		{Name: "stuck", VaultPath: "a/stuck", Schedule: "@every 1h"},
	}
	out := readStatus(context.Background(), r, nil, &config.Config{}, clients, now)
	if got := out[0].NextRun; got == nil || !got.Equal(seeded.Add(time.Hour)) || out[0].State != "ok" || out[0].Phase != "stable" {
		t.Fatalf("seeded: state %s phase %s next run %v (%q), want ok, stable, %s", out[0].State, out[0].Phase, got, out[0].NextRunNote, seeded.Add(time.Hour))
	}
	var b strings.Builder
	if err := writeStatusTable(&b, StatusReport{GeneratedAt: now, Clients: out}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"stuck: step failing since 2026-11-23T08:10:00Z (50m00s) on rotation r2: affix: 500", "stuck: grace of this rotation: 5m0s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "SECRET") {
		t.Fatalf("a secret in -status:\n%s", b.String())
	}
}
