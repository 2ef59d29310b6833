package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
)

// TestValidate: the example config is valid; broken configs exit 2 with a
// message naming the key.
func TestValidate(t *testing.T) {
	s := newStack(t)
	// The example's vault.address is empty (VAULT_ADDR); its record is not
	// in the test Vault, so the file alone is checked.
	s.env = []string{"VAULT_ADDR=" + s.vault.Addr}
	p := s.start("-config", filepath.Join("..", "..", "config.example.yaml"), "-validate", "-offline")
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("example config: exit %d\n%s", code, p.out.String())
	}
	s.env = nil
	good := s.config("good.yaml", "h", "    schedule: \"@every 720h\"\n    grace_period: 24h\n")
	base, _ := os.ReadFile(good)
	cases := []struct {
		name, from, to, key string
	}{
		{"unknown key", "kv_mount: secret", "kv_mount: secret\n  kv_mout: x", "kv_mout"},
		{"bad cron", `"@every 720h"`, `"@evry 720h"`, "clients[0].schedule"},
		{"negative grace", "grace_period: 24h", "grace_period: -1h", "clients[0].grace_period"},
		{"missing vault path", "    vault_path: " + s.path + "\n", "", "clients[0].vault_path"},
		{"duplicate names", "    grace_period: 24h\n", "    grace_period: 24h\n  - name: prod\n    vault_path: x/y\n    schedule: \"@daily\"\n    grace_period: 1h\n", "clients[1].name"},
		{"bad auth method", "method: token", "method: magic", "vault.auth.method"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			broken := strings.Replace(string(base), tc.from, tc.to, 1)
			if broken == string(base) {
				t.Fatalf("test case did not change the config")
			}
			path := filepath.Join(s.dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, mode := range [][]string{{"-validate"}, {}, {"-once"}} {
				p := s.start(append([]string{"-config", path}, mode...)...)
				if code := p.wait(t, 10*time.Second); code != 2 {
					t.Fatalf("%v: exit %d, want 2\n%s", mode, code, p.out.String())
				}
				if !strings.Contains(p.out.String(), tc.key) {
					t.Fatalf("%v: message does not name %s:\n%s", mode, tc.key, p.out.String())
				}
			}
		})
	}
	t.Run("flags", func(t *testing.T) {
		for _, args := range [][]string{{}, {"-config", good, "-bogus"}, {"-config", good, "-client", "prod"}, {"-config", good, "-once", "-client", "nope"}, {"-config", good, "extra"}} {
			if code := s.start(args...).wait(t, 10*time.Second); code != 2 {
				t.Fatalf("%v: exit %d, want 2", args, code)
			}
		}
	})
	t.Run("two clients on one API key", func(t *testing.T) {
		second := "  - name: other\n    vault_path: affix/other\n    schedule: \"@daily\"\n    grace_period: 1h\n"
		// Read from the same variable: refused by -validate already.
		same := filepath.Join(s.dir, "samekey.yaml")
		_ = os.WriteFile(same, append(append([]byte{}, base...), second...), 0o600)
		// From two variables holding one value: refused when the keys are read.
		t.Setenv("AFFIX_KEY_COPY", s.key)
		copied := filepath.Join(s.dir, "copiedkey.yaml")
		_ = os.WriteFile(copied, append(append([]byte{}, base...), second+"    affix: {api_key_env: AFFIX_KEY_COPY}\n"...), 0o600)
		for _, args := range [][]string{{"-config", same, "-validate"}, {"-config", same, "-once"}, {"-config", copied, "-once"}, {"-config", copied}} {
			q := s.start(args...)
			out := q.out.String
			if code := q.wait(t, 10*time.Second); code != 2 || !strings.Contains(out(), "clients[1].affix") || !strings.Contains(out(), "same base_url and API key") {
				t.Fatalf("%v: exit %d:\n%s", args, code, out())
			}
			if strings.Contains(out(), s.key) {
				t.Fatalf("%v: the API key is in the message", args)
			}
		}
	})
	t.Run("missing api key env", func(t *testing.T) {
		cfg := strings.Replace(string(base), "api_key_env: AFFIX_API_KEY", "api_key_env: AFFIX_KEY_NOT_SET", 1)
		path := filepath.Join(s.dir, "nokey.yaml")
		_ = os.WriteFile(path, []byte(cfg), 0o600)
		q := s.start("-config", path, "-once")
		if code := q.wait(t, 10*time.Second); code != 2 || !strings.Contains(q.out.String(), "AFFIX_KEY_NOT_SET") || !strings.Contains(q.out.String(), "api_key_env") {
			t.Fatalf("exit %d:\n%s", code, q.out.String())
		}
	})
}

// TestNoSecretInOutput runs rotations through every failure the fake can
// produce, with debug logging, and checks that no secret value, API key or
// Vault token appears in the logs, the -once output, /metrics or /status (I5).
func TestNoSecretInOutput(t *testing.T) {
	s := newStack(t)
	s.fake.Inject(
		affixtest.Fault{Status: 429, RetryAfter: "1"},
		affixtest.Fault{Status: 500},
		affixtest.Fault{Status: 409},
		affixtest.Fault{ApplyThenDrop: true},
		affixtest.Fault{Drop: true},
		affixtest.Fault{Body: []byte(`{"client_secret": "not-a-list"}`)},
		affixtest.Fault{Echo: []string{"ffffffff-ffffffff-ffffffff-ffffffff"}},
	)
	cfg := s.config("d.yaml", "pod-a", "    schedule: \"@every 2s\"\n    grace_period: 1s\n    max_age: 2s\n")
	d := s.start("-config", cfg)
	s.waitFor("two rotations", 60*time.Second, func(map[string]any) bool { return checkHistoryCount(s) >= 2 })
	s.fake.Inject(affixtest.Fault{Status: 400})
	once := s.start("-config", cfg, "-once")
	once.wait(t, 60*time.Second)
	base := "http://" + s.listen
	surfaces := map[string]string{
		"daemon log": d.out.String(), "-once output": once.out.String(),
		"/metrics": get(t, base+"/metrics"), "/status": get(t, base+"/status"),
	}
	secrets := map[string]bool{s.s0: true, s.key: true, s.vault.Token: true}
	for _, r := range s.fake.Requests() {
		for _, x := range r.ClientSecret {
			secrets[x] = true
		}
	}
	if len(secrets) < 5 {
		t.Fatalf("only %d secrets seen: the test did not rotate", len(secrets))
	}
	if !strings.Contains(d.out.String(), `"level":"debug"`) {
		t.Fatal("debug logging was not on")
	}
	for where, text := range surfaces {
		for sec := range secrets {
			if strings.Contains(text, sec) {
				t.Errorf("I5 violated: a secret appears in %s", where)
			}
			// Also the 4 groups of a secret separately, in case of reformatting.
			if parts := strings.Split(sec, "-"); len(parts) == 4 && strings.Contains(text, parts[0]+parts[1]) {
				t.Errorf("I5 violated: part of a secret appears in %s", where)
			}
		}
	}
}

func checkHistoryCount(s *stack) int {
	n := 0
	for _, r := range s.fake.Requests() {
		if r.Status == 200 && len(r.ClientSecret) == 1 {
			n++
		}
	}
	return n
}
