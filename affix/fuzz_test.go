package affix

import (
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// FuzzDecodeResponse: any 200 body either decodes or gives an error, never
// panics, and a successful decode only holds strings from the body.
func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{
		`{"client_id":"0","client_secret":["a","b"],"redirect_uris":[],"name":"n","webhook_uri":null}`,
		`{"client_secret":"a"}`, `{"client_secret":[1]}`, `[]`, `null`, `{"client_secret":[null]}`,
		`{"client_secret":["a"]} x`, strings.Repeat("[", 1000), `{"client_secret":["\u0000"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := decodeResponse(b)
		if err == nil && out == nil {
			t.Fatal("nil response without error")
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line error: %q", err)
		}
	})
}

// FuzzRetryAfter: any header gives a delay within [0, MaxRetryAfter].
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "42", "-1", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, h string) {
		d, ok, _ := parseRetryAfter(h, now, func(s string) string { return s })
		if d < 0 || d > MaxRetryAfter || (!ok && d != 0) {
			t.Fatalf("%q -> %v %v", h, d, ok)
		}
	})
}

// FuzzRedaction: whatever the server says, the secrets sent never survive
// in the sanitized text.
func FuzzRedaction(f *testing.F) {
	f.Add("bad secret ffffffff-ffffffff-ffffffff-ffffffff", "ffffffff-ffffffff-ffffffff-ffffffff")
	f.Add("key=KEY123 line\nbreak", "KEY123")
	f.Fuzz(func(t *testing.T, msg, sec string) {
		if len(sec) < 4 {
			return
		}
		c := &Client{apiKey: secret.New("api-key-" + sec)}
		got := c.redactor([]secret.Value{secret.New(sec)})(msg)
		if strings.Contains(got, sec) || strings.ContainsAny(got, "\n\r") {
			t.Fatalf("sanitized %q still holds the secret or a newline: %q", msg, got)
		}
	})
}
