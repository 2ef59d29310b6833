package vault_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/vault"
)

// restrictedStore logs in as a userpass user (so the token has an identity
// entity) whose policy grants read on prefix/ro/* and read+update on
// prefix/rw/*, and nothing else on the KV mount.
func restrictedStore(t *testing.T, prefix string) (*vault.Store, string) {
	t.Helper()
	srv := vaulttest.Shared(t)
	ctx := context.Background()
	root := srv.Client()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	mount := "up-" + name
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "userpass"}); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`
path "secret/data/%[1]s/ro/*" { capabilities = ["read"] }
path "secret/data/%[1]s/rw/*" { capabilities = ["read", "create", "update"] }
`, prefix)
	if err := root.Sys().PutPolicyWithContext(ctx, name, policy); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/users/alice", map[string]any{"password": "pw-" + name, "token_policies": name}); err != nil {
		t.Fatal(err)
	}
	login, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/login/alice", map[string]any{"password": "pw-" + name})
	if err != nil || login == nil || login.Auth == nil {
		t.Fatalf("login: %v", err)
	}
	tok := login.Auth.ClientToken
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	s, err := vault.New(ctx, vault.Config{Address: srv.Addr, KVMount: "secret", Timeout: 5 * time.Second, Auth: vault.TokenAuth(secret.New(tok))})
	if err != nil {
		t.Fatal(err)
	}
	return s, tok
}

// TestWhoAmI: the token's display name and entity, never the token.
func TestWhoAmI(t *testing.T) {
	ctx := context.Background()
	s, tok := restrictedStore(t, "whoami")
	who, err := s.WhoAmI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\S*alice \(entity [0-9a-f-]{36}\)$`).MatchString(who) {
		t.Fatalf("WhoAmI = %q, want the display name and the entity id", who)
	}
	if strings.Contains(who, tok) {
		t.Fatal("WhoAmI shows the token")
	}

	rootStore, _, o := newStore(t)
	who, err = rootStore.WhoAmI(ctx)
	if err != nil || !strings.HasSuffix(who, " (root token)") || strings.Contains(who, vaulttest.Shared(t).Token) {
		t.Fatalf("root token: %q %v, want the display name and \"(root token)\"", who, err)
	}
	if !strings.Contains(o.String(), "whoami:ok") {
		t.Fatalf("the request is not observed: %s", o)
	}
}

// TestCapabilities: a restricted token's capabilities on the records' data
// paths, so a missing update can be reported as
// "token lacks update on secret/data/…".
func TestCapabilities(t *testing.T) {
	ctx := context.Background()
	prefix := "caps-" + strings.ToLower(vaulttest.Path(t)[len("test/"):])
	s, _ := restrictedStore(t, prefix)
	ro, rw, none := prefix+"/ro/prod", prefix+"/rw/prod", "elsewhere/prod"
	caps, err := s.Capabilities(ctx, ro, rw, none)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(caps[ro], []string{"read"}) {
		t.Fatalf("ro: %v", caps[ro])
	}
	if !vault.HasCapability(caps[rw], "update") || !vault.HasCapability(caps[rw], "read") || !vault.HasCapability(caps[rw], "create") {
		t.Fatalf("rw: %v", caps[rw])
	}
	if vault.HasCapability(caps[ro], "update") {
		t.Fatal("ro grants update")
	}
	if !slices.Equal(caps[none], []string{"deny"}) || vault.HasCapability(caps[none], "read") {
		t.Fatalf("none: %v", caps[none])
	}
	if got := s.DataPath(ro); got != "secret/data/"+ro {
		t.Fatalf("DataPath = %q", got)
	}
	// One path alone, and no path.
	if one, err := s.Capabilities(ctx, rw); err != nil || !vault.HasCapability(one[rw], "update") {
		t.Fatalf("one path: %v %v", one, err)
	}
	if zero, err := s.Capabilities(ctx); err != nil || len(zero) != 0 {
		t.Fatalf("no path: %v %v", zero, err)
	}
	// The root token can do everything.
	rootStore, _, _ := newStore(t)
	caps, err = rootStore.Capabilities(ctx, ro)
	if err != nil || !vault.HasCapability(caps[ro], "update") {
		t.Fatalf("root: %v %v", caps, err)
	}
}

func TestHasCapability(t *testing.T) {
	for _, tc := range []struct {
		caps []string
		want string
		ok   bool
	}{
		{[]string{"read", "update"}, "update", true},
		{[]string{"read"}, "update", false},
		{[]string{"root"}, "update", true},
		{[]string{"deny"}, "read", false},
		{nil, "read", false},
	} {
		if got := vault.HasCapability(tc.caps, tc.want); got != tc.ok {
			t.Errorf("HasCapability(%v, %q) = %v", tc.caps, tc.want, got)
		}
	}
}
