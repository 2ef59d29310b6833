package affix_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

const (
	key = "affix-api-key-VERYSECRET"
	s0  = "aaaaaaaa-aaaaaaaa-aaaaaaaa-aaaaaaaa"
	s1  = "ffffffff-ffffffff-ffffffff-ffffffff"
)

func setup(t *testing.T) (*affixtest.Server, *affix.Client) {
	t.Helper()
	fake := affixtest.NewServer()
	t.Cleanup(fake.Close)
	fake.AddClient(key, "00000000-00000000-00000000-00000000", s0)
	c, err := affix.New(fake.URL, secret.New(key), affix.WithTimeout(2*time.Second))
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

// noLeak fails if err's text shows the API key or a secret.
func noLeak(t *testing.T, err error) {
	t.Helper()
	for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, s := range []string{key, s0, s1, "ffffffff", "aaaaaaaa"} {
			if strings.Contains(text, s) {
				t.Fatalf("error leaks %q: %s", s, text)
			}
		}
	}
}

func TestUpdateSuccessExactBody(t *testing.T) {
	fake, c := setup(t)
	name := "Your App"
	for _, tc := range []struct {
		name string
		req  affix.UpdateRequest
		body string
	}{
		{"secrets only", affix.UpdateRequest{ClientSecret: secrets(s1, s0)}, `{"client_secret":["` + s1 + `","` + s0 + `"]}`},
		{"all fields", affix.UpdateRequest{ClientSecret: secrets(s1), Name: &name, RedirectURIs: []string{"https://app.your-company.com"}, WebhookURI: affix.Nullable{Set: true, Value: "https://hooks.example/x"}},
			`{"client_secret":["` + s1 + `"],"name":"Your App","redirect_uris":["https://app.your-company.com"],"webhook_uri":"https://hooks.example/x"}`},
		{"webhook null", affix.UpdateRequest{ClientSecret: secrets(s1), WebhookURI: affix.Nullable{Set: true, Null: true}}, `{"client_secret":["` + s1 + `"],"webhook_uri":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.UpdateClient(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ClientID != "00000000-00000000-00000000-00000000" || len(resp.ClientSecret) != len(tc.req.ClientSecret) {
				t.Fatalf("response %+v", resp)
			}
			reqs := fake.Requests()
			last := reqs[len(reqs)-1]
			if string(last.Body) != tc.body {
				t.Fatalf("body\n got  %s\n want %s", last.Body, tc.body)
			}
			if last.Header.Get("Authorization") != key || last.Header.Get("Content-Type") != "application/json" || last.Method != "POST" || last.Path != affix.Path {
				t.Fatalf("request %s %s auth=%v ct=%q", last.Method, last.Path, last.Header.Get("Authorization") == key, last.Header.Get("Content-Type"))
			}
		})
	}
}

func TestDocumentedErrors(t *testing.T) {
	for _, tc := range []struct {
		fault            affixtest.Fault
		status           int
		definite, transi bool
		contains         string
	}{
		{affixtest.Fault{Status: 400}, 400, true, false, "validation_error: injected validation error"},
		{affixtest.Fault{Status: 401}, 401, true, false, "code: incorrect_username_or_password"},
		{affixtest.Fault{Status: 409}, 409, false, true, "error: conflict"},
		{affixtest.Fault{Status: 429, RetryAfter: "42"}, 429, false, true, "retry after 42s"},
		{affixtest.Fault{Status: 500}, 500, false, true, "message: Internal Server Error"},
		{affixtest.Fault{Status: 503}, 503, false, true, "503"},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			fake, c := setup(t)
			fake.Inject(tc.fault)
			_, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1, s0)})
			var ae *affix.APIError
			if !errors.As(err, &ae) || ae.StatusCode != tc.status {
				t.Fatalf("got %v", err)
			}
			if affix.Definite(err) != tc.definite || affix.Transient(err) != tc.transi || affix.StatusLabel(err) != fmt.Sprint(tc.status) {
				t.Fatalf("definite=%v transient=%v label=%s", affix.Definite(err), affix.Transient(err), affix.StatusLabel(err))
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("%q lacks %q", err, tc.contains)
			}
			if strings.Contains(err.Error(), "tok_") || strings.Contains(err.Error(), "injected-access-token") {
				t.Fatalf("409 token leaked: %v", err)
			}
			noLeak(t, err)
			if !fake.Accepts(key, s0) || fake.Accepts(key, s1) {
				t.Fatal("a rejected request changed the accepted set")
			}
		})
	}
}

func TestRetryAfterParsing(t *testing.T) {
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		header string
		ok     bool
		min    time.Duration
		max    time.Duration
		note   string
	}{
		{"7", true, 7 * time.Second, 7 * time.Second, ""},
		{future, true, 80 * time.Second, 91 * time.Second, ""},
		{"-5", false, 0, 0, "negative"},
		{"99999999", true, affix.MaxRetryAfter, affix.MaxRetryAfter, "capped"},
		{"soon", false, 0, 0, "unparsable"},
	} {
		t.Run(tc.header, func(t *testing.T) {
			fake, c := setup(t)
			fake.Inject(affixtest.Fault{Status: 429, RetryAfter: tc.header})
			_, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1)})
			d, ok := affix.RetryAfter(err)
			var ae *affix.APIError
			errors.As(err, &ae)
			if ok != tc.ok || d < tc.min || d > tc.max || !strings.Contains(ae.RetryAfterNote, tc.note) {
				t.Fatalf("Retry-After %q: %v %v note %q", tc.header, d, ok, ae.RetryAfterNote)
			}
		})
	}
}

func TestMismatch(t *testing.T) {
	fake, c := setup(t)
	fake.Inject(affixtest.Fault{Echo: []string{s0}})
	resp, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1, s0)})
	var mm *affix.MismatchError
	if !errors.As(err, &mm) || resp == nil {
		t.Fatalf("got %v", err)
	}
	if mm.Contains(0) || !mm.Contains(1) || mm.Contains(2) || mm.Got != 1 || mm.Sent != 2 {
		t.Fatalf("mismatch %+v", mm)
	}
	if affix.Definite(err) || affix.StatusLabel(err) != "200" {
		t.Fatal("mismatch classified as a definite rejection")
	}
	noLeak(t, err)
	// Extra and duplicate members are mismatches too.
	for _, echo := range [][]string{{s1, s0, "cccccccc-cccccccc-cccccccc-cccccccc"}, {s1, s1}} {
		fake.Inject(affixtest.Fault{Echo: echo})
		if _, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1, s0)}); !errors.As(err, &mm) {
			t.Fatalf("echo %d members: %v", len(echo), err)
		}
	}
	// Order does not matter.
	fake.Inject(affixtest.Fault{Echo: []string{s0, s1}})
	if _, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1, s0)}); err != nil {
		t.Fatalf("reordered set: %v", err)
	}
}

func TestHostileResponses(t *testing.T) {
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	for name, body := range map[string]string{
		"not json":      "<html>hello</html>",
		"wrong type":    `{"client_secret": "` + s1 + `"}`,
		"numbers":       `{"client_secret": [1, 2]}`,
		"no secret":     `{"client_id": "x"}`,
		"huge":          `{"client_secret": ["` + strings.Repeat("x", 2<<20) + `"]}`,
		"deeply nested": `{"client_secret": ` + deep + `}`,
		"trailing":      `{"client_secret": ["` + s1 + `"]} {"more": 1}`,
		"echoes secret": `{"client_secret": "` + s1 + key + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			fake, c := setup(t)
			fake.Inject(affixtest.Fault{Body: []byte(body)})
			_, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1)})
			var re *affix.ResponseError
			if !errors.As(err, &re) || !affix.Transient(err) || affix.Definite(err) {
				t.Fatalf("got %v", err)
			}
			noLeak(t, err)
		})
	}
}

func TestTransportFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fault   affixtest.Fault
		applied bool
	}{
		{"drop", affixtest.Fault{Drop: true}, false},
		{"apply then drop", affixtest.Fault{ApplyThenDrop: true}, true},
		{"timeout", affixtest.Fault{Delay: 3 * time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, c := setup(t)
			fake.Inject(tc.fault)
			_, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1, s0)})
			var te *affix.TransportError
			if !errors.As(err, &te) || !affix.Transient(err) || affix.StatusLabel(err) != "error" {
				t.Fatalf("got %v", err)
			}
			noLeak(t, err)
			if fake.Accepts(key, s1) != tc.applied {
				t.Fatalf("applied = %v, want %v", fake.Accepts(key, s1), tc.applied)
			}
		})
	}
}

func TestServerEchoingSecretsIsRedacted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		fmt.Fprintf(w, `{"message": "bad secret %s for key %s", "validation_error": "line1\nline2 %s"}`, s1, r.Header.Get("Authorization"), s0)
	}))
	defer srv.Close()
	c, _ := affix.New(srv.URL, secret.New(key))
	_, err := c.UpdateClient(context.Background(), affix.UpdateRequest{ClientSecret: secrets(s1, s0)})
	if err == nil || !strings.Contains(err.Error(), secret.Redacted) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v", err)
	}
	noLeak(t, err)
}

func TestNewRejectsBadInput(t *testing.T) {
	for _, tc := range []struct{ url, key string }{
		{"ftp://x", key}, {"http://", key}, {"https://api.affixapi.com?x=1", key}, {"https://u:p@api.affixapi.com", key},
		{"https://api.affixapi.com", ""}, {"https://api.affixapi.com", key + "\nX-Evil: 1"}, {"https://api.affixapi.com", key + "\r"},
	} {
		_, err := affix.New(tc.url, secret.New(tc.key))
		if err == nil {
			t.Fatalf("New(%q) accepted", tc.url)
		}
		noLeak(t, err)
		if strings.Contains(err.Error(), "u:p") {
			t.Fatal("error shows URL credentials")
		}
	}
}

func TestCancelledContextIsNotTransient(t *testing.T) {
	fake, c := setup(t)
	fake.Inject(affixtest.Fault{Delay: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := c.UpdateClient(ctx, affix.UpdateRequest{ClientSecret: secrets(s1)})
	if err == nil || affix.Transient(err) {
		t.Fatalf("cancelled: %v transient=%v", err, affix.Transient(err))
	}
}
