// Package storetest is the contract every record store must meet: the real
// Vault store (run against a real Vault server) and the in-memory store of
// the simulation run the same tests, so the simulation cannot drift from
// Vault's real check-and-set behaviour.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// Store is the interface under test (the rotator's view of Vault).
type Store interface {
	Read(ctx context.Context, path string) (vault.Record, int, error)
	Write(ctx context.Context, path string, r vault.Record, cas int) (int, error)
	ReadVersion(ctx context.Context, path string, version int) (vault.Record, error)
	Versions(ctx context.Context, path string) (current, oldest int, err error)
	Claim(ctx context.Context, path string, c vault.Claim, drop []string) error
	WriteClaimed(ctx context.Context, path string, r vault.Record, cas int) (int, []vault.Claim, error)
}

// Backend gives the contract a fresh store and raw access to it.
type Backend struct {
	Store Store
	// Put writes raw KV data without check-and-set, as `vault kv put` does.
	Put func(t *testing.T, path string, data map[string]any)
	// Delete soft-deletes the latest version, as `vault kv delete` does.
	Delete func(t *testing.T, path string)
	// DeleteVersions soft-deletes versions, as `vault kv delete -versions=…` does.
	DeleteVersions func(t *testing.T, path string, versions ...int)
	// Destroy destroys versions, as `vault kv destroy -versions=…` does.
	Destroy func(t *testing.T, path string, versions ...int)
	// SetMaxVersions makes path keep its n latest versions, as
	// `vault kv metadata put -max-versions=n` does.
	SetMaxVersions func(t *testing.T, path string, n int)
	// Path returns a fresh path for one test.
	Path func(t *testing.T) string
}

// Run runs the contract.
func Run(t *testing.T, b Backend) {
	ctx := context.Background()
	t.Run("reconcile claim lives in metadata", func(t *testing.T) { runClaim(t, b) })
	t.Run("missing record is not found at version 0", func(t *testing.T) {
		path := b.Path(t)
		_, v, err := b.Store.Read(ctx, path)
		if !errors.Is(err, vault.ErrNotFound) || v != 0 {
			t.Fatalf("v=%d err=%v", v, err)
		}
		if !strings.Contains(err.Error(), "vault kv put") {
			t.Fatalf("not-found error lacks the seed command: %v", err)
		}
	})
	t.Run("cas 0 creates only", func(t *testing.T) {
		path := b.Path(t)
		r := vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("a")}
		if v, err := b.Store.Write(ctx, path, r, 0); err != nil || v != 1 {
			t.Fatalf("create: v=%d err=%v", v, err)
		}
		if _, err := b.Store.Write(ctx, path, r, 0); !errors.Is(err, vault.ErrConflict) {
			t.Fatalf("second create: %v", err)
		}
	})
	t.Run("cas must equal the current version", func(t *testing.T) {
		path := b.Path(t)
		r := vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("a")}
		v1, _ := b.Store.Write(ctx, path, r, 0)
		for _, bad := range []int{v1 - 1, v1 + 1, v1 + 5} {
			if _, err := b.Store.Write(ctx, path, r, bad); !errors.Is(err, vault.ErrConflict) {
				t.Fatalf("cas %d with version %d: %v", bad, v1, err)
			}
		}
		v2, err := b.Store.Write(ctx, path, r, v1)
		if err != nil || v2 != v1+1 {
			t.Fatalf("good cas: v=%d err=%v", v2, err)
		}
	})
	t.Run("round trip of every field", func(t *testing.T) {
		path := b.Path(t)
		now := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
		r := vault.Record{
			ClientSecret: secret.New("cur"), PreviousClientSecret: secret.New("prev"), Phase: vault.PhaseOverlap,
			RotationID: "r1", GraceUntil: now.Add(time.Hour), RotatedAt: now.Add(-time.Hour), ClientID: "cid",
			LeaseOwner: "pod-a", LeaseUntil: now.Add(2 * time.Hour), LastError: "x", Extra: map[string]any{"team": "a"},
			RetryNotBefore: now.Add(time.Minute),
			LastAction:     &vault.Action{Action: "extend-grace", By: "token-ops", Reason: "slow consumers", At: now, RotationID: "r1"},
		}
		if _, err := b.Store.Write(ctx, path, r, 0); err != nil {
			t.Fatal(err)
		}
		got, v, err := b.Store.Read(ctx, path)
		if err != nil || v != 1 {
			t.Fatalf("v=%d err=%v", v, err)
		}
		if !got.ClientSecret.Equal(r.ClientSecret) || !got.PreviousClientSecret.Equal(r.PreviousClientSecret) ||
			got.Phase != r.Phase || got.RotationID != r.RotationID || !got.GraceUntil.Equal(r.GraceUntil) ||
			!got.RotatedAt.Equal(r.RotatedAt) || got.ClientID != r.ClientID || got.LeaseOwner != r.LeaseOwner ||
			!got.LeaseUntil.Equal(r.LeaseUntil) || got.LastError != r.LastError || got.Extra["team"] != "a" ||
			!got.RetryNotBefore.Equal(r.RetryNotBefore) || got.LastAction == nil || got.LastAction.Action != "extend-grace" ||
			got.LastAction.By != "token-ops" || got.LastAction.Reason != "slow consumers" || !got.LastAction.At.Equal(now) || got.LastAction.RotationID != "r1" {
			t.Fatalf("round trip lost something: %#v", got)
		}
	})
	t.Run("seeded record is stable", func(t *testing.T) {
		path := b.Path(t)
		b.Put(t, path, map[string]any{"client_secret": "seed"})
		got, v, err := b.Store.Read(ctx, path)
		if err != nil || v != 1 || got.Phase != vault.PhaseStable || got.ClientSecret.Reveal() != "seed" {
			t.Fatalf("%+v v=%d err=%v", got, v, err)
		}
	})
	t.Run("malformed record", func(t *testing.T) {
		path := b.Path(t)
		b.Put(t, path, map[string]any{"client_secret": "s", "pending_client_secret": "p"})
		_, v, err := b.Store.Read(ctx, path)
		var me *vault.MalformedError
		if !errors.As(err, &me) || v != 1 || !strings.Contains(err.Error(), path) {
			t.Fatalf("v=%d err=%v", v, err)
		}
	})
	t.Run("deleted latest version", func(t *testing.T) {
		path := b.Path(t)
		b.Put(t, path, map[string]any{"client_secret": "s"})
		b.Delete(t, path)
		_, v, err := b.Store.Read(ctx, path)
		if !errors.Is(err, vault.ErrNotFound) || v != 1 {
			t.Fatalf("v=%d err=%v", v, err)
		}
		if _, err := b.Store.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("n")}, 0); !errors.Is(err, vault.ErrConflict) {
			t.Fatalf("cas 0 over a deleted version: %v (Vault refuses it)", err)
		}
		if v2, err := b.Store.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("n")}, 1); err != nil || v2 != 2 {
			t.Fatalf("cas 1 over a deleted version 1: v=%d err=%v", v2, err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		c, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := b.Store.Read(c, b.Path(t)); err == nil {
			t.Fatal("read with a cancelled context succeeded")
		}
	})
	runHistory(t, b)
}

// runHistory checks ReadVersion and Versions: the KV v2 version history in
// which the rotator finds the secret a rotation replaced.
func runHistory(t *testing.T, b Backend) {
	ctx := context.Background()
	stable := func(s string) vault.Record {
		return vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New(s)}
	}
	write := func(t *testing.T, path string, r vault.Record, cas int) int {
		t.Helper()
		v, err := b.Store.Write(ctx, path, r, cas)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	wantState := func(t *testing.T, err error, version int, state string) {
		t.Helper()
		var ve *vault.VersionError
		if !errors.Is(err, vault.ErrNotFound) || !errors.As(err, &ve) || ve.Version != version || ve.State != state {
			t.Fatalf("version %d: got %v, want a VersionError %s (an ErrNotFound)", version, err, state)
		}
	}
	t.Run("history of a rotation", func(t *testing.T) {
		path := b.Path(t)
		if _, _, err := b.Store.Versions(ctx, path); !errors.Is(err, vault.ErrNotFound) {
			t.Fatalf("versions of a missing record: %v", err)
		}
		_, err := b.Store.ReadVersion(ctx, path, 1)
		wantState(t, err, 1, vault.VersionAbsent)
		grace := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
		v := write(t, path, stable("S0"), 0)
		v = write(t, path, vault.Record{Phase: vault.PhaseStaged, ClientSecret: secret.New("S0"), PendingClientSecret: secret.New("S1"), RotationID: "r1"}, v)
		v = write(t, path, vault.Record{Phase: vault.PhaseOverlap, ClientSecret: secret.New("S1"), PreviousClientSecret: secret.New("S0"), RotationID: "r1", GraceUntil: grace}, v)
		v = write(t, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("S1"), RotationID: "r1", RotatedAt: grace}, v)
		cur, oldest, err := b.Store.Versions(ctx, path)
		if err != nil || cur != v || cur != 4 || oldest != 1 {
			t.Fatalf("versions: current %d oldest %d err %v, want 4 1", cur, oldest, err)
		}
		r1, err := b.Store.ReadVersion(ctx, path, 1)
		if err != nil || r1.Phase != vault.PhaseStable || r1.ClientSecret.Reveal() != "S0" {
			t.Fatalf("version 1: %+v %v", r1, err)
		}
		r3, err := b.Store.ReadVersion(ctx, path, 3)
		if err != nil || r3.Phase != vault.PhaseOverlap || r3.PreviousClientSecret.Reveal() != "S0" || !r3.GraceUntil.Equal(grace) {
			t.Fatalf("version 3: %+v %v", r3, err)
		}
		_, err = b.Store.ReadVersion(ctx, path, 5)
		wantState(t, err, 5, vault.VersionAbsent)
		if _, err := b.Store.ReadVersion(ctx, path, 0); err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Fatalf("version 0: %v, want an argument error", err)
		}
	})
	t.Run("deleted and destroyed versions", func(t *testing.T) {
		path := b.Path(t)
		v := write(t, path, stable("a"), 0)
		v = write(t, path, stable("b"), v)
		v = write(t, path, stable("c"), v)
		b.DeleteVersions(t, path, 1)
		b.Destroy(t, path, 2)
		_, err := b.Store.ReadVersion(ctx, path, 1)
		wantState(t, err, 1, vault.VersionDeleted)
		if !strings.Contains(err.Error(), "vault kv undelete -versions=1 ") || !strings.Contains(err.Error(), path) {
			t.Fatalf("deleted version: the error does not say how to restore it: %v", err)
		}
		_, err = b.Store.ReadVersion(ctx, path, 2)
		wantState(t, err, 2, vault.VersionDestroyed)
		if r, err := b.Store.ReadVersion(ctx, path, 3); err != nil || r.ClientSecret.Reveal() != "c" {
			t.Fatalf("version 3: %v", err)
		}
		b.Delete(t, path)
		if _, v2, err := b.Store.Read(ctx, path); !errors.Is(err, vault.ErrNotFound) || v2 != v {
			t.Fatalf("read with the latest deleted: v=%d err=%v", v2, err)
		}
		if cur, oldest, err := b.Store.Versions(ctx, path); err != nil || cur != 3 || oldest != 1 {
			t.Fatalf("versions with the latest deleted: %d %d %v, want 3 1", cur, oldest, err)
		}
		_, err = b.Store.ReadVersion(ctx, path, 3)
		wantState(t, err, 3, vault.VersionDeleted)
	})
	t.Run("versions no longer kept", func(t *testing.T) {
		path := b.Path(t)
		v := write(t, path, stable("v1"), 0)
		b.SetMaxVersions(t, path, 3)
		for i := 2; i <= 5; i++ {
			v = write(t, path, stable(fmt.Sprintf("v%d", i)), v)
		}
		cur, oldest, err := b.Store.Versions(ctx, path)
		if err != nil || cur != 5 || oldest != 3 {
			t.Fatalf("versions: %d %d %v, want 5 3", cur, oldest, err)
		}
		_, err = b.Store.ReadVersion(ctx, path, 2)
		wantState(t, err, 2, vault.VersionAbsent)
		if r, err := b.Store.ReadVersion(ctx, path, 3); err != nil || r.ClientSecret.Reveal() != "v3" {
			t.Fatalf("version 3: %v", err)
		}
	})
	t.Run("malformed old version", func(t *testing.T) {
		path := b.Path(t)
		b.Put(t, path, map[string]any{"client_secret": "TOPSECRET-s", "pending_client_secret": "TOPSECRET-p"})
		write(t, path, stable("n"), 1)
		_, err := b.Store.ReadVersion(ctx, path, 1)
		var me *vault.MalformedError
		if !errors.As(err, &me) || !strings.Contains(err.Error(), path+" (version 1)") || strings.Contains(err.Error(), "TOPSECRET") {
			t.Fatalf("got %v, want a MalformedError naming the path and version, no value", err)
		}
	})
	t.Run("cancelled context on history", func(t *testing.T) {
		c, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := b.Store.ReadVersion(c, b.Path(t), 1); err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Fatalf("read version with a cancelled context: %v", err)
		}
		if _, _, err := b.Store.Versions(c, b.Path(t)); err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Fatalf("versions with a cancelled context: %v", err)
		}
	})
}

// runClaim: reconcile claims add no version, one key per instance (no
// claim hides another's), are read with the record, a check-and-set write
// is answered with the claims it found, and a claim removes the keys it is
// told to.
func runClaim(t *testing.T, b Backend) {
	ctx := context.Background()
	path := b.Path(t)
	if err := b.Store.Claim(ctx, path, vault.Claim{Owner: "a/1", Until: time.Now()}, nil); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("claim on a path never written: %v, want ErrNotFound", err)
	}
	r := vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("a")}
	v1, claims, err := b.Store.WriteClaimed(ctx, path, r, 0)
	if err != nil || v1 != 1 || len(claims) != 0 {
		t.Fatalf("first write: v=%d claims=%v err=%v", v1, claims, err)
	}
	until := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	for i := 0; i < 3; i++ {
		if err := b.Store.Claim(ctx, path, vault.Claim{Owner: fmt.Sprintf("pod-a/%d", i), Until: until}, nil); err != nil {
			t.Fatalf("claim: %v", err)
		}
	}
	// A later claim of another instance with an earlier end hides nothing.
	if err := b.Store.Claim(ctx, path, vault.Claim{Owner: "pod-b/9", Until: until.Add(-time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	got, v, err := b.Store.Read(ctx, path)
	if err != nil || v != v1 {
		t.Fatalf("claims added a version: v=%d (want %d) err=%v", v, v1, err)
	}
	want := []vault.Claim{{Owner: "pod-a/2", Until: until, Key: vault.ClaimKey("pod-a")}, {Owner: "pod-b/9", Until: until.Add(-time.Hour), Key: vault.ClaimKey("pod-b")}}
	if !claimsEqual(got.Claims, want) {
		t.Fatalf("read claims %+v, want %+v", got.Claims, want)
	}
	for k := range got.Encode() {
		if strings.HasPrefix(k, vault.ClaimKeyPrefix) {
			t.Fatal("a claim was encoded into the record's data")
		}
	}
	v2, claims, err := b.Store.WriteClaimed(ctx, path, r, v1)
	if err != nil || v2 != v1+1 || !claimsEqual(claims, want) {
		t.Fatalf("write over claims: v=%d claims=%+v err=%v", v2, claims, err)
	}
	if _, _, err := b.Store.WriteClaimed(ctx, path, r, v1); !errors.Is(err, vault.ErrConflict) {
		t.Fatalf("stale cas: %v", err)
	}
	// pod-c claims and drops pod-b's key (and may not drop its own).
	if err := b.Store.Claim(ctx, path, vault.Claim{Owner: "pod-c/1", Until: until}, []string{vault.ClaimKey("pod-b"), vault.ClaimKey("pod-c")}); err != nil {
		t.Fatal(err)
	}
	got, _, _ = b.Store.Read(ctx, path)
	want = []vault.Claim{{Owner: "pod-a/2", Until: until, Key: vault.ClaimKey("pod-a")}, {Owner: "pod-c/1", Until: until, Key: vault.ClaimKey("pod-c")}}
	if !claimsEqual(got.Claims, want) {
		t.Fatalf("after a claim that drops pod-b's: %+v, want %+v", got.Claims, want)
	}
}

func claimsEqual(a, b []vault.Claim) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Owner != b[i].Owner || !a[i].Until.Equal(b[i].Until) || a[i].Key != b[i].Key {
			return false
		}
	}
	return true
}
