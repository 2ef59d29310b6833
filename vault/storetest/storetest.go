// Package storetest is the contract every record store must meet: the real
// Vault store (run against a real Vault server) and the in-memory store of
// the simulation run the same tests, so the simulation cannot drift from
// Vault's real check-and-set behaviour.
package storetest

import (
	"context"
	"errors"
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
}

// Backend gives the contract a fresh store and raw access to it.
type Backend struct {
	Store Store
	// Put writes raw KV data without check-and-set, as `vault kv put` does.
	Put func(t *testing.T, path string, data map[string]any)
	// Delete soft-deletes the latest version, as `vault kv delete` does.
	Delete func(t *testing.T, path string)
	// Path returns a fresh path for one test.
	Path func(t *testing.T) string
}

// Run runs the contract.
func Run(t *testing.T, b Backend) {
	ctx := context.Background()
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
}
