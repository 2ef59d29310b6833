package httpapi_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affix-rotator/affix-rotator/internal/httpapi"
	"github.com/affix-rotator/affix-rotator/internal/redact"
)

// TestStatusAndReadyzAreRedacted: a last_error on /status and a /readyz
// error echoing a secret, URL-, JSON- or base64-encoded, are served
// redacted.
func TestStatusAndReadyzAreRedacted(t *testing.T) {
	const key = "hvs.vault<token>&more"
	b64 := base64.StdEncoding.EncodeToString([]byte("X-Vault-Token: " + key))
	h := httpapi.Handler(httpapi.Options{
		Gatherer: prometheus.NewRegistry(),
		Ready:    func(context.Context) error { return errors.New("proxy said " + url.PathEscape(key) + " " + b64) },
		Status:   func() any { return map[string]string{"last_error": "echo " + key + " " + url.QueryEscape(key)} },
		Redact:   redact.New(key).String,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for _, path := range []string{"/status", "/readyz"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		for _, f := range []string{key, `hvs.vault\u003ctoken\u003e\u0026more`, url.QueryEscape(key), url.PathEscape(key), b64} {
			if strings.Contains(string(b), f) {
				t.Errorf("%s serves %q: %s", path, f, b)
			}
		}
		if !strings.Contains(string(b), "[REDACTED]") {
			t.Errorf("%s: nothing redacted: %s", path, b)
		}
	}
}
