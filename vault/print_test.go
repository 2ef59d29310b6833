package vault

import (
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/secret/secrettest"
)

// TestNothingPrintsTheToken walks the structs that hold the Vault token
// (the Auth, the authenticator, the Store, whose api.Client holds the
// token in an unexported field) through every printer.
func TestNothingPrintsTheToken(t *testing.T) {
	const token = "hvs.TOKEN-must-never-print-7f3a"
	ac := api.DefaultConfig()
	ac.Address = "http://127.0.0.1:1"
	c, err := api.NewClient(ac)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	auth := TokenAuth(secret.New(token))
	a := &authenticator{client: newAPIClient(c), auth: auth, log: zap.NewNop(), kickCh: make(chan struct{}, 1)}
	s := &Store{client: a.client, kv: c.KVv2("secret"), mount: "secret", auth: a}
	cfg := Config{Address: ac.Address, KVMount: "secret", Auth: auth}
	type holder struct {
		store *Store
		auth  Auth
	}
	for name, v := range map[string]any{
		"Auth": auth, "*Auth": &auth, "*authenticator": a,
		"Store": *s, "*Store": s, "Config": cfg, "holder": holder{s, auth}, "*holder": &holder{s, auth},
	} {
		secrettest.AssertNotPrinted(t, name, v, token)
	}
	if c.Token() != token {
		t.Fatal("the client lost its token")
	}
}

// TestNewRefusesCredentialsInAddress: an address with user info (from the
// config or VAULT_ADDR) is refused before any request, unquoted.
func TestNewRefusesCredentialsInAddress(t *testing.T) {
	t.Setenv("VAULT_ADDR", "https://admin:s3cr3tpass@127.0.0.1:1")
	for _, addr := range []string{"", "http://admin:s3cr3tpass@127.0.0.1:1"} {
		_, err := New(t.Context(), Config{Address: addr, Auth: TokenAuth(secret.New("hvs.token-never-sent"))})
		if err == nil || !strings.Contains(err.Error(), "must not hold credentials") || strings.Contains(err.Error(), "s3cr3tpass") {
			t.Fatalf("address %q: %v", addr, err)
		}
	}
}
