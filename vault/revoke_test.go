package vault

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// TestCloseRevokesLoginTokens: on a real Vault, Close revokes the token an
// AppRole login obtained (Vault no longer knows it) and logs so; a token
// given to the process is left valid.
func TestCloseRevokesLoginTokens(t *testing.T) {
	srv := vaulttest.Shared(t)
	ctx := t.Context()
	root := srv.Client()
	mount := "approle-revoke"
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/r", map[string]any{"token_policies": "default", "token_ttl": "1h"}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().ReadWithContext(ctx, "auth/"+mount+"/role/r/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/r/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(file, []byte(sid.Data["secret_id"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := AppRoleAuth(mount, rid.Data["role_id"].(string), file, "")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	s, err := New(ctx, Config{Address: srv.Addr, Auth: auth, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	tok := s.auth.client.Token()
	if _, err := root.Auth().Token().LookupWithContext(ctx, tok); err != nil {
		t.Fatalf("the login token is not valid before Close: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Auth().Token().LookupWithContext(ctx, tok); err == nil {
		t.Fatal("the login token is still valid after Close")
	}
	if logs.FilterMessage("vault: login token revoked (auth/token/revoke-self)").Len() != 1 {
		t.Fatalf("no revocation logged: %v", logs.All())
	}

	// A token given to the process stays valid.
	child, err := root.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := New(ctx, Config{Address: srv.Addr, Auth: TokenAuth(secret.New(child.Auth.ClientToken))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Auth().Token().LookupWithContext(ctx, child.Auth.ClientToken); err != nil {
		t.Fatalf("Close revoked a token it was given: %v", err)
	}
}
