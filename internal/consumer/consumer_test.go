package consumer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/consumer"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }

const (
	apiKey = "api-key-1"
	cid    = "cid-1"
	s0     = "S0-aaaaaaaa"
	s1     = "S1-bbbbbbbb"
)

func write(t *testing.T, path, v string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestConsumerCounts: each Once reads the files as they are now and counts
// the fake's decision; a missing or empty file is an error, not a refusal;
// FirstSeen notes when each secret was first held; nothing says a secret.
func TestConsumerCounts(t *testing.T) {
	fake := affixtest.NewServer()
	defer fake.Close()
	fake.AddClient(apiKey, cid, s0)
	dir := t.TempDir()
	secretFile, idFile := filepath.Join(dir, "secret"), filepath.Join(dir, "id")
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := consumer.New(consumer.Config{SecretFile: secretFile, ClientIDFile: idFile, ClientID: cid, TokenURL: fake.URL + affixtest.TokenPath, Clock: clock})
	ctx := context.Background()

	c.Once(ctx) // no file yet
	write(t, secretFile, "")
	c.Once(ctx) // empty
	write(t, secretFile, s0+"\n")
	write(t, idFile, "")
	c.Once(ctx) // accepted; the id file is empty: ClientID
	t0 := clock.Now()
	write(t, idFile, cid)
	clock.Advance(time.Second)
	write(t, secretFile, s1)
	c.Once(ctx) // refused: the fake does not accept s1 yet
	t1 := clock.Now()
	fake.AddClient(apiKey, cid, s1, s0)
	clock.Advance(time.Second)
	c.Once(ctx) // accepted
	write(t, idFile, "cid-other\r\n")
	c.Once(ctx) // refused: another client

	st := c.Stats()
	if st.Attempts != 6 || st.Accepted != 2 || st.Refused != 2 || st.Errors != 2 || st.Failed() != 4 {
		t.Fatalf("stats %+v", st)
	}
	if !st.FirstRefused.Equal(t1) || !st.LastRefused.Equal(clock.Now()) {
		t.Fatalf("refusals from %s to %s, want %s to %s", st.FirstRefused, st.LastRefused, t1, clock.Now())
	}
	if got := fake.Authentications(cid); got != (affixtest.Auths{Accepted: 2, Refused: 1}) {
		t.Fatalf("the fake counted %+v", got)
	}
	if at, ok := c.FirstSeen(affixtest.Fingerprint(s0)); !ok || !at.Equal(t0) {
		t.Fatalf("s0 first seen %s %v, want %s", at, ok, t0)
	}
	if at, ok := c.FirstSeen(affixtest.Fingerprint(s1)); !ok || !at.Equal(t1) {
		t.Fatalf("s1 first seen %s %v, want %s", at, ok, t1)
	}
	if strings.Contains(st.LastError, s0) || strings.Contains(st.LastError, s1) {
		t.Fatal("LastError holds a secret")
	}
}

// TestConsumerRun: Run authenticates at once and then every Interval of
// its clock, until its context ends.
func TestConsumerRun(t *testing.T) {
	fake := affixtest.NewServer()
	defer fake.Close()
	fake.AddClient(apiKey, cid, s0)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "secret"), s0)
	clock := clockwork.NewFakeClock()
	c := consumer.New(consumer.Config{SecretFile: filepath.Join(dir, "secret"), ClientID: cid, TokenURL: fake.URL + affixtest.TokenPath, Interval: time.Minute, Clock: clock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	waitFor := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for c.Stats().Attempts < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d attempts, want %d", c.Stats().Attempts, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(1)
	for i := 2; i <= 4; i++ {
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
		waitFor(i)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Accepted != st.Attempts || st.Attempts < 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestHistoryAndPickups: History lists each change of client_secret in the
// record's versions (not the writes that keep it), with the version's
// creation time and grace_until; Pickups says how late the consumer first
// held each new secret.
func TestHistoryAndPickups(t *testing.T) {
	v := vaulttest.Shared(t)
	kv := v.Client().KVv2("secret")
	ctx := context.Background()
	path := vaulttest.Path(t)
	if err := consumer.KeepVersions(ctx, kv, path, 100); err != nil {
		t.Fatal(err)
	}
	grace := "2026-01-01T00:00:03Z"
	for _, data := range []map[string]any{
		{"client_secret": s0},
		{"client_secret": s0, "pending_client_secret": s1, "phase": "staged"},
		{"client_secret": s1, "previous_client_secret": s0, "phase": "overlap", "grace_until": grace},
		{"client_secret": s1, "phase": "stable"},
	} {
		if _, err := kv.Put(ctx, path, data); err != nil {
			t.Fatal(err)
		}
	}
	h, err := consumer.History(ctx, kv, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 1 || h[0].Version != 3 || h[0].Fingerprint != affixtest.Fingerprint(s1) || h[0].GraceUntil.Format(time.RFC3339) != grace || h[0].CurrentAt.IsZero() {
		t.Fatalf("history %+v", h)
	}
	if time.Since(h[0].CurrentAt) > time.Minute || time.Since(h[0].CurrentAt) < 0 {
		t.Fatalf("CurrentAt %s is not the write's time", h[0].CurrentAt)
	}

	fake := affixtest.NewServer()
	defer fake.Close()
	fake.AddClient(apiKey, cid, s1)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "secret"), s1)
	clock := clockwork.NewFakeClockAt(h[0].CurrentAt.Add(700 * time.Millisecond))
	c := consumer.New(consumer.Config{SecretFile: filepath.Join(dir, "secret"), ClientID: cid, TokenURL: fake.URL + affixtest.TokenPath, Clock: clock})
	if p := c.Pickups(h); len(p) != 1 || p[0].Seen {
		t.Fatalf("pickups before reading %+v", p)
	}
	c.Once(ctx)
	if p := c.Pickups(h); len(p) != 1 || !p[0].Seen || p[0].Late != 700*time.Millisecond {
		t.Fatalf("pickups %+v", p)
	}
}
