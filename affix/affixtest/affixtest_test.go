package affixtest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
)

const key = "k-123"

func do(t *testing.T, method, url, ct, auth, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// TestValidatesLikeTheAPI: what the real API rejects, the fake rejects,
// with the documented bodies, and the accepted set does not change.
func TestValidatesLikeTheAPI(t *testing.T) {
	s := affixtest.NewServer()
	defer s.Close()
	s.AddClient(key, "cid", "old")
	u := s.URL + affixtest.Path
	json := "application/json"
	for _, tc := range []struct {
		name                   string
		method, path, ct, auth string
		body                   string
		status                 int
		field                  string
	}{
		{"wrong path", "POST", "/2023-03-01/management/clients", json, key, `{"client_secret":["a"]}`, 404, "message"},
		{"wrong method", "PUT", affixtest.Path, json, key, `{"client_secret":["a"]}`, 405, "message"},
		{"no auth", "POST", affixtest.Path, json, "", `{"client_secret":["a"]}`, 401, "code"},
		{"bad auth", "POST", affixtest.Path, json, "Bearer " + key, `{"client_secret":["a"]}`, 401, "code"},
		{"content type", "POST", affixtest.Path, "text/plain", key, `{"client_secret":["a"]}`, 400, "validation_error"},
		{"malformed", "POST", affixtest.Path, json, key, `{"client_secret":`, 400, "validation_error"},
		{"not an object", "POST", affixtest.Path, json, key, `["a"]`, 400, "validation_error"},
		{"unknown field", "POST", affixtest.Path, json, key, `{"client_secret":["a"],"secret":"x"}`, 400, "validation_error"},
		{"secret not a list", "POST", affixtest.Path, json, key, `{"client_secret":"a"}`, 400, "validation_error"},
		{"secret numbers", "POST", affixtest.Path, json, key, `{"client_secret":[1]}`, 400, "validation_error"},
		{"empty list", "POST", affixtest.Path, json, key, `{"client_secret":[]}`, 400, "validation_error"},
		{"empty secret", "POST", affixtest.Path, json, key, `{"client_secret":[""]}`, 400, "validation_error"},
		{"duplicates", "POST", affixtest.Path, json, key, `{"client_secret":["a","a"]}`, 400, "validation_error"},
		{"name type", "POST", affixtest.Path, json, key, `{"client_secret":["a"],"name":5}`, 400, "validation_error"},
		{"webhook type", "POST", affixtest.Path, json, key, `{"client_secret":["a"],"webhook_uri":5}`, 400, "validation_error"},
		{"missing secret", "POST", affixtest.Path, json, key, `{"name":"x"}`, 400, "validation_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := do(t, tc.method, s.URL+tc.path, tc.ct, tc.auth, tc.body)
			if status != tc.status || body[tc.field] == nil {
				t.Fatalf("%d %v, want %d with %q", status, body, tc.status, tc.field)
			}
			if got := s.Secrets(key); len(got) != 1 || got[0] != "old" {
				t.Fatalf("accepted set changed: %v", got)
			}
		})
	}
	status, body := do(t, "POST", u, "application/json; charset=utf-8", key, `{"client_secret":["new","old"],"webhook_uri":null,"name":"App"}`)
	if status != 200 || body["client_id"] != "cid" || body["webhook_uri"] != nil || body["name"] != "App" {
		t.Fatalf("valid update: %d %v", status, body)
	}
	if !s.Accepts(key, "new") || !s.Accepts(key, "old") {
		t.Fatal("valid update not applied")
	}
	if n := len(s.Requests()); n != 17 {
		t.Fatalf("%d requests recorded, want 17", n)
	}
}

// TestProcessModeAdmin exercises the admin endpoints on a real listener.
func TestProcessModeAdmin(t *testing.T) {
	s := affixtest.NewHandler()
	s.AddClient(key, "cid", "s0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Mux(key)}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	resp, err := http.Post(base+"/_affixtest/faults", "application/json", strings.NewReader(`[{"status":429,"retry_after":"3"},{"delay":"10ms"}]`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("faults: %v %v", resp, err)
	}
	if st, _ := do(t, "POST", base+affixtest.Path, "application/json", key, `{"client_secret":["s1","s0"]}`); st != 429 {
		t.Fatalf("injected 429: got %d", st)
	}
	if st, _ := do(t, "POST", base+affixtest.Path, "application/json", key, `{"client_secret":["s1","s0"]}`); st != 200 {
		t.Fatalf("after faults: got %d", st)
	}
	resp, err = http.Get(base + "/_affixtest/state")
	if err != nil {
		t.Fatal(err)
	}
	var state struct {
		ClientID string   `json:"client_id"`
		Accepted []string `json:"accepted"`
		Requests []struct {
			Status       int      `json:"status"`
			ClientSecret []string `json:"client_secret"`
		} `json:"requests"`
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &state)
	if bytes.Contains(raw, []byte(`"s1"`)) || bytes.Contains(raw, []byte(`"s0"`)) {
		t.Fatal("state shows secret values")
	}
	if state.ClientID != "cid" || len(state.Accepted) != 2 || state.Accepted[0] != affixtest.Fingerprint("s1") || len(state.Requests) != 2 || state.Requests[0].Status != 429 {
		t.Fatalf("state %s", raw)
	}
	st, body := do(t, "POST", base+"/_affixtest/accepted", "application/json", "", `{"secret":"s0"}`)
	if st != 200 || body["accepted"] != true {
		t.Fatalf("accepted: %d %v", st, body)
	}
}
