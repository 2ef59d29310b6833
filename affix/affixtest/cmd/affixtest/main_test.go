package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

const (
	apiKey = "process-mode-KEY-123"
	s0     = "aaaaaaaa-aaaaaaaa-aaaaaaaa-aaaaaaaa"
	s1     = "ffffffff-ffffffff-ffffffff-ffffffff"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the process mode's run() on 127.0.0.1:0 until the test ends.
func start(t *testing.T, args []string, env map[string]string) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), func(k string) string { return env[k] }, logs, func(a net.Addr) { addr <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case a := <-addr:
		return "http://" + a.String(), logs
	case err := <-done:
		t.Fatalf("run ended: %v\n%s", err, logs)
	case <-time.After(5 * time.Second):
		t.Fatal("not listening")
	}
	return "", nil
}

func state(t *testing.T, base string) affixtest.State {
	t.Helper()
	resp, err := http.Get(base + "/_affixtest/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, s := range []string{s0, s1, apiKey} {
		if strings.Contains(string(raw), s) {
			t.Fatalf("state shows a value: %s", raw)
		}
	}
	var st affixtest.State
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("state %s: %v", raw, err)
	}
	return st
}

func TestProcessModeEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		args func(t *testing.T) []string
		env  map[string]string
	}{
		{"secret from env", func(*testing.T) []string { return []string{"-client-id", "demo-client"} },
			map[string]string{"AFFIX_API_KEY": apiKey, "AFFIX_INITIAL_SECRET": s0}},
		{"secret from file and other env names", func(t *testing.T) []string {
			f := filepath.Join(t.TempDir(), "secret")
			if err := os.WriteFile(f, []byte(s0+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"-client-id", "demo-client", "-api-key-env", "MY_KEY", "-secret-file", f}
		}, map[string]string{"MY_KEY": apiKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, logs := start(t, tc.args(t), tc.env)
			st := state(t, base)
			if st.ClientID != "demo-client" || !reflect.DeepEqual(st.Accepted, []string{affixtest.Fingerprint(s0)}) || len(st.Requests) != 0 {
				t.Fatalf("initial state %+v", st)
			}
			// Queue a 429 and a drop-after-apply through the admin endpoint.
			resp, err := http.Post(base+"/_affixtest/faults", "application/json", strings.NewReader(`[{"status":429,"retry_after":"2"},{"apply_then_drop":true}]`))
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("faults: %v %v", resp, err)
			}
			resp.Body.Close()

			c, err := affix.New(base, secret.New(apiKey), affix.WithTimeout(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			req := affix.UpdateRequest{ClientSecret: []secret.Value{secret.New(s1), secret.New(s0)}}
			_, err = c.UpdateClient(context.Background(), req)
			if d, ok := affix.RetryAfter(err); !ok || d != 2*time.Second {
				t.Fatalf("first request: %v", err)
			}
			_, err = c.UpdateClient(context.Background(), req)
			var te *affix.TransportError
			if !errors.As(err, &te) || !affix.Transient(err) {
				t.Fatalf("second request: %v", err)
			}
			if _, err := c.UpdateClient(context.Background(), req); err != nil {
				t.Fatalf("third request: %v", err)
			}

			st = state(t, base)
			fp0, fp1 := affixtest.Fingerprint(s0), affixtest.Fingerprint(s1)
			if !reflect.DeepEqual(st.Accepted, []string{fp1, fp0}) || len(st.Requests) != 3 || st.PendingFaults != 0 {
				t.Fatalf("state %+v", st)
			}
			for i, want := range []struct {
				status  int
				applied bool
			}{{429, false}, {0, true}, {200, true}} {
				if r := st.Requests[i]; r.Status != want.status || r.Applied != want.applied || !reflect.DeepEqual(r.ClientSecret, []string{fp1, fp0}) {
					t.Fatalf("request %d: %+v", i, r)
				}
			}
			for secret, want := range map[string]bool{s0: true, s1: true, "nope": false} {
				resp, err := http.Post(base+"/_affixtest/accepted", "application/json", strings.NewReader(`{"secret":"`+secret+`"}`))
				if err != nil {
					t.Fatal(err)
				}
				var out map[string]bool
				_ = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if out["accepted"] != want {
					t.Fatalf("accepted(%s) = %v", secret, out["accepted"])
				}
			}

			// One line per API request, with fingerprints and never values.
			text := logs.String()
			for _, s := range []string{s0, s1, apiKey, "aaaaaaaa", "ffffffff"} {
				if strings.Contains(text, s) {
					t.Fatalf("log shows a value:\n%s", text)
				}
			}
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
				if strings.Contains(l, affixtest.Path) {
					lines = append(lines, l)
				}
			}
			if len(lines) != 3 || !strings.Contains(lines[0], "-> 429") || !strings.Contains(lines[1], "-> 0 applied=true") || !strings.Contains(lines[2], "-> 200") ||
				!strings.Contains(lines[2], "client_secret=["+fp1+" "+fp0+"]") || !strings.Contains(text, "listening on") {
				t.Fatalf("log:\n%s", text)
			}
		})
	}
}

func TestProcessModeBadSetup(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no key", nil, nil, "AFFIX_API_KEY"},
		{"missing secret file", []string{"-secret-file", "/nonexistent/secret"}, map[string]string{"AFFIX_API_KEY": apiKey}, "-secret-file"},
		{"unknown flag", []string{"-nope"}, map[string]string{"AFFIX_API_KEY": apiKey}, "nope"},
		{"stray argument", []string{"extra"}, map[string]string{"AFFIX_API_KEY": apiKey}, "unexpected"},
		{"bad listen address", []string{"-listen", "256.0.0.1:x"}, map[string]string{"AFFIX_API_KEY": apiKey}, "256.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tc.args, func(k string) string { return tc.env[k] }, &out, nil)
			if err == nil || !strings.Contains(err.Error()+out.String(), tc.want) || strings.Contains(err.Error()+out.String(), apiKey) {
				t.Fatalf("got %v\n%s", err, out.String())
			}
		})
	}
}
