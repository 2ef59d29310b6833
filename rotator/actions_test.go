package rotator_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

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

// actionFixture is a fixture for an operator action on a hand-made
// record: its Affix accepts overlapRecord's two secrets, so that the action
// can tell Affix the set, and its client "p" (grace 1h) is at affix/p.
func actionFixture(t *testing.T) (*fixture, *rotator.Client) {
	t.Helper()
	f := newFixture(t, "key-actions", "affix/p")
	f.fake.AddClient(f.key, "client-id-1", overlapNew, overlapOld)
	f.grace = time.Hour
	c := f.newClient("@every 720h", f.api)
	c.Name = "p"
	return f, c
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
	ctx := context.Background()

	t.Run("another operator wins", func(t *testing.T) {
		f, c := actionFixture(t)
		clock := f.clock
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
		f, c := actionFixture(t)
		clock := f.clock
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
