package affixtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
)

const (
	key = "k-123-APIKEY"
	sec = "SECRETVALUE-1"
)

type answer struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func do(t *testing.T, method, url string, header map[string][]string, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	a.raw, _ = io.ReadAll(resp.Body)
	_ = json.Unmarshal(a.raw, &a.body)
	return a
}

func hdr(ct, auth string) map[string][]string {
	h := map[string][]string{}
	if ct != "" {
		h["Content-Type"] = []string{ct}
	}
	if auth != "" {
		h["Authorization"] = []string{auth}
	}
	return h
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestValidatesLikeTheAPI: what the real API rejects, the fake rejects,
// with the documented bodies and without echoing values, and the accepted
// set does not change.
func TestValidatesLikeTheAPI(t *testing.T) {
	s := affixtest.NewServer()
	defer s.Close()
	s.AddClient(key, "cid", "old")
	const ct = "application/json"
	ok := `{"client_secret":["` + sec + `"]}`
	valErr := []string{"message", "validation_error"}
	for _, tc := range []struct {
		name         string
		method, path string
		header       map[string][]string
		body         string
		status       int
		keys         []string
	}{
		{"wrong path", "POST", "/2023-03-01/management/clients", hdr(ct, key), ok, 404, []string{"message"}},
		{"root", "POST", "/", hdr(ct, key), ok, 404, []string{"message"}},
		{"GET", "GET", affixtest.Path, hdr(ct, key), "", 405, []string{"message"}},
		{"PUT", "PUT", affixtest.Path, hdr(ct, key), ok, 405, []string{"message"}},
		{"PATCH", "PATCH", affixtest.Path, hdr(ct, key), ok, 405, []string{"message"}},
		{"no auth", "POST", affixtest.Path, hdr(ct, ""), ok, 401, []string{"code", "error", "message"}},
		{"bearer prefix", "POST", affixtest.Path, hdr(ct, "Bearer "+key), ok, 401, []string{"code", "error", "message"}},
		{"basic prefix", "POST", affixtest.Path, hdr(ct, "Basic "+key), ok, 401, []string{"code", "error", "message"}},
		{"key in other case", "POST", affixtest.Path, hdr(ct, strings.ToUpper(key)), ok, 401, []string{"code", "error", "message"}},
		{"two auth headers", "POST", affixtest.Path, map[string][]string{"Content-Type": {ct}, "Authorization": {key, key}}, ok, 401, []string{"code", "error", "message"}},
		{"no content type", "POST", affixtest.Path, hdr("", key), ok, 400, valErr},
		{"text/plain", "POST", affixtest.Path, hdr("text/plain", key), ok, 400, valErr},
		{"form", "POST", affixtest.Path, hdr("application/x-www-form-urlencoded", key), ok, 400, valErr},
		{"malformed", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":`, 400, valErr},
		{"empty body", "POST", affixtest.Path, hdr(ct, key), ``, 400, valErr},
		{"null", "POST", affixtest.Path, hdr(ct, key), `null`, 400, valErr},
		{"not an object", "POST", affixtest.Path, hdr(ct, key), `["` + sec + `"]`, 400, valErr},
		{"trailing data", "POST", affixtest.Path, hdr(ct, key), ok + ` {}`, 400, valErr},
		{"not UTF-8", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + "\xff" + `"]}`, 400, valErr},
		{"unknown field", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `"],"secret":"x"}`, 400, valErr},
		{"wrong-case field", "POST", affixtest.Path, hdr(ct, key), `{"Client_Secret":["` + sec + `"]}`, 400, valErr},
		{"duplicate field", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `"],"client_secret":["b"]}`, 400, valErr},
		{"secret not a list", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":"` + sec + `"}`, 400, valErr},
		{"secret null", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":null}`, 400, valErr},
		{"secret numbers", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":[1]}`, 400, valErr},
		{"secret null member", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `",null]}`, 400, valErr},
		{"empty list", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":[]}`, 400, valErr},
		{"eleven secrets", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["1","2","3","4","5","6","7","8","9","10","11"]}`, 400, valErr},
		{"empty secret", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":[""]}`, 400, valErr},
		{"duplicates", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `","` + sec + `"]}`, 400, valErr},
		{"missing secret", "POST", affixtest.Path, hdr(ct, key), `{"name":"x"}`, 400, valErr},
		{"name number", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `"],"name":5}`, 400, valErr},
		{"name null", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `"],"name":null}`, 400, valErr},
		{"redirect_uris string", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `"],"redirect_uris":"x"}`, 400, valErr},
		{"redirect_uris null", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `"],"redirect_uris":null}`, 400, valErr},
		{"redirect_uris null member", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `"],"redirect_uris":[null]}`, 400, valErr},
		{"webhook number", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `"],"webhook_uri":5}`, 400, valErr},
		{"webhook list", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + sec + `"],"webhook_uri":["x"]}`, 400, valErr},
		{"too large", "POST", affixtest.Path, hdr(ct, key), `{"client_secret":["` + strings.Repeat("x", 1<<20) + `"]}`, 400, valErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, s.URL+tc.path, tc.header, tc.body)
			if a.status != tc.status || !reflect.DeepEqual(keys(a.body), tc.keys) || a.header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s, want %d with %v", a.status, a.raw, tc.status, tc.keys)
			}
			for _, v := range a.body {
				if str, _ := v.(string); str == "" {
					t.Fatalf("empty or non-string field in %s", a.raw)
				}
			}
			if tc.status == 401 && (a.body["error"] != "authentication_error" || a.body["code"] != "incorrect_username_or_password") {
				t.Fatalf("401 body %s", a.raw)
			}
			if tc.status == 405 && a.header.Get("Allow") != "POST" {
				t.Fatalf("405 without Allow: POST")
			}
			if bytes.Contains(a.raw, []byte(sec)) || bytes.Contains(a.raw, []byte(key)) {
				t.Fatalf("answer echoes a value: %s", a.raw)
			}
			if got := s.Secrets(key); len(got) != 1 || got[0] != "old" {
				t.Fatalf("accepted set changed: %v", got)
			}
			last := s.Requests()[len(s.Requests())-1]
			if last.Status != tc.status || last.Applied || last.Method != tc.method || last.Path != tc.path {
				t.Fatalf("recorded %+v", last)
			}
		})
	}
}

func TestSuccessAppliesAndAnswers(t *testing.T) {
	s := affixtest.NewServer()
	defer s.Close()
	s.AddClient(key, "cid", "old")
	s.AddClient("other-key", "cid2", "x")
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	s.SetClock(func() time.Time { return now })
	post := func(body string) answer {
		return do(t, "POST", s.URL+affixtest.Path, hdr("application/json; charset=utf-8", key), body)
	}
	a := post(`{"client_secret":["new","old"],"webhook_uri":"https://h/x","name":"App","redirect_uris":["https://a"]}`)
	want := map[string]any{"client_id": "cid", "client_secret": []any{"new", "old"}, "name": "App", "redirect_uris": []any{"https://a"}, "webhook_uri": "https://h/x"}
	if a.status != 200 || !reflect.DeepEqual(a.body, want) {
		t.Fatalf("first update: %d %s", a.status, a.raw)
	}
	if !s.Accepts(key, "new") || !s.Accepts(key, "old") || s.Accepts(key, "") || !reflect.DeepEqual(s.Secrets(key), []string{"new", "old"}) {
		t.Fatal("update not applied")
	}
	if !reflect.DeepEqual(s.Secrets("other-key"), []string{"x"}) || s.Secrets("nobody") != nil || s.ClientID("other-key") != "cid2" {
		t.Fatal("another client changed")
	}
	// Fields not sent are kept; webhook_uri null clears it.
	a = post(`{"client_secret":["new"],"webhook_uri":null}`)
	want = map[string]any{"client_id": "cid", "client_secret": []any{"new"}, "name": "App", "redirect_uris": []any{"https://a"}, "webhook_uri": nil}
	if a.status != 200 || !reflect.DeepEqual(a.body, want) {
		t.Fatalf("second update: %d %s", a.status, a.raw)
	}
	if s.Accepts(key, "old") {
		t.Fatal("old secret still accepted")
	}
	reqs := s.Requests()
	if len(reqs) != 2 || !reqs[0].Time.Equal(now) || reqs[1].Status != 200 || !reqs[1].Applied || !reflect.DeepEqual(reqs[1].ClientSecret, []string{"new"}) {
		t.Fatalf("requests %+v", reqs)
	}
	if string(reqs[1].Fields["webhook_uri"]) != "null" || len(reqs[1].Fields) != 2 {
		t.Fatalf("fields %v", reqs[1].Fields)
	}
	// Requests returns a copy.
	reqs[0].Status = 999
	if s.Requests()[0].Status != 200 {
		t.Fatal("Requests shares its slice")
	}
}

func TestFaults(t *testing.T) {
	const body = `{"client_secret":["new","old"]}`
	for _, tc := range []struct {
		name    string
		fault   affixtest.Fault
		status  int // 0: dropped
		applied bool
		check   func(t *testing.T, a answer)
	}{
		{"400", affixtest.Fault{Status: 400}, 400, false, wantKeys("message", "validation_error")},
		{"401", affixtest.Fault{Status: 401}, 401, false, wantKeys("code", "error", "message")},
		{"409", affixtest.Fault{Status: 409}, 409, false, func(t *testing.T, a answer) {
			wantKeys("code", "error", "token")(t, a)
			if a.body["token"] != affixtest.InjectedConflictToken || a.body["error"] != "conflict" {
				t.Fatalf("409 %s", a.raw)
			}
		}},
		{"429 default", affixtest.Fault{Status: 429}, 429, false, func(t *testing.T, a answer) {
			wantKeys("message")(t, a)
			if a.header.Get("Retry-After") != "1" {
				t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
			}
		}},
		{"429 given", affixtest.Fault{Status: 429, RetryAfter: "42"}, 429, false, func(t *testing.T, a answer) {
			if a.header.Get("Retry-After") != "42" {
				t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
			}
		}},
		{"500", affixtest.Fault{Status: 500}, 500, false, func(t *testing.T, a answer) {
			wantKeys("message")(t, a)
			if a.header.Get("Retry-After") != "" {
				t.Fatal("500 with Retry-After")
			}
		}},
		{"503 with Retry-After", affixtest.Fault{Status: 503, RetryAfter: "5"}, 503, false, func(t *testing.T, a answer) {
			if a.header.Get("Retry-After") != "5" {
				t.Fatal("no Retry-After")
			}
		}},
		{"echo", affixtest.Fault{Echo: []string{"old"}}, 200, true, func(t *testing.T, a answer) {
			if !reflect.DeepEqual(a.body["client_secret"], []any{"old"}) {
				t.Fatalf("echo %s", a.raw)
			}
		}},
		{"body", affixtest.Fault{Body: []byte("not json")}, 200, true, func(t *testing.T, a answer) {
			if string(a.raw) != "not json" {
				t.Fatalf("body %q", a.raw)
			}
		}},
		{"delay", affixtest.Fault{Delay: 100 * time.Millisecond}, 200, true, nil},
		{"status after delay", affixtest.Fault{Delay: 50 * time.Millisecond, Status: 500}, 500, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := affixtest.NewServer()
			defer s.Close()
			s.AddClient(key, "cid", "old")
			s.Inject(tc.fault)
			start := time.Now()
			a := do(t, "POST", s.URL+affixtest.Path, hdr("application/json", key), body)
			if time.Since(start) < tc.fault.Delay {
				t.Fatal("delay not honoured")
			}
			if a.status != tc.status {
				t.Fatalf("status %d %s", a.status, a.raw)
			}
			if tc.check != nil {
				tc.check(t, a)
			}
			if s.Accepts(key, "new") != tc.applied {
				t.Fatalf("applied = %v", !tc.applied)
			}
			r := s.Requests()[0]
			if r.Status != tc.status || r.Applied != tc.applied || r.Fault == "" || r.Fault == "none" {
				t.Fatalf("recorded %+v", r)
			}
			// The next request is normal again.
			if a := do(t, "POST", s.URL+affixtest.Path, hdr("application/json", key), `{"client_secret":["third"]}`); a.status != 200 || !s.Accepts(key, "third") {
				t.Fatalf("after the fault: %d", a.status)
			}
		})
	}
}

func wantKeys(k ...string) func(t *testing.T, a answer) {
	return func(t *testing.T, a answer) {
		t.Helper()
		if !reflect.DeepEqual(keys(a.body), k) {
			t.Fatalf("keys %v, want %v: %s", keys(a.body), k, a.raw)
		}
	}
}

func TestDropAndApplyEcho(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fault    affixtest.Fault
		accepted []string
		answered bool
	}{
		{"drop", affixtest.Fault{Drop: true}, []string{"old"}, false},
		{"apply then drop", affixtest.Fault{ApplyThenDrop: true}, []string{"new", "old"}, false},
		{"apply echo", affixtest.Fault{Echo: []string{"other"}, ApplyEcho: true}, []string{"other"}, true},
		{"status beats echo", affixtest.Fault{Status: 500, Echo: []string{"other"}}, []string{"old"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := affixtest.NewServer()
			defer s.Close()
			s.AddClient(key, "cid", "old")
			s.Inject(tc.fault)
			req, _ := http.NewRequest("POST", s.URL+affixtest.Path, strings.NewReader(`{"client_secret":["new","old"]}`))
			req.Header.Set("Authorization", key)
			req.Header.Set("Content-Type", "application/json")
			resp, err := (&http.Transport{}).RoundTrip(req) // no retry of the dropped request
			if (err == nil) != tc.answered {
				t.Fatalf("answered: %v, %v", resp, err)
			}
			if resp != nil {
				resp.Body.Close()
			}
			if got := s.Secrets(key); !reflect.DeepEqual(got, tc.accepted) {
				t.Fatalf("accepted %v, want %v", got, tc.accepted)
			}
			if r := s.Requests(); len(r) != 1 || (r[0].Status == 0) == tc.answered {
				t.Fatalf("recorded %+v", r)
			}
		})
	}
}

func TestFaultQueueIsFIFOAndOnlyForTheAPIPath(t *testing.T) {
	s := affixtest.NewServer()
	defer s.Close()
	s.AddClient(key, "cid", "old")
	s.Inject(affixtest.Fault{Status: 500}, affixtest.Fault{Status: 429}, affixtest.Fault{Status: 409})
	if a := do(t, "GET", s.URL+"/elsewhere", nil, ""); a.status != 404 || s.Pending() != 3 {
		t.Fatalf("other path consumed a fault: %d, %d pending", a.status, s.Pending())
	}
	var got []int
	for range 4 {
		got = append(got, do(t, "POST", s.URL+affixtest.Path, hdr("application/json", key), `{"client_secret":["new"]}`).status)
	}
	if !reflect.DeepEqual(got, []int{500, 429, 409, 200}) || s.Pending() != 0 {
		t.Fatalf("statuses %v", got)
	}
}

func TestDelayRespectsCancellation(t *testing.T) {
	s := affixtest.NewServer()
	defer s.Close()
	s.AddClient(key, "cid", "old")
	s.Inject(affixtest.Fault{Delay: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+affixtest.Path, strings.NewReader(`{"client_secret":["new"]}`))
	req.Header.Set("Authorization", key)
	req.Header.Set("Content-Type", "application/json")
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(s.Requests()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r := s.Requests()
	if len(r) != 1 || r[0].Status != 0 || r[0].Applied || s.Accepts(key, "new") {
		t.Fatalf("recorded %+v", r)
	}
}

func TestFaultJSON(t *testing.T) {
	in := []affixtest.Fault{
		{Status: 429, RetryAfter: "3", Delay: 1500 * time.Millisecond},
		{Drop: true}, {ApplyThenDrop: true},
		{Echo: []string{"a", "b"}, ApplyEcho: true},
		{Body: []byte(`{"x":1}`)}, {Body: []byte{0xff, 0}}, {Body: []byte{}},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out []affixtest.Fault
	if err := json.Unmarshal(b, &out); err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip %s: %+v %v", b, out, err)
	}
	for _, tc := range []struct {
		json string
		want affixtest.Fault
		ok   bool
	}{
		{`{"Status":500,"RetryAfter":"2","ApplyThenDrop":true,"Delay":"1s"}`, affixtest.Fault{Status: 500, RetryAfter: "2", ApplyThenDrop: true, Delay: time.Second}, true},
		{`{"apply-then-drop":true,"body_base64":"aGk="}`, affixtest.Fault{ApplyThenDrop: true, Body: []byte("hi")}, true},
		{`{}`, affixtest.Fault{}, true},
		{`{"stauts":500}`, affixtest.Fault{}, false},
		{`{"delay":1000}`, affixtest.Fault{}, false},
		{`{"delay":"soon"}`, affixtest.Fault{}, false},
		{`{"delay":"-1s"}`, affixtest.Fault{}, false},
		{`{"status":"500"}`, affixtest.Fault{}, false},
		{`{"status":42}`, affixtest.Fault{}, false},
		{`{"status":500,"Status":400}`, affixtest.Fault{}, false},
		{`{"body":"a","body_base64":"YQ=="}`, affixtest.Fault{}, false},
		{`[]`, affixtest.Fault{}, false},
	} {
		var f affixtest.Fault
		err := json.Unmarshal([]byte(tc.json), &f)
		if (err == nil) != tc.ok || (tc.ok && !reflect.DeepEqual(f, tc.want)) {
			t.Errorf("%s: %+v %v", tc.json, f, err)
		}
	}
}

func TestFingerprint(t *testing.T) {
	// sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
	if got := affixtest.Fingerprint("abc"); got != "ba7816bf8f01" {
		t.Fatalf("Fingerprint = %q", got)
	}
	if got := affixtest.Fingerprints(nil); got == nil || len(got) != 0 {
		t.Fatalf("Fingerprints(nil) = %#v", got)
	}
}

// TestProcessModeAdmin builds the process mode's handler with its exported
// constructor, serves it on a real listener and drives the admin endpoints.
func TestProcessModeAdmin(t *testing.T) {
	s := affixtest.NewHandler()
	s.AddClient(key, "cid", "s0-SECRET")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Mux(key)}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	js := map[string][]string{"Content-Type": {"application/json"}}

	a := do(t, "POST", base+"/_affixtest/faults", js, `[{"status":429,"retry_after":"3"},{"delay":"10ms"},{"Drop":true}]`)
	if a.status != 200 || a.body["queued"] != 3.0 {
		t.Fatalf("faults: %d %s", a.status, a.raw)
	}
	for _, bad := range []string{`{"status":429}`, `[{"nope":1}]`, `[{"delay":"x"}]`, `not json`, `null`, `[] []`} {
		if a := do(t, "POST", base+"/_affixtest/faults", js, bad); a.status != 400 || a.body["message"] == nil {
			t.Fatalf("bad faults %s: %d %s", bad, a.status, a.raw)
		}
	}
	if a := do(t, "GET", base+"/_affixtest/faults", nil, ""); a.status != 405 {
		t.Fatalf("GET faults: %d", a.status)
	}
	if a := do(t, "GET", base+"/_affixtest/nope", nil, ""); a.status != 404 {
		t.Fatalf("unknown admin path: %d", a.status)
	}
	update := `{"client_secret":["s1-SECRET","s0-SECRET"],"name":"App"}`
	if a := do(t, "POST", base+affixtest.Path, hdr("application/json", key), update); a.status != 429 || a.header.Get("Retry-After") != "3" {
		t.Fatalf("injected 429: got %d", a.status)
	}
	if a := do(t, "POST", base+affixtest.Path, hdr("application/json", key), update); a.status != 200 {
		t.Fatalf("after the delay fault: got %d", a.status)
	}

	a = do(t, "GET", base+"/_affixtest/state", nil, "")
	if bytes.Contains(a.raw, []byte("SECRET")) || bytes.Contains(a.raw, []byte(key)) {
		t.Fatalf("state shows secret values: %s", a.raw)
	}
	var state affixtest.State
	if err := json.Unmarshal(a.raw, &state); err != nil {
		t.Fatal(err)
	}
	fp0, fp1 := affixtest.Fingerprint("s0-SECRET"), affixtest.Fingerprint("s1-SECRET")
	if state.ClientID != "cid" || !reflect.DeepEqual(state.Accepted, []string{fp1, fp0}) || state.PendingFaults != 1 || len(state.Requests) != 2 {
		t.Fatalf("state %s", a.raw)
	}
	r0, r1 := state.Requests[0], state.Requests[1]
	if r0.Status != 429 || r0.Applied || r0.Fault != "status 429" || !reflect.DeepEqual(r0.ClientSecret, []string{fp1, fp0}) || r0.Method != "POST" || r0.Path != affixtest.Path ||
		r1.Status != 200 || !r1.Applied || r1.Fault != "delay 10ms" || !reflect.DeepEqual(r1.Fields, []string{"client_secret", "name"}) || r1.Time.IsZero() {
		t.Fatalf("state requests %s", a.raw)
	}
	// The raw JSON has the documented keys.
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(a.raw, &raw)
	for _, k := range []string{"client_id", "accepted", "requests"} {
		if raw[k] == nil {
			t.Fatalf("state lacks %q: %s", k, a.raw)
		}
	}

	for secret, want := range map[string]bool{"s0-SECRET": true, "s1-SECRET": true, "s2-SECRET": false, "": false} {
		a := do(t, "POST", base+"/_affixtest/accepted", js, `{"secret":"`+secret+`"}`)
		if a.status != 200 || a.body["accepted"] != want {
			t.Fatalf("accepted %q: %d %s", secret, a.status, a.raw)
		}
	}
	if a := do(t, "POST", base+"/_affixtest/accepted", js, `{}`); a.status != 400 {
		t.Fatalf("accepted without secret: %d", a.status)
	}

	// The queued drop fault is consumed by the next API request.
	req, _ := http.NewRequest("POST", base+affixtest.Path, strings.NewReader(update))
	req.Header.Set("Authorization", key)
	req.Header.Set("Content-Type", "application/json")
	if _, err := (&http.Transport{}).RoundTrip(req); err == nil {
		t.Fatal("drop fault not applied")
	}
	// A fresh state has an empty list, not null.
	empty := affixtest.NewHandler()
	empty.AddClient(key, "cid")
	b, _ := json.Marshal(empty.State(key))
	if !bytes.Contains(b, []byte(`"requests":[]`)) || !bytes.Contains(b, []byte(`"accepted":[]`)) {
		t.Fatalf("empty state %s", b)
	}
}

// TestRateLimit: beyond the configured rate the fake answers the documented
// 429 with a Retry-After counting the whole seconds until a request would
// be allowed, applies nothing, and counts it; faults come first.
func TestRateLimit(t *testing.T) {
	s := affixtest.NewServer()
	defer s.Close()
	s.AddClient(key, "cid", "old")
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	s.SetClock(func() time.Time { return now })
	s.SetRateLimit(0.25, 2) // a token every 4s, two at once
	post := func(secret string) answer {
		return do(t, "POST", s.URL+affixtest.Path, hdr("application/json", key), `{"client_secret":["`+secret+`"]}`)
	}
	for i, want := range []int{200, 200, 429} {
		if a := post("s" + strconv.Itoa(i)); a.status != want {
			t.Fatalf("request %d: status %d, want %d", i, a.status, want)
		}
	}
	a := post("refused")
	if a.status != 429 || a.header.Get("Retry-After") != "4" || keys(a.body)[0] != "message" {
		t.Fatalf("over the limit: %d Retry-After %q body %v", a.status, a.header.Get("Retry-After"), keys(a.body))
	}
	if s.Accepts(key, "refused") || s.RateLimited() != 2 {
		t.Fatalf("refused request applied (%v) or not counted (%d)", s.Accepts(key, "refused"), s.RateLimited())
	}
	now = now.Add(3500 * time.Millisecond)
	if a := post("x"); a.status != 429 || a.header.Get("Retry-After") != "1" {
		t.Fatalf("0.5s before a token: %d Retry-After %q, want 429 and 1", a.status, a.header.Get("Retry-After"))
	}
	now = now.Add(500 * time.Millisecond)
	if a := post("s3"); a.status != 200 || !s.Accepts(key, "s3") {
		t.Fatalf("at the token: %d", a.status)
	}
	s.Inject(affixtest.Fault{Status: 500})
	if a := post("y"); a.status != 500 || s.RateLimited() != 3 {
		t.Fatalf("fault first: %d, limited %d", a.status, s.RateLimited())
	}
	s.SetRateLimit(0, 0)
	if a := post("s4"); a.status != 200 {
		t.Fatalf("limit removed: %d", a.status)
	}
}
