package affix_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

const (
	key      = "affix-api-key-VERYSECRET"
	clientID = "00000000-00000000-00000000-00000000"
	s0       = "aaaaaaaa-aaaaaaaa-aaaaaaaa-aaaaaaaa"
	s1       = "ffffffff-ffffffff-ffffffff-ffffffff"
	s2       = "cccccccc-cccccccc-cccccccc-cccccccc"
)

// forbidden is every string no error may show: the API key, the secrets,
// recognisable pieces of them, and the 409's credentials.
var forbidden = []string{key, "VERYSECRET", s0, s1, s2, "aaaaaaaa", "ffffffff", "cccccccc",
	affixtest.InjectedConflictToken, affixtest.InjectedConflictCode, "injected-access-token"}

func setup(t *testing.T, opts ...affix.Option) (*affixtest.Server, *affix.Client) {
	t.Helper()
	fake := affixtest.NewServer()
	t.Cleanup(fake.Close)
	fake.AddClient(key, clientID, s0)
	c, err := affix.New(fake.URL, secret.New(key), append([]affix.Option{affix.WithTimeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return fake, c
}

func secrets(ss ...string) []secret.Value {
	var out []secret.Value
	for _, s := range ss {
		out = append(out, secret.New(s))
	}
	return out
}

func rotate() affix.UpdateRequest { return affix.UpdateRequest{ClientSecret: secrets(s1, s0)} }

// noLeak fails if err, however printed, shows the API key, a secret or a
// 409 credential.
func noLeak(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	for _, text := range []string{err.Error(), fmt.Sprint(err), fmt.Sprintf("%v|%+v|%#v|%s|%q", err, err, err, err, err)} {
		for _, s := range forbidden {
			if strings.Contains(text, s) {
				t.Fatalf("error leaks %q: %s", s, text)
			}
		}
	}
}

func lastRequest(t *testing.T, fake *affixtest.Server) affixtest.Request {
	t.Helper()
	reqs := fake.Requests()
	if len(reqs) == 0 {
		t.Fatal("no request reached the fake")
	}
	return reqs[len(reqs)-1]
}

func TestUpdateSuccessExactRequest(t *testing.T) {
	name, html := "Your App", "<App & Co>"
	hook := "https://webhooks.your-company.com/x"
	for _, tc := range []struct {
		name     string
		req      affix.UpdateRequest
		body     string
		wantHook *string
		wantName string
	}{
		{"secrets only", affix.UpdateRequest{ClientSecret: secrets(s1, s0)},
			`{"client_secret":["` + s1 + `","` + s0 + `"]}`, nil, ""},
		{"one secret", affix.UpdateRequest{ClientSecret: secrets(s1)},
			`{"client_secret":["` + s1 + `"]}`, nil, ""},
		{"all fields", affix.UpdateRequest{ClientSecret: secrets(s1), Name: &name, RedirectURIs: []string{"https://app.your-company.com", "https://dev.app.your-company.com"}, WebhookURI: affix.Nullable{Set: true, Value: hook}},
			`{"client_secret":["` + s1 + `"],"name":"Your App","redirect_uris":["https://app.your-company.com","https://dev.app.your-company.com"],"webhook_uri":"` + hook + `"}`, &hook, name},
		{"webhook null", affix.UpdateRequest{ClientSecret: secrets(s1), WebhookURI: affix.Nullable{Set: true, Null: true}},
			`{"client_secret":["` + s1 + `"],"webhook_uri":null}`, nil, ""},
		{"webhook null wins over value", affix.UpdateRequest{ClientSecret: secrets(s1), WebhookURI: affix.Nullable{Set: true, Null: true, Value: hook}},
			`{"client_secret":["` + s1 + `"],"webhook_uri":null}`, nil, ""},
		{"webhook value not set is omitted", affix.UpdateRequest{ClientSecret: secrets(s1), WebhookURI: affix.Nullable{Value: hook}},
			`{"client_secret":["` + s1 + `"]}`, nil, ""},
		{"empty name and empty redirect list are sent", affix.UpdateRequest{ClientSecret: secrets(s1), Name: new(string), RedirectURIs: []string{}},
			`{"client_secret":["` + s1 + `"],"name":"","redirect_uris":[]}`, nil, ""},
		{"no HTML escaping", affix.UpdateRequest{ClientSecret: secrets(s1), Name: &html},
			`{"client_secret":["` + s1 + `"],"name":"<App & Co>"}`, nil, html},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, c := setup(t, affix.WithUserAgent("rotator-test/1"))
			resp, err := c.UpdateClient(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			last := lastRequest(t, fake)
			if string(last.Body) != tc.body {
				t.Fatalf("body\n got  %s\n want %s", last.Body, tc.body)
			}
			h := last.Header
			if last.Method != http.MethodPost || last.Path != affix.Path || h.Get("Authorization") != key || len(h.Values("Authorization")) != 1 ||
				h.Get("Content-Type") != "application/json" || h.Get("Accept") != "application/json" || h.Get("User-Agent") != "rotator-test/1" {
				t.Fatalf("request %s %s auth-ok=%v ct=%q accept=%q ua=%q", last.Method, last.Path, h.Get("Authorization") == key, h.Get("Content-Type"), h.Get("Accept"), h.Get("User-Agent"))
			}
			if last.Status != 200 || !last.Applied {
				t.Fatalf("fake answered %d applied=%v", last.Status, last.Applied)
			}
			if resp.ClientID != clientID || len(resp.ClientSecret) != len(tc.req.ClientSecret) || resp.Name != tc.wantName {
				t.Fatalf("response %+v", resp)
			}
			for i := range resp.ClientSecret {
				if !resp.ClientSecret[i].Equal(tc.req.ClientSecret[i]) {
					t.Fatalf("secret %d not echoed in order", i)
				}
			}
			if (resp.WebhookURI == nil) != (tc.wantHook == nil) || (resp.WebhookURI != nil && *resp.WebhookURI != *tc.wantHook) {
				t.Fatalf("webhook_uri %v, want %v", resp.WebhookURI, tc.wantHook)
			}
			if got := fake.Secrets(key); len(got) != len(tc.req.ClientSecret) || got[0] != tc.req.ClientSecret[0].Reveal() {
				t.Fatalf("fake accepts %d secrets", len(got))
			}
		})
	}
}

func TestDefaultUserAgentAndBasePath(t *testing.T) {
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		fmt.Fprintf(w, `{"client_id":"x","client_secret":[%q]}`, s1)
	}))
	defer srv.Close()
	for _, base := range []string{srv.URL, srv.URL + "/", srv.URL + "/prefix", srv.URL + "/prefix/"} {
		c, err := affix.New(base, secret.New(key))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1)}); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimPrefix(strings.TrimRight(base, "/"), srv.URL) + affix.Path
		if got.URL.Path != want || got.UserAgent() != affix.DefaultUserAgent {
			t.Fatalf("base %q: path %q ua %q, want %q", base, got.URL.Path, got.UserAgent(), want)
		}
	}
}

func TestDocumentedErrors(t *testing.T) {
	for _, tc := range []struct {
		fault            affixtest.Fault
		status           int
		definite, transi bool
		want             affix.APIError
		contains         string
	}{
		{affixtest.Fault{Status: 400}, 400, true, false,
			affix.APIError{Message: "Bad Request", ValidationError: "injected validation error"}, "validation_error: injected validation error"},
		{affixtest.Fault{Status: 401}, 401, true, false,
			affix.APIError{Message: "Your password is incorrect", ErrorType: "authentication_error", Code: "incorrect_username_or_password"}, "code: incorrect_username_or_password"},
		{affixtest.Fault{Status: 409}, 409, false, true,
			affix.APIError{ErrorType: "conflict"}, "error: conflict"},
		{affixtest.Fault{Status: 429, RetryAfter: "42"}, 429, false, true,
			affix.APIError{Message: "Too Many Requests", RetryAfter: 42 * time.Second, HasRetryAfter: true}, "retry after 42s"},
		{affixtest.Fault{Status: 429}, 429, false, true,
			affix.APIError{Message: "Too Many Requests", RetryAfter: time.Second, HasRetryAfter: true}, "retry after 1s"},
		{affixtest.Fault{Status: 500}, 500, false, true,
			affix.APIError{Message: "Internal Server Error"}, "message: Internal Server Error"},
		{affixtest.Fault{Status: 503, RetryAfter: "3"}, 503, false, true,
			affix.APIError{Message: "Service Unavailable", RetryAfter: 3 * time.Second, HasRetryAfter: true}, "503 Service Unavailable"},
		{affixtest.Fault{Status: 403}, 403, true, false, affix.APIError{Message: "Forbidden"}, "403"},
		{affixtest.Fault{Status: 404}, 404, true, false, affix.APIError{Message: "Not Found"}, "404"},
		{affixtest.Fault{Status: 422}, 422, true, false, affix.APIError{Message: "Unprocessable Entity"}, "422"},
		{affixtest.Fault{Status: 408}, 408, false, true, affix.APIError{Message: "Request Timeout"}, "408"},
		{affixtest.Fault{Status: 425}, 425, false, true, affix.APIError{Message: "Too Early"}, "425"},
		{affixtest.Fault{Status: 418}, 418, false, false, affix.APIError{Message: "I'm a teapot"}, "418"},
	} {
		t.Run(fmt.Sprint(tc.status, tc.fault.RetryAfter), func(t *testing.T) {
			fake, c := setup(t)
			fake.Inject(tc.fault)
			resp, err := c.UpdateClient(context.Background(), rotate())
			var ae *affix.APIError
			if !errors.As(err, &ae) || resp != nil {
				t.Fatalf("got %v, %v", resp, err)
			}
			want := tc.want
			want.StatusCode = tc.status
			if *ae != want {
				t.Fatalf("decoded\n got  %+v\n want %+v", *ae, want)
			}
			if affix.Definite(err) != tc.definite || affix.Transient(err) != tc.transi || affix.StatusLabel(err) != fmt.Sprint(tc.status) {
				t.Fatalf("definite=%v transient=%v label=%s", affix.Definite(err), affix.Transient(err), affix.StatusLabel(err))
			}
			if d, ok := affix.RetryAfter(err); ok != tc.want.HasRetryAfter || d != tc.want.RetryAfter {
				t.Fatalf("RetryAfter = %v %v", d, ok)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("%q lacks %q", err, tc.contains)
			}
			noLeak(t, err)
			if !fake.Accepts(key, s0) || fake.Accepts(key, s1) {
				t.Fatal("a rejected request changed the accepted set")
			}
		})
	}
}

// rawServer answers every request with handler, to play a hostile or odd
// server the fake does not model.
func rawServer(t *testing.T, handler func(w http.ResponseWriter, r *http.Request)) *affix.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(handler))
	t.Cleanup(srv.Close)
	c, err := affix.New(srv.URL, secret.New(key), affix.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOddErrorBodies(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	for _, tc := range []struct {
		name   string
		status int
		body   string
		check  func(*affix.APIError) bool
	}{
		{"empty 500", 500, "", func(e *affix.APIError) bool { return e.Message == "" }},
		{"html 502", 502, "<html>\n<body>Bad gateway</body></html>", func(e *affix.APIError) bool {
			return strings.Contains(e.Message, "Bad gateway") && !strings.Contains(e.Message, "\n")
		}},
		{"huge 500", 500, huge, func(e *affix.APIError) bool { return len(e.Message) <= 256 && strings.HasPrefix(e.Message, "xxxx") }},
		{"huge json message", 400, `{"message":"` + strings.Repeat("é", 1000) + `","validation_error":"v"}`, func(e *affix.APIError) bool {
			return len(e.Message) <= 256 && utf8.ValidString(e.Message) && e.ValidationError == "v"
		}},
		{"non-string fields", 401, `{"error":{"x":1},"message":["m"],"code":7}`, func(e *affix.APIError) bool {
			return e.ErrorType == "" && e.Message == "" && e.Code == ""
		}},
		{"409 non-json keeps nothing", 409, "token=" + affixtest.InjectedConflictToken, func(e *affix.APIError) bool { return e.Message == "" }},
		{"409 code and token dropped", 409, `{"code":"` + affixtest.InjectedConflictCode + `","token":"` + affixtest.InjectedConflictToken + `","error":"conflict"}`, func(e *affix.APIError) bool {
			return e.Code == "" && e.ErrorType == "conflict"
		}},
		{"json null", 500, "null", func(e *affix.APIError) bool { return e.Message == "null" }},
		{"redirect not followed", 307, "", func(e *affix.APIError) bool { return e.StatusCode == 307 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n int
			var mu sync.Mutex
			c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				n++
				mu.Unlock()
				if tc.status == 307 {
					http.Redirect(w, r, "/elsewhere", 307)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			})
			_, err := c.UpdateClient(context.Background(), rotate())
			var ae *affix.APIError
			if !errors.As(err, &ae) || ae.StatusCode != tc.status || !tc.check(ae) {
				t.Fatalf("got %#v", err)
			}
			if n != 1 {
				t.Fatalf("%d requests (a redirect was followed?)", n)
			}
			noLeak(t, err)
		})
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		header   string
		ok       bool
		min, max time.Duration
		note     string
	}{
		{"7", true, 7 * time.Second, 7 * time.Second, ""},
		{" 7 ", true, 7 * time.Second, 7 * time.Second, ""},
		{"0", true, 0, 0, ""},
		{now.Add(90 * time.Second).UTC().Format(http.TimeFormat), true, 85 * time.Second, 91 * time.Second, ""},
		{now.Add(-time.Hour).UTC().Format(http.TimeFormat), true, 0, 0, ""},
		{now.Add(48 * time.Hour).UTC().Format(time.RFC850), true, affix.MaxRetryAfter, affix.MaxRetryAfter, "capped"},
		{"-5", false, 0, 0, "negative"},
		{"3600", true, time.Hour, time.Hour, ""},
		{"3601", true, affix.MaxRetryAfter, affix.MaxRetryAfter, "capped"},
		{"99999999", true, affix.MaxRetryAfter, affix.MaxRetryAfter, "capped"},
		{"99999999999999999999999999", true, affix.MaxRetryAfter, affix.MaxRetryAfter, "capped"},
		{"soon", false, 0, 0, "unparsable"},
		{"1.5", false, 0, 0, "unparsable"},
		{"+5", false, 0, 0, "unparsable"},
		{"5s", false, 0, 0, "unparsable"},
		{s1, false, 0, 0, "unparsable"},
	} {
		t.Run(tc.header, func(t *testing.T) {
			fake, c := setup(t)
			fake.Inject(affixtest.Fault{Status: 429, RetryAfter: tc.header})
			_, err := c.UpdateClient(context.Background(), rotate())
			d, ok := affix.RetryAfter(err)
			var ae *affix.APIError
			if !errors.As(err, &ae) {
				t.Fatal(err)
			}
			if ok != tc.ok || ae.HasRetryAfter != tc.ok || d < tc.min || d > tc.max || !strings.Contains(ae.RetryAfterNote, tc.note) || (tc.note == "") != (ae.RetryAfterNote == "") {
				t.Fatalf("Retry-After %q: %v %v note %q", tc.header, d, ok, ae.RetryAfterNote)
			}
			if !affix.Transient(err) {
				t.Fatal("429 not transient")
			}
			noLeak(t, err)
		})
	}
	t.Run("absent", func(t *testing.T) {
		fake, c := setup(t)
		fake.Inject(affixtest.Fault{Status: 500})
		_, err := c.UpdateClient(context.Background(), rotate())
		if _, ok := affix.RetryAfter(err); ok {
			t.Fatal("500 without Retry-After has one")
		}
	})
}

func TestMismatch(t *testing.T) {
	for _, tc := range []struct {
		name                               string
		echo                               []string
		applyEcho                          bool
		included                           []int
		missing, unexpected, duplicates, n int
	}{
		{"only the old one", []string{s0}, true, []int{1}, 1, 0, 0, 1},
		{"only the new one", []string{s1}, false, []int{0}, 1, 0, 0, 1},
		{"an extra one", []string{s1, s0, s2}, false, []int{0, 1}, 0, 1, 0, 3},
		{"a stranger", []string{s2}, true, nil, 2, 1, 0, 1},
		{"duplicates", []string{s1, s1, s0}, false, []int{0, 1}, 0, 0, 1, 3},
		{"duplicates hiding a missing one", []string{s1, s1}, false, []int{0}, 1, 0, 1, 2},
		{"empty", []string{}, false, nil, 2, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, c := setup(t)
			fake.Inject(affixtest.Fault{Echo: tc.echo, ApplyEcho: tc.applyEcho})
			resp, err := c.UpdateClient(context.Background(), rotate())
			var mm *affix.MismatchError
			if !errors.As(err, &mm) || resp == nil || len(resp.ClientSecret) != len(tc.echo) {
				t.Fatalf("got %v, %v", resp, err)
			}
			if fmt.Sprint(mm.Included) != fmt.Sprint(tc.included) || mm.MissingSent != tc.missing || mm.Unexpected != tc.unexpected ||
				mm.Duplicates != tc.duplicates || mm.Sent != 2 || mm.Got != tc.n {
				t.Fatalf("mismatch %+v", mm)
			}
			for i := -1; i <= 3; i++ {
				want := false
				for _, j := range tc.included {
					want = want || i == j
				}
				if mm.Contains(i) != want {
					t.Fatalf("Contains(%d) = %v", i, !want)
				}
			}
			if affix.Definite(err) || affix.Transient(err) || affix.StatusLabel(err) != "200" {
				t.Fatalf("mismatch classified definite=%v transient=%v label=%s", affix.Definite(err), affix.Transient(err), affix.StatusLabel(err))
			}
			if _, ok := affix.RetryAfter(err); ok {
				t.Fatal("mismatch has a Retry-After")
			}
			noLeak(t, err)
		})
	}
	t.Run("order does not matter", func(t *testing.T) {
		fake, c := setup(t)
		fake.Inject(affixtest.Fault{Echo: []string{s0, s1}})
		if _, err := c.UpdateClient(context.Background(), rotate()); err != nil {
			t.Fatalf("reordered set: %v", err)
		}
	})
}

func TestHostileResponses(t *testing.T) {
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	deepObj := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	for _, tc := range []struct{ name, body string }{
		{"not json", "<html>hello</html>"},
		{"empty", ""},
		{"null", "null"},
		{"array", `["` + s1 + `"]`},
		{"string", `"` + s1 + `"`},
		{"wrong type", `{"client_secret": "` + s1 + `"}`},
		{"numbers", `{"client_secret": [1, 2]}`},
		{"null member", `{"client_secret": ["` + s1 + `", null]}`},
		{"object member", `{"client_secret": [{"v":"` + s1 + `"}]}`},
		{"null list", `{"client_secret": null}`},
		{"no secret", `{"client_id": "x"}`},
		{"wrong-case key", `{"CLIENT_SECRET": ["` + s1 + `"]}`},
		{"client_id number", `{"client_id": 5, "client_secret": ["` + s1 + `"]}`},
		{"name object", `{"name": {}, "client_secret": ["` + s1 + `"]}`},
		{"redirect_uris string", `{"redirect_uris": "x", "client_secret": ["` + s1 + `"]}`},
		{"redirect_uris null member", `{"redirect_uris": [null], "client_secret": ["` + s1 + `"]}`},
		{"webhook number", `{"webhook_uri": 1, "client_secret": ["` + s1 + `"]}`},
		{"2 MiB", `{"client_secret": ["` + strings.Repeat("x", 2<<20) + `"]}`},
		{"2 MiB of whitespace after a valid body", `{"client_secret": ["` + s1 + `"]}` + strings.Repeat(" ", 2<<20)},
		{"deeply nested array", `{"client_secret": ` + deep + `}`},
		{"deeply nested object", `{"x": ` + deepObj + `, "client_secret": ["` + s1 + `"]}`},
		{"trailing", `{"client_secret": ["` + s1 + `"]} {"more": 1}`},
		{"truncated", `{"client_secret": ["` + s1},
		{"echoes secret and key", `{"client_secret": "` + s1 + key + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, c := setup(t)
			fake.Inject(affixtest.Fault{Body: []byte(tc.body)})
			resp, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1)})
			var re *affix.ResponseError
			if !errors.As(err, &re) || resp != nil {
				t.Fatalf("got %v, %v", resp, err)
			}
			if !affix.Transient(err) || affix.Definite(err) || affix.StatusLabel(err) != "200" {
				t.Fatalf("transient=%v definite=%v label=%s", affix.Transient(err), affix.Definite(err), affix.StatusLabel(err))
			}
			if !fake.Accepts(key, s1) {
				t.Fatal("the fake should have applied the update (outcome unknown to the client)")
			}
			noLeak(t, err)
		})
	}
	t.Run("extra keys tolerated", func(t *testing.T) {
		fake, c := setup(t)
		fake.Inject(affixtest.Fault{Body: []byte(`{"client_secret":["` + s1 + `"],"created_at":"2024","name":null,"webhook_uri":null,"redirect_uris":null}`)})
		resp, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1)})
		if err != nil || resp.Name != "" || resp.WebhookURI != nil || resp.RedirectURIs != nil {
			t.Fatalf("%+v %v", resp, err)
		}
	})
}

func TestTransportFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fault   affixtest.Fault
		applied bool
		timeout bool
	}{
		{"drop", affixtest.Fault{Drop: true}, false, false},
		{"apply then drop", affixtest.Fault{ApplyThenDrop: true}, true, false},
		{"own timeout", affixtest.Fault{Delay: 3 * time.Second}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, c := setup(t, affix.WithTimeout(300*time.Millisecond))
			fake.Inject(tc.fault)
			start := time.Now()
			resp, err := c.UpdateClient(context.Background(), rotate())
			var te *affix.TransportError
			if !errors.As(err, &te) || resp != nil {
				t.Fatalf("got %v, %v", resp, err)
			}
			if !affix.Transient(err) || affix.Definite(err) || affix.StatusLabel(err) != "error" || te.CallerCanceled() || te.Timeout() != tc.timeout {
				t.Fatalf("transient=%v definite=%v label=%s caller=%v timeout=%v: %v", affix.Transient(err), affix.Definite(err), affix.StatusLabel(err), te.CallerCanceled(), te.Timeout(), err)
			}
			if tc.timeout && time.Since(start) > 2*time.Second {
				t.Fatalf("timeout took %s", time.Since(start))
			}
			noLeak(t, err)
			if fake.Accepts(key, s1) != tc.applied {
				t.Fatalf("applied = %v, want %v", fake.Accepts(key, s1), tc.applied)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		c, _ := affix.New("http://"+addr, secret.New(key))
		_, err = c.UpdateClient(context.Background(), rotate())
		var te *affix.TransportError
		if !errors.As(err, &te) || !affix.Transient(err) {
			t.Fatalf("got %v", err)
		}
		noLeak(t, err)
	})
	t.Run("body cut short", func(t *testing.T) {
		c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(200)
			_, _ = w.Write([]byte(`{"client_secret":["` + s1))
			panic(http.ErrAbortHandler)
		})
		_, err := c.UpdateClient(context.Background(), rotate())
		var te *affix.TransportError
		if !errors.As(err, &te) || !affix.Transient(err) {
			t.Fatalf("got %v", err)
		}
		noLeak(t, err)
	})
}

func TestCallerEndsTheContext(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		is   error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"caller's deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, c := setup(t, affix.WithTimeout(5*time.Second))
			fake.Inject(affixtest.Fault{Delay: 3 * time.Second})
			ctx, cancel := tc.ctx()
			defer cancel()
			_, err := c.UpdateClient(ctx, rotate())
			var te *affix.TransportError
			if !errors.As(err, &te) || !te.CallerCanceled() || affix.Transient(err) || affix.Definite(err) || !errors.Is(err, tc.is) {
				t.Fatalf("got %v (caller=%v transient=%v)", err, te != nil && te.CallerCanceled(), affix.Transient(err))
			}
			noLeak(t, err)
		})
	}
}

// TestServerEchoingSecretsIsRedacted: whatever an untrusted server sends
// back (message, validation_error, error, code, a raw body, a header, a
// broken status line) never brings the key or a secret into an error.
func TestServerEchoingSecretsIsRedacted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request, body []byte)
	}{
		{"json fields", func(w http.ResponseWriter, r *http.Request, body []byte) {
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"message": "bad secret %s for key %s", "validation_error": "line1\nline2 %s", "error": %q, "code": %q}`, s1, r.Header.Get("Authorization"), s0, key, s0)
		}},
		{"raw body echoes request", func(w http.ResponseWriter, r *http.Request, body []byte) {
			w.WriteHeader(500)
			_, _ = w.Write(append(append(body, r.Header.Get("Authorization")...), "\x1b[31m"...))
		}},
		{"secret at the cut", func(w http.ResponseWriter, r *http.Request, body []byte) {
			w.WriteHeader(500)
			fmt.Fprintf(w, `{"message": "%s%s"}`, strings.Repeat("y", 240), s1)
		}},
		{"retry-after header", func(w http.ResponseWriter, r *http.Request, body []byte) {
			w.Header().Set("Retry-After", s1+" "+key)
			w.WriteHeader(429)
		}},
		{"broken status line", func(w http.ResponseWriter, r *http.Request, body []byte) {
			conn, buf, _ := w.(http.Hijacker).Hijack()
			defer conn.Close()
			fmt.Fprintf(buf, "HTTP/1.1 %s %s\r\n\r\n", s1, r.Header.Get("Authorization"))
			_ = buf.Flush()
		}},
		{"broken header", func(w http.ResponseWriter, r *http.Request, body []byte) {
			conn, buf, _ := w.(http.Hijacker).Hijack()
			defer conn.Close()
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\n%s: %s\r\nbroken %s\r\n\r\n", s0, key, s1)
			_ = buf.Flush()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
				body := make([]byte, 4096)
				n, _ := bufio.NewReader(r.Body).Read(body)
				tc.handler(w, r, body[:n])
			})
			_, err := c.UpdateClient(context.Background(), rotate())
			noLeak(t, err)
			if !strings.Contains(err.Error(), secret.Redacted) {
				t.Fatalf("nothing marked redacted in %q", err)
			}
			if strings.ContainsAny(err.Error(), "\n\r\x1b") {
				t.Fatalf("control characters in %q", err)
			}
			var ae *affix.APIError
			if errors.As(err, &ae) {
				for _, s := range []string{ae.Message, ae.ValidationError, ae.ErrorType, ae.Code} {
					if len(s) > 256 || !utf8.ValidString(s) {
						t.Fatalf("server string not bounded: %d bytes", len(s))
					}
				}
			}
		})
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name, url, key string
		opts           []affix.Option
		ok             bool
	}{
		{"plain", "https://api.affixapi.com", key, nil, true},
		{"trailing slash", "https://api.affixapi.com/", key, nil, true},
		{"path prefix", "http://127.0.0.1:8080/affix/", key, nil, true},
		{"nil option and nil client", "https://api.affixapi.com", key, []affix.Option{nil, affix.WithHTTPClient(nil)}, true},
		{"ftp", "ftp://x", key, nil, false},
		{"no host", "http://", key, nil, false},
		{"relative", "/v1", key, nil, false},
		{"opaque", "http:api.affixapi.com", key, nil, false},
		{"query", "https://api.affixapi.com?x=1", key, nil, false},
		{"empty query", "https://api.affixapi.com?", key, nil, false},
		{"fragment", "https://api.affixapi.com#x", key, nil, false},
		{"credentials", "https://u:" + key + "@api.affixapi.com", key, nil, false},
		{"unparsable", "https://api.affix\x7fapi.com/" + key, key, nil, false},
		{"empty key", "https://api.affixapi.com", "", nil, false},
		{"key with newline", "https://api.affixapi.com", key + "\nX-Evil: 1", nil, false},
		{"key with CR", "https://api.affixapi.com", key + "\r", nil, false},
		{"key with tab", "https://api.affixapi.com", key + "\t", nil, false},
		{"key with NUL", "https://api.affixapi.com", key + "\x00", nil, false},
		{"key with DEL", "https://api.affixapi.com", key + "\x7f", nil, false},
		{"key with leading space", "https://api.affixapi.com", " " + key, nil, false},
		{"key with trailing space", "https://api.affixapi.com", key + " ", nil, false},
		{"key with inner space", "https://api.affixapi.com", "Token " + key, nil, true},
		{"key not UTF-8", "https://api.affixapi.com", key + "\xff", nil, false},
		{"zero timeout", "https://api.affixapi.com", key, []affix.Option{affix.WithTimeout(0)}, false},
		{"negative timeout", "https://api.affixapi.com", key, []affix.Option{affix.WithTimeout(-time.Second)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := affix.New(tc.url, secret.New(tc.key), tc.opts...)
			if (err == nil) != tc.ok || (c == nil) == tc.ok {
				t.Fatalf("New(%q) = %v, %v", tc.url, c, err)
			}
			if err != nil {
				noLeak(t, err)
				if strings.Contains(err.Error(), "u:") || strings.Contains(err.Error(), "X-Evil") {
					t.Fatalf("error shows input: %v", err)
				}
			}
		})
	}
}

func TestWithHTTPClientIsCopiedAndNeverRedirects(t *testing.T) {
	var hits int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		http.Redirect(w, r, "http://example.invalid/steal", http.StatusPermanentRedirect)
	}))
	defer srv.Close()
	follow := func(*http.Request, []*http.Request) error { return nil }
	h := &http.Client{CheckRedirect: follow}
	c, err := affix.New(srv.URL, secret.New(key), affix.WithHTTPClient(h))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.UpdateClient(context.Background(), rotate())
	var ae *affix.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 308 || hits != 1 || affix.Definite(err) || affix.Transient(err) {
		t.Fatalf("got %v after %d requests", err, hits)
	}
	if h.CheckRedirect == nil {
		t.Fatal("the caller's http.Client was modified")
	}
}

func TestInvalidRequestsAreNotSent(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  affix.UpdateRequest
	}{
		{"no secret", affix.UpdateRequest{}},
		{"empty list", affix.UpdateRequest{ClientSecret: []secret.Value{}}},
		{"empty secret", affix.UpdateRequest{ClientSecret: []secret.Value{secret.New(s1), {}}}},
		{"duplicate", affix.UpdateRequest{ClientSecret: secrets(s1, s0, s1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, c := setup(t)
			_, err := c.UpdateClient(context.Background(), tc.req)
			if !errors.Is(err, affix.ErrInvalidRequest) || affix.Transient(err) || affix.Definite(err) || affix.StatusLabel(err) != "error" {
				t.Fatalf("got %v", err)
			}
			noLeak(t, err)
			if n := len(fake.Requests()); n != 0 {
				t.Fatalf("%d requests sent", n)
			}
		})
	}
}

func TestClassifiersOnOtherErrors(t *testing.T) {
	for _, err := range []error{nil, errors.New("x"), context.Canceled} {
		if affix.Definite(err) || affix.Transient(err) {
			t.Fatalf("%v classified", err)
		}
		if _, ok := affix.RetryAfter(err); ok {
			t.Fatalf("%v has a Retry-After", err)
		}
	}
	if affix.StatusLabel(nil) != "200" || affix.StatusLabel(errors.New("x")) != "error" {
		t.Fatal("StatusLabel")
	}
	wrapped := fmt.Errorf("step: %w", &affix.APIError{StatusCode: 401})
	if !affix.Definite(wrapped) || affix.StatusLabel(wrapped) != "401" {
		t.Fatal("wrapped APIError not seen")
	}
}

// TestNoErrorLeaks drives every error path and checks that no printing of
// the error shows the API key, a secret or a 409 credential.
func TestNoErrorLeaks(t *testing.T) {
	var errs []error
	add := func(err error) {
		if err == nil {
			t.Fatal("expected an error")
		}
		errs = append(errs, err)
	}
	faults := []affixtest.Fault{
		{Status: 400}, {Status: 401}, {Status: 403}, {Status: 404}, {Status: 409}, {Status: 422},
		{Status: 429, RetryAfter: s1}, {Status: 429, RetryAfter: "-1"}, {Status: 429, RetryAfter: "99999999"},
		{Status: 500}, {Status: 502}, {Status: 503, RetryAfter: "x"},
		{Drop: true}, {ApplyThenDrop: true}, {Delay: time.Second},
		{Echo: []string{s0}}, {Echo: []string{s2}}, {Echo: []string{s1, s1}}, {Echo: []string{s1, s0, s2}, ApplyEcho: true},
		{Body: []byte(`{"client_secret":"` + s1 + `"}`)}, {Body: []byte(key)}, {Body: []byte(strings.Repeat(s1, 40000))},
	}
	fake, c := setup(t, affix.WithTimeout(200*time.Millisecond))
	for _, f := range faults {
		fake.AddClient(key, clientID, s0)
		fake.Inject(f)
		_, err := c.UpdateClient(context.Background(), rotate())
		add(err)
	}
	// The caller's cancellation.
	fake.Inject(affixtest.Fault{Delay: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := c.UpdateClient(ctx, rotate())
	cancel()
	add(err)
	// Wrong API key: a genuine 401 from the fake.
	other, _ := affix.New(fake.URL, secret.New(key+"-other"))
	_, err = other.UpdateClient(context.Background(), rotate())
	add(err)
	// Refused before sending.
	_, err = c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1, s1)})
	add(err)
	// New.
	_, err = affix.New("https://x:"+key+"@h", secret.New(key))
	add(err)
	_, err = affix.New("https://h", secret.New(key+"\n"))
	add(err)
	// A hostile server echoing everything everywhere.
	hostile := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		var in map[string][]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		all := strings.Join(in["client_secret"], ",") + r.Header.Get("Authorization")
		w.Header().Set("Retry-After", all)
		w.WriteHeader(429)
		fmt.Fprintf(w, `{"message":%q,"validation_error":%q,"error":%q,"code":%q,"token":%q}`, all, all, all, all, all)
	})
	_, err = hostile.UpdateClient(context.Background(), rotate())
	add(err)
	for _, err := range errs {
		noLeak(t, err)
		if u := errors.Unwrap(err); u != nil {
			// Causes are wrapped for errors.Is; the sanitized text is the
			// error's own. Still, none of ours puts a secret there.
			var ae *affix.APIError
			if !errors.As(err, &ae) {
				for _, s := range []string{key, s0, s1} {
					if strings.Contains(u.Error(), s) {
						t.Fatalf("cause of %v leaks", err)
					}
				}
			}
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	fake, c := setup(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := fmt.Sprintf("%08x-aaaaaaaa-aaaaaaaa-aaaaaaaa", i)
			if _, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s, s0)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := len(fake.Requests()); n != 20 {
		t.Fatalf("%d requests", n)
	}
}
