package vault_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/vault"
	"github.com/affix-rotator/affix-rotator/vault/storetest"
)

func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }

type obs struct {
	mu    sync.Mutex
	calls []string
}

func (o *obs) VaultRequest(op, result string, _ time.Duration, up bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, op+":"+result)
}

func (o *obs) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.calls, ",")
}

func newStore(t *testing.T) (*vault.Store, *vaulttest.Server, *obs) {
	t.Helper()
	srv := vaulttest.Shared(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	o := &obs{}
	s, err := vault.New(ctx, vault.Config{Address: srv.Addr, KVMount: "secret", Timeout: 5 * time.Second, Auth: vault.TokenAuth(secret.New(srv.Token)), Observer: o})
	if err != nil {
		t.Fatal(err)
	}
	return s, srv, o
}

func TestReadWriteCAS(t *testing.T) {
	s, srv, _ := newStore(t)
	ctx := context.Background()
	path := vaulttest.Path(t)

	_, v, err := s.Read(ctx, path)
	if !errors.Is(err, vault.ErrNotFound) || v != 0 {
		t.Fatalf("missing record: got version %d err %v", v, err)
	}
	if !strings.Contains(err.Error(), "vault kv put -cas=0 secret/"+path+" client_secret=-`") {
		t.Fatalf("not-found error does not show the seed command: %v", err)
	}

	rec := vault.Record{ClientSecret: secret.New("s0"), Phase: vault.PhaseStable, Extra: map[string]any{"owner": "team-a"}}
	v1, err := s.Write(ctx, path, rec, 0)
	if err != nil || v1 != 1 {
		t.Fatalf("create: v=%d err=%v", v1, err)
	}
	// cas=0 is create-only: a second create loses.
	if _, err := s.Write(ctx, path, rec, 0); !errors.Is(err, vault.ErrConflict) {
		t.Fatalf("second create with cas 0: %v, want ErrConflict", err)
	}
	got, v, err := s.Read(ctx, path)
	if err != nil || v != 1 || !got.ClientSecret.Equal(secret.New("s0")) || got.Extra["owner"] != "team-a" {
		t.Fatalf("read back: %+v v=%d err=%v", got, v, err)
	}
	staged := got
	staged.Phase, staged.PendingClientSecret, staged.RotationID = vault.PhaseStaged, secret.New("s1"), "r1"
	if _, err := s.Write(ctx, path, staged, 7); !errors.Is(err, vault.ErrConflict) {
		t.Fatalf("stale cas: %v, want ErrConflict", err)
	}
	v2, err := s.Write(ctx, path, staged, v)
	if err != nil || v2 != 2 {
		t.Fatalf("cas write: v=%d err=%v", v2, err)
	}
	// A consumer reading the raw KV sees client_secret unchanged in staged.
	raw, err := srv.Client().KVv2("secret").Get(ctx, path)
	if err != nil || raw.Data["client_secret"] != "s0" || raw.Data["pending_client_secret"] != "s1" || raw.Data["owner"] != "team-a" {
		t.Fatalf("raw record: %v %v", raw.Data, err)
	}
}

func TestSeededRecordIsStable(t *testing.T) {
	s, srv, _ := newStore(t)
	ctx := context.Background()
	path := vaulttest.Path(t)
	if _, err := srv.Client().KVv2("secret").Put(ctx, path, map[string]any{"client_secret": "seeded"}); err != nil {
		t.Fatal(err)
	}
	rec, v, err := s.Read(ctx, path)
	if err != nil || rec.Phase != vault.PhaseStable || v != 1 || rec.ClientSecret.Reveal() != "seeded" {
		t.Fatalf("seeded: %+v v=%d err=%v", rec, v, err)
	}
}

func TestDeletedRecordIsNotFoundWithVersion(t *testing.T) {
	s, srv, _ := newStore(t)
	ctx := context.Background()
	path := vaulttest.Path(t)
	kv := srv.Client().KVv2("secret")
	if _, err := kv.Put(ctx, path, map[string]any{"client_secret": "x"}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, path); err != nil {
		t.Fatal(err)
	}
	_, v, err := s.Read(ctx, path)
	if !errors.Is(err, vault.ErrNotFound) || v != 1 {
		t.Fatalf("deleted: v=%d err=%v (want ErrNotFound, version 1 to CAS against)", v, err)
	}
	if _, err := s.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("y")}, v); err != nil {
		t.Fatalf("re-create over deleted version: %v", err)
	}
}

func TestMalformedRecordNamesFieldNotValue(t *testing.T) {
	s, srv, _ := newStore(t)
	ctx := context.Background()
	cases := map[string]map[string]any{
		"phase missing with pending": {"client_secret": "TOPSECRET-a", "pending_client_secret": "TOPSECRET-b"},
		"unknown phase":              {"client_secret": "TOPSECRET-a", "phase": "TOPSECRET-c"},
		"staged without pending":     {"client_secret": "TOPSECRET-a", "phase": "staged", "rotation_id": "r"},
		"overlap without grace":      {"client_secret": "TOPSECRET-a", "previous_client_secret": "TOPSECRET-b", "phase": "overlap", "rotation_id": "r"},
		"bad time":                   {"client_secret": "TOPSECRET-a", "rotated_at": "yesterday"},
		"empty secret":               {"client_secret": ""},
		"stable with previous":       {"client_secret": "TOPSECRET-a", "previous_client_secret": "TOPSECRET-b", "phase": "stable"},
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			path := vaulttest.Path(t)
			if _, err := srv.Client().KVv2("secret").Put(ctx, path, data); err != nil {
				t.Fatal(err)
			}
			_, _, err := s.Read(ctx, path)
			var me *vault.MalformedError
			if !errors.As(err, &me) {
				t.Fatalf("want MalformedError, got %v", err)
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Fatalf("error leaks a value: %v", err)
			}
			if !strings.Contains(err.Error(), "secret/"+path) {
				t.Fatalf("error does not name the path: %v", err)
			}
		})
	}
}

func TestNonStringFieldIsMalformed(t *testing.T) {
	// KV v2 accepts any JSON; the CLI writes strings. A number is malformed.
	_, err := vault.Decode(map[string]any{"client_secret": 42.0})
	var me *vault.MalformedError
	if !errors.As(err, &me) || me.Field != "client_secret" {
		t.Fatalf("got %v", err)
	}
}

func TestSealedVaultIsUnavailableThenRecovers(t *testing.T) {
	// Own server: sealing the shared one would disturb parallel tests.
	srv, err := vaulttest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	ctx := context.Background()
	o := &obs{}
	s, err := vault.New(ctx, vault.Config{Address: srv.Addr, KVMount: "secret", Timeout: 5 * time.Second, Auth: vault.TokenAuth(secret.New(srv.Token)), Observer: o})
	if err != nil {
		t.Fatal(err)
	}
	path := "affix/sealed"
	if _, err := s.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("a")}, 0); err != nil {
		t.Fatal(err)
	}
	if err := srv.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Read(ctx, path); !errors.Is(err, vault.ErrUnavailable) {
		t.Fatalf("sealed read: %v, want ErrUnavailable", err)
	}
	if err := s.Ready(ctx); err == nil {
		t.Fatal("Ready on a sealed Vault returned nil")
	}
	if err := srv.Unseal(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Read(ctx, path); err != nil {
		t.Fatalf("after unseal: %v", err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready after unseal: %v", err)
	}
}

func TestUnreachableVaultIsUnavailable(t *testing.T) {
	addr, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	srv := vaulttest.Shared(t)
	s, err := vault.New(context.Background(), vault.Config{Address: srv.Addr, KVMount: "secret", Auth: vault.TokenAuth(secret.New(srv.Token))})
	if err != nil {
		t.Fatal(err)
	}
	_ = s
	_, err = vault.New(context.Background(), vault.Config{Address: "http://" + addr, KVMount: "secret", Timeout: time.Second, Auth: vault.TokenAuth(secret.New("tok-XYZ"))})
	if err == nil {
		t.Fatal("New against a closed port succeeded")
	}
	if strings.Contains(err.Error(), "tok-XYZ") {
		t.Fatalf("error leaks the token: %v", err)
	}
}

func TestBadTokenFailsClearly(t *testing.T) {
	srv := vaulttest.Shared(t)
	_, err := vault.New(context.Background(), vault.Config{Address: srv.Addr, KVMount: "secret", Auth: vault.TokenAuth(secret.New("not-a-token-SECRET"))})
	if err == nil || !strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "not-a-token-SECRET") {
		t.Fatalf("got %v", err)
	}
}

// TestContract runs the store contract against a real Vault server; the
// in-memory store of the simulation runs the same one.
func TestContract(t *testing.T) {
	s, srv, _ := newStore(t)
	kv := srv.Client().KVv2("secret")
	storetest.Run(t, storetest.Backend{
		Store: s,
		Put: func(t *testing.T, path string, data map[string]any) {
			if _, err := kv.Put(context.Background(), path, data); err != nil {
				t.Fatal(err)
			}
		},
		Delete: func(t *testing.T, path string) {
			if err := kv.Delete(context.Background(), path); err != nil {
				t.Fatal(err)
			}
		},
		DeleteVersions: func(t *testing.T, path string, versions ...int) {
			if err := kv.DeleteVersions(context.Background(), path, versions); err != nil {
				t.Fatal(err)
			}
		},
		Destroy: func(t *testing.T, path string, versions ...int) {
			if err := kv.Destroy(context.Background(), path, versions); err != nil {
				t.Fatal(err)
			}
		},
		SetMaxVersions: func(t *testing.T, path string, n int) {
			if err := kv.PatchMetadata(context.Background(), path, api.KVMetadataPatchInput{MaxVersions: &n}); err != nil {
				t.Fatal(err)
			}
		},
		Path: func(t *testing.T) string { return vaulttest.Path(t) },
	})
}
