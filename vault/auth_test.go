package vault_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestAppRoleLoginAndRelogin logs in with AppRole on a real Vault whose
// tokens live 2s at most, and keeps working well past that: the
// LifetimeWatcher renews and, at max TTL, the store logs in again.
func TestAppRoleLoginAndRelogin(t *testing.T) {
	srv, err := vaulttest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	root := srv.Client()
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	policy := `path "secret/data/affix/*" { capabilities = ["create","read","update"] }`
	if err := root.Sys().PutPolicyWithContext(ctx, "rotator", policy); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/rotator", map[string]any{
		"token_policies": "rotator", "token_ttl": "1s", "token_max_ttl": "2s",
	}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().ReadWithContext(ctx, "auth/approle/role/rotator/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/rotator/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(file, []byte(sid.Data["secret_id"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := vault.AppRoleAuth("approle", rid.Data["role_id"].(string), file, "")
	if err != nil {
		t.Fatal(err)
	}
	o := &obs{}
	s, err := vault.New(ctx, vault.Config{Address: srv.Addr, KVMount: "secret", Auth: auth, Observer: o})
	if err != nil {
		t.Fatal(err)
	}
	path := "affix/approle"
	if _, err := s.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("a")}, 0); err != nil {
		t.Fatal(err)
	}
	// Outlive two max TTLs; every read must succeed (a denied read also
	// triggers a re-login, so allow one retry).
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, err := s.Read(ctx, path); err != nil {
			time.Sleep(200 * time.Millisecond)
			if _, _, err := s.Read(ctx, path); err != nil {
				t.Fatalf("read after token expiry: %v", err)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	logins := strings.Count(o.String(), "login:ok")
	if logins < 2 {
		t.Fatalf("expected re-logins after max TTL, saw %d logins (%v)", logins, o)
	}
	// The policy holds: a path outside it is denied, not "unavailable".
	if _, _, err := s.Read(ctx, "other/x"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("read outside policy: %v", err)
	}
}

// TestTokenWithoutRenewSelf: an operator's renewable token whose policies
// do not include auth/token/renew-self (created with -no-default-policy)
// still works: it is used until it expires, with a warning, instead of
// failing with a misleading "renew token: permission denied".
func TestTokenWithoutRenewSelf(t *testing.T) {
	srv := vaulttest.Shared(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	root := srv.Client()
	policy := `path "secret/data/*" { capabilities = ["create","read","update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }`
	if err := root.Sys().PutPolicyWithContext(ctx, "no-renew", policy); err != nil {
		t.Fatal(err)
	}
	renewable := true
	tok, err := root.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{
		Policies: []string{"no-renew"}, NoDefaultPolicy: true, TTL: "1h", Renewable: &renewable,
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := vault.New(ctx, vault.Config{Address: srv.Addr, KVMount: "secret", Timeout: 5 * time.Second, Auth: vault.TokenAuth(secret.New(tok.Auth.ClientToken))})
	if err != nil {
		t.Fatalf("a valid token that may not renew itself: %v", err)
	}
	path := vaulttest.Path(t)
	if _, err := s.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("a")}, 0); err != nil {
		t.Fatalf("write with a token that may not renew itself: %v", err)
	}
}

// TestDeniedRequests: a refusal that a login cannot cure (the token is
// valid; its policy does not cover the path) makes no login; a request
// refused because the token was revoked is sent once more after a fresh
// login and succeeds, with no ERROR line and no error for the caller.
func TestDeniedRequests(t *testing.T) {
	srv := vaulttest.Shared(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	root := srv.Client()
	mount := "approle-" + strings.ToLower(strings.ReplaceAll(vaulttest.Path(t), "/", "-"))
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	path := vaulttest.Path(t)
	if err := root.Sys().PutPolicyWithContext(ctx, mount, `path "secret/data/`+path+`" { capabilities = ["create","read","update"] }`); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/rotator", map[string]any{"token_policies": mount, "token_ttl": "1h"}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().ReadWithContext(ctx, "auth/"+mount+"/role/rotator/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/rotator/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(file, []byte(sid.Data["secret_id"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := vault.AppRoleAuth(mount, rid.Data["role_id"].(string), file, "")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	o := &obs{}
	s, err := vault.New(ctx, vault.Config{Address: srv.Addr, KVMount: "secret", Timeout: 5 * time.Second, Auth: auth, Observer: o, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("a")}, 0); err != nil {
		t.Fatal(err)
	}
	logins := func() int { return strings.Count(o.String(), "login:") }

	// A policy denial: no login, however often.
	for range 3 {
		if _, _, err := s.Read(ctx, path+"-outside"); !errors.Is(err, vault.ErrDenied) {
			t.Fatalf("read outside the policy: %v", err)
		}
	}
	if n := logins(); n != 1 {
		t.Fatalf("%d logins after policy denials, want 1 (the first): %s", n, o)
	}

	// The token is revoked: the next read succeeds after one login.
	if err := root.Sys().RevokePrefixWithContext(ctx, "auth/"+mount+"/login"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Read(ctx, path); err != nil {
		t.Fatalf("read after the token was revoked: %v", err)
	}
	if _, err := s.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("b")}, 1); err != nil {
		t.Fatalf("write with the new token: %v", err)
	}
	if n := logins(); n != 2 {
		t.Fatalf("%d logins, want 2: %s", n, o)
	}
	if after := o.String()[strings.LastIndex(o.String(), "login:"):]; !strings.Contains(after, "read:denied") || !strings.Contains(after, "read:ok") {
		t.Fatalf("the refused read is not counted, or not sent again: %s", o)
	}
	if errs := logs.FilterLevelExact(zap.ErrorLevel).All(); len(errs) > 0 {
		t.Fatalf("ERROR lines: %v", errs)
	}
	if logs.FilterMessage("vault: authenticated").Len() != 1 {
		t.Fatalf("no line says why it logged in again: %v", logs.All())
	}
}
