package redact_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"net/url"
	"strings"
	"testing"

	"github.com/affix-rotator/affix-rotator/internal/redact"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

func jsonEscaped(s string) string {
	b, _ := json.Marshal(s) // escapes <, >, & as \u003c…
	return string(b[1 : len(b)-1])
}

func numeric(s, format string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, format, r)
	}
	return b.String()
}

// TestRedactsEveryForm: a secret (with the characters that change under
// each encoding) echoed in each form, alone or inside other text, is
// caught; the table of forms is logged.
func TestRedactsEveryForm(t *testing.T) {
	for _, key := range []string{
		`AFX_live+k3y/with=sp&cial<chars>"q'`, // every encoding changes it
		"9f86d081-884c7d65-9a2feaa0-c55ad015", // a generated client secret
	} {
		set := redact.New(key)
		forms := []struct{ name, text string }{
			{"raw", key},
			{"url QueryEscape", url.QueryEscape(key)},
			{"url PathEscape", url.PathEscape(key)},
			{"url QueryEscape, lower-case hex", lowerPct(url.QueryEscape(key))},
			{"html.EscapeString", html.EscapeString(key)},
			{"template.HTMLEscapeString", template.HTMLEscapeString(key)},
			{"HTML decimal entities", numeric(key, "&#%d;")},
			{"HTML hex entities", numeric(key, "&#x%x;")},
			{"JSON-escaped (HTML-safe)", jsonEscaped(key)},
			{"JSON-escaped, in a JSON body", `{"error":"bad header Authorization: ` + jsonEscaped(key) + `"}`},
			{"base64 std padded", base64.StdEncoding.EncodeToString([]byte(key))},
			{"base64 std unpadded", base64.RawStdEncoding.EncodeToString([]byte(key))},
			{"base64 URL padded", base64.URLEncoding.EncodeToString([]byte(key))},
			{"base64 URL unpadded", base64.RawURLEncoding.EncodeToString([]byte(key))},
			{"base64 of header (offset 1)", base64.StdEncoding.EncodeToString([]byte("Authorization: " + key))},
			{"base64 of header (offset 2)", base64.StdEncoding.EncodeToString([]byte("Authorization:  " + key + "\r\n"))},
			{"base64 URL of header (offset 0)", base64.RawURLEncoding.EncodeToString([]byte("Auth: " + key + "!"))},
			{"HTML page echoing the URL-encoded key", "<html><body>Blocked: /v1?key=" + url.QueryEscape(key) + "</body></html>"},
		}
		for _, f := range forms {
			in := "WAF says: " + f.text + " (end)"
			got := set.String(in)
			caught := !strings.Contains(got, f.text) && strings.Contains(got, secret.Redacted)
			t.Logf("%-40s %-8v %.60s", f.name, caught, f.text)
			if !caught {
				t.Errorf("%s: %q not redacted: %q", f.name, f.text, got)
			}
		}
	}
}

func lowerPct(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			b.WriteString("%" + strings.ToLower(s[i+1:i+3]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TestLeavesOtherTextAlone: text holding no secret comes back unchanged,
// and a nil Set redacts nothing.
func TestLeavesOtherTextAlone(t *testing.T) {
	in := `affix: POST /2023-03-01/management/client: 401 Unauthorized; message: {"b64":"QUJDREVGR0g="}`
	if got := redact.String(in, "9f86d081-884c7d65", "other-secret-xyz"); got != in {
		t.Fatalf("changed: %q", got)
	}
	var s *redact.Set
	if s.String("x") != "x" {
		t.Fatal("nil set changed text")
	}
}
