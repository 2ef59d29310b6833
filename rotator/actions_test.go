package rotator_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/robfig/cron/v3"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
	"github.com/affix-rotator/affix-rotator/vault/vaultmem"
)

// racingStore runs once, just before the first write through it, what
// another process does between this one's read and its write.
type racingStore struct {
	*vaultmem.Store
	once   sync.Once
	before func()
}

func (s *racingStore) Write(ctx context.Context, path string, r vault.Record, cas int) (int, error) {
	s.once.Do(s.before)
	return s.Store.Write(ctx, path, r, cas)
}

// The secrets of overlapRecord, in Affix's shape.
const (
	overlapNew = "aaaaaaaa-aaaaaaaa-aaaaaaaa-aaaaaaa1"
	overlapOld = "bbbbbbbb-bbbbbbbb-bbbbbbbb-bbbbbbb0"
)

// withAffix gives c an Affix of its own: the fake, accepting overlapRecord's
// two secrets, so that an operator action can tell Affix the set.
func withAffix(t *testing.T, c *rotator.Client) *rotator.Client {
	t.Helper()
	fake := affixtest.NewServer()
	t.Cleanup(fake.Close)
	fake.AddClient("key-actions", "client-id-1", overlapNew, overlapOld)
	api, err := affix.New(fake.URL, secret.New("key-actions"), affix.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cc := *c
	cc.Affix = api
	return &cc
}

func overlapRecord(t *testing.T, st *vaultmem.Store, graceUntil time.Time) {
	t.Helper()
	if _, err := st.Put("affix/p", map[string]any{"client_secret": overlapNew, "previous_client_secret": overlapOld,
		"phase": "overlap", "rotation_id": "r1", "grace_until": graceUntil.Format(time.RFC3339Nano)}, -1); err != nil {
		t.Fatal(err)
	}
}

// TestActionsRace: two operators act on one record at once. The one whose
// write lands first wins; the other is told the record changed (naming the
// winner's action) and changes nothing. A write of the rotator itself in
// between (a lease extension) is no reason to refuse: the action retries.
func TestActionsRace(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	sched, _ := cron.ParseStandard("@every 720h")
	c := &rotator.Client{Name: "p", VaultPath: "affix/p", Schedule: sched, GracePeriod: time.Hour}
	ctx := context.Background()

	t.Run("another operator wins", func(t *testing.T) {
		c := withAffix(t, c)
		mem := vaultmem.New("secret")
		overlapRecord(t, mem, clock.Now().Add(time.Hour))
		bob := rotator.New(rotator.Options{InstanceID: "bob", Store: mem, Clock: clock})
		st := &racingStore{Store: mem, before: func() {
			if _, err := bob.ExtendGrace(ctx, c, 6*time.Hour, rotator.Audit{By: "bob", Reason: "slow consumers"}); err != nil {
				t.Errorf("bob: %v", err)
			}
		}}
		alice := rotator.New(rotator.Options{InstanceID: "alice", Store: st, Clock: clock})
		_, err := alice.ExtendGrace(ctx, c, time.Hour, rotator.Audit{By: "alice", Reason: "also slow"})
		var ce *rotator.ChangedError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "extend-grace by bob") {
			t.Fatalf("alice: %v, want a ChangedError naming bob's action", err)
		}
		rec, _, _ := mem.Read(ctx, "affix/p")
		if want := clock.Now().Add(7 * time.Hour); !rec.GraceUntil.Equal(want) || rec.LastAction.By != "bob" {
			t.Fatalf("grace_until %s by %s, want %s by bob only", rec.GraceUntil, rec.LastAction.By, want)
		}
	})
	t.Run("the rotator writes in between", func(t *testing.T) {
		c := withAffix(t, c)
		mem := vaultmem.New("secret")
		overlapRecord(t, mem, clock.Now().Add(time.Hour))
		st := &racingStore{Store: mem, before: func() {
			rec, v, _ := mem.Read(ctx, "affix/p")
			rec.LeaseOwner, rec.LeaseUntil = "pod-a", clock.Now().Add(2*time.Hour)
			if _, err := mem.Write(ctx, "affix/p", rec, v); err != nil {
				t.Error(err)
			}
		}}
		alice := rotator.New(rotator.Options{InstanceID: "alice", Store: st, Clock: clock})
		until, err := alice.ExtendGrace(ctx, c, time.Hour, rotator.Audit{By: "alice", Reason: "slow"})
		if err != nil || !until.Equal(clock.Now().Add(2*time.Hour)) {
			t.Fatalf("alice: %v, until %s", err, until)
		}
		rec, _, _ := mem.Read(ctx, "affix/p")
		// The action took the waiting daemon's lease to tell Affix the set,
		// then released it for the daemon to go on.
		if rec.LeaseOwner != "" || rec.LastAction.By != "alice" || !rec.GraceUntil.Equal(clock.Now().Add(2*time.Hour)) {
			t.Fatalf("lease %q, last action by %s, grace_until %s: the action lost the daemon's write or its own, or kept the lease", rec.LeaseOwner, rec.LastAction.By, rec.GraceUntil)
		}
	})
}
