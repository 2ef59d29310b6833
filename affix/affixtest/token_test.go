package affixtest_test

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
)

const (
	form    = "application/x-www-form-urlencoded"
	cid     = "cid-prod"
	odd     = "S:cr/et+%&=" // a secret that needs form-encoding in Basic credentials
	ccGrant = "grant_type=client_credentials"
)

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

func formBody(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v.Encode()
}

// TestTokenEndpoint: the consumer stand-in answers 200 with a dummy token
// exactly when the secret is one the client accepts now (HTTP Basic or form
// credentials), 401 invalid_client otherwise, and 400 for malformed
// requests; it never echoes a secret.
func TestTokenEndpoint(t *testing.T) {
	s := affixtest.NewServer()
	defer s.Close()
	s.AddClient(key, cid, sec, odd)
	u := s.URL + affixtest.TokenPath
	for _, tc := range []struct {
		name   string
		method string
		header map[string][]string
		body   string
		status int
		err    string
	}{
		{"basic", "POST", hdr(form, basic(cid, sec)), ccGrant, 200, ""},
		{"basic, secret needing form-encoding", "POST", hdr(form, basic(cid, odd)), ccGrant, 200, ""},
		{"form credentials", "POST", hdr(form, ""), formBody("grant_type", "client_credentials", "client_id", cid, "client_secret", sec), 200, ""},
		{"form content type with charset", "POST", hdr(form+"; charset=utf-8", basic(cid, sec)), ccGrant, 200, ""},
		{"wrong secret", "POST", hdr(form, basic(cid, "nope")), ccGrant, 401, "invalid_client"},
		{"wrong secret in the body", "POST", hdr(form, ""), formBody("grant_type", "client_credentials", "client_id", cid, "client_secret", "nope"), 401, "invalid_client"},
		{"empty secret", "POST", hdr(form, ""), formBody("grant_type", "client_credentials", "client_id", cid, "client_secret", ""), 401, "invalid_client"},
		{"unknown client", "POST", hdr(form, basic("cid-other", sec)), ccGrant, 401, "invalid_client"},
		{"the API key is not a client secret", "POST", hdr(form, basic(cid, key)), ccGrant, 401, "invalid_client"},
		{"both methods", "POST", hdr(form, basic(cid, sec)), formBody("grant_type", "client_credentials", "client_id", cid, "client_secret", sec), 400, "invalid_request"},
		{"no credentials", "POST", hdr(form, ""), ccGrant, 400, "invalid_request"},
		{"bearer, not basic", "POST", hdr(form, "Bearer x"), ccGrant, 400, "invalid_request"},
		{"no grant_type", "POST", hdr(form, basic(cid, sec)), "", 400, "invalid_request"},
		{"other grant_type", "POST", hdr(form, basic(cid, sec)), "grant_type=password", 400, "unsupported_grant_type"},
		{"grant_type twice", "POST", hdr(form, basic(cid, sec)), ccGrant + "&" + ccGrant, 400, "invalid_request"},
		{"JSON body", "POST", hdr("application/json", basic(cid, sec)), `{"grant_type":"client_credentials"}`, 400, "invalid_request"},
		{"GET", "GET", hdr("", basic(cid, sec)), "", 405, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, u, tc.header, tc.body)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.raw)
			}
			for _, secret := range []string{sec, odd, key} {
				if bytes.Contains(a.raw, []byte(secret)) {
					t.Fatalf("the answer echoes a secret: %s", a.raw)
				}
			}
			if tc.status == 200 {
				tok, _ := a.body["access_token"].(string)
				if !strings.HasPrefix(tok, "affixtest-token-") || a.body["token_type"] != "Bearer" || a.body["expires_in"] != 3600.0 || a.header.Get("Cache-Control") != "no-store" {
					t.Fatalf("token answer %s, Cache-Control %q", a.raw, a.header.Get("Cache-Control"))
				}
				return
			}
			if a.body["error"] != tc.err {
				t.Fatalf("error %v, want %q: %s", a.body["error"], tc.err, a.raw)
			}
			if tc.status == 401 && len(tc.header["Authorization"]) > 0 && a.header.Get("WWW-Authenticate") == "" {
				t.Fatal("a 401 to Basic credentials lacks WWW-Authenticate")
			}
		})
	}
	if got := s.Authentications(cid); got != (affixtest.Auths{Accepted: 4, Refused: 4}) {
		t.Fatalf("Authentications(%q) = %+v, want 4 accepted, 4 refused (400s and 405s are not authentications)", cid, got)
	}
	if got := s.Authentications("cid-other"); got != (affixtest.Auths{Refused: 1}) {
		t.Fatalf("an unknown client's refusals: %+v", got)
	}
	if len(s.Requests()) != 0 {
		t.Fatalf("token requests are listed in Requests: %d", len(s.Requests()))
	}
}

// TestTokenFollowsRotation: the stand-in accepts exactly what the client
// accepts now, as the rotator moves it: [S0] → [S1, S0] → [S1].
func TestTokenFollowsRotation(t *testing.T) {
	s := affixtest.NewServer()
	defer s.Close()
	s.AddClient(key, cid, "S0-secret")
	auth := func(secret string) int {
		return do(t, "POST", s.URL+affixtest.TokenPath, hdr(form, basic(cid, secret)), ccGrant).status
	}
	update := func(secrets string) {
		if a := do(t, "POST", s.URL+affixtest.Path, hdr("application/json", key), `{"client_secret":`+secrets+`}`); a.status != 200 {
			t.Fatalf("update %s: %d", secrets, a.status)
		}
	}
	check := func(phase string, want map[string]int) {
		t.Helper()
		for secret, status := range want {
			if got := auth(secret); got != status {
				t.Fatalf("%s: %s answered %d, want %d", phase, affixtest.Fingerprint(secret), got, status)
			}
		}
	}
	check("stable", map[string]int{"S0-secret": 200, "S1-secret": 401})
	update(`["S1-secret","S0-secret"]`)
	check("overlap", map[string]int{"S0-secret": 200, "S1-secret": 200})
	update(`["S1-secret"]`)
	check("dropped", map[string]int{"S0-secret": 401, "S1-secret": 200})
	if got := s.Authentications(cid); got != (affixtest.Auths{Accepted: 4, Refused: 2}) {
		t.Fatalf("counts %+v", got)
	}
}

// TestTokenIgnoresFaultsAndLimit: consumers' token requests neither consume
// the faults queued for the rotator's requests nor count against the rate
// limit.
func TestTokenIgnoresFaultsAndLimit(t *testing.T) {
	s := affixtest.NewServer()
	defer s.Close()
	s.AddClient(key, cid, sec)
	s.Inject(affixtest.Fault{Status: 500})
	s.SetRateLimit(0.001, 1)
	for range 3 {
		if a := do(t, "POST", s.URL+affixtest.TokenPath, hdr(form, basic(cid, sec)), ccGrant); a.status != 200 {
			t.Fatalf("token: %d", a.status)
		}
	}
	if s.Pending() != 1 || s.RateLimited() != 0 {
		t.Fatalf("pending faults %d, rate limited %d", s.Pending(), s.RateLimited())
	}
}

// TestTokenOnMux: the process mode's Mux serves the stand-in too (its path
// is under the admin prefix), and /_affixtest/state shows the counts.
func TestTokenOnMux(t *testing.T) {
	s := affixtest.NewHandler()
	s.AddClient(key, cid, sec)
	srv := httptest.NewServer(s.Mux(key))
	defer srv.Close()
	if a := do(t, "POST", srv.URL+affixtest.TokenPath, hdr(form, basic(cid, sec)), ccGrant); a.status != 200 {
		t.Fatalf("token on Mux: %d %s", a.status, a.raw)
	}
	if a := do(t, "POST", srv.URL+affixtest.TokenPath, hdr(form, basic(cid, "wrong")), ccGrant); a.status != http.StatusUnauthorized {
		t.Fatalf("wrong secret on Mux: %d", a.status)
	}
	if st := s.State(key); st.Authentications != (affixtest.Auths{Accepted: 1, Refused: 1}) {
		t.Fatalf("state authentications %+v", st.Authentications)
	}
	a := do(t, "GET", srv.URL+affixtest.AdminPrefix+"state", nil, "")
	if auths, _ := a.body["authentications"].(map[string]any); auths["accepted"] != 1.0 || auths["refused"] != 1.0 {
		t.Fatalf("GET state: %s", a.raw)
	}
}
