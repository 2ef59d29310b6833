package vault_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestNoRedirectToAnotherHost: a Vault address that redirects every
// request (307, as a standby or a hijacked proxy would) to another host
// gets an error, and the other host never sees a request, let alone the
// token.
func TestNoRedirectToAnotherHost(t *testing.T) {
	const token = "hvs.token-must-stay-home"
	var hits, tokens atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if strings.Contains(r.Header.Get("X-Vault-Token"), token) {
			tokens.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{"id":"x","policies":["default"],"renewable":false}}`))
	}))
	t.Cleanup(other.Close)
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(first.Close)

	_, err := vault.New(t.Context(), vault.Config{Address: first.URL, Auth: vault.TokenAuth(secret.New(token))})
	if err == nil || !strings.Contains(err.Error(), "redirect to another host") {
		t.Fatalf("New through a redirecting address: %v", err)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("the error holds the token: %v", err)
	}
	if hits.Load() != 0 || tokens.Load() != 0 {
		t.Fatalf("the other host got %d requests, %d with the token", hits.Load(), tokens.Load())
	}
	t.Logf("refused: %v", err)
}
