package affix_test

import (
	"context"
	"encoding/base64"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// TestErrorRedactsEncodedEchoes: a WAF that answers with a page echoing
// the request's Authorization header and body, URL-, HTML-, JSON- or
// base64-encoded, gives an error that holds neither the API key nor the
// secret sent, in any of those forms.
func TestErrorRedactsEncodedEchoes(t *testing.T) {
	const key, sec = "AFX+key/with=signs&<>", "9f86d081-884c7d65-9a2feaa0-c55ad015"
	forms := map[string]func(string) string{
		"url query": url.QueryEscape, "url path": url.PathEscape, "html": html.EscapeString,
		"base64":    func(s string) string { return base64.StdEncoding.EncodeToString([]byte("h: " + s)) },
		"base64url": func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) },
	}
	for name, enc := range forms {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusForbidden)
				_, _ = w.Write([]byte(`{"message":"blocked ` + enc(r.Header.Get("Authorization")) + " " + enc(sec) + `"}`))
			}))
			t.Cleanup(srv.Close)
			c, err := affix.New(srv.URL, secret.New(key))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: []secret.Value{secret.New(sec)}})
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, s := range []string{key, sec} {
				if strings.Contains(msg, enc(s)) || strings.Contains(msg, s) {
					t.Errorf("%s echo survives: %s", name, msg)
				}
			}
			if !strings.Contains(msg, secret.Redacted) {
				t.Errorf("nothing redacted: %s", msg)
			}
		})
	}
}
