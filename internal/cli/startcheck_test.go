package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// TestStartRefusesWhatValidateRefuses: the daemon, -once and an operator
// action refuse with exit 2, at once, what -validate refuses (no Vault
// address at all; every environment problem), in -validate's very words
// and key format, all problems in one go.
func TestStartRefusesWhatValidateRefuses(t *testing.T) {
	dir := t.TempDir()
	const body = "clients:\n  - name: prod\n    vault_path: affix/prod\n    schedule: \"@every 720h\"\n    grace_period: 24h\n    affix: {api_key_env: PROD_KEY}\n" +
		"  - name: other\n    vault_path: affix/other\n    schedule: \"@every 720h\"\n    grace_period: 24h\n    affix: {api_key_env: OTHER_KEY}\n"
	for _, tc := range []struct {
		name, yaml string
		args       []string
		env        map[string]string
		want       []string
	}{
		{"no vault address", body, nil, map[string]string{"VAULT_TOKEN": "t", "PROD_KEY": "k", "OTHER_KEY": "k2"},
			[]string{"error (file): vault.address: not set, and VAULT_ADDR is not set either"}},
		{"every environment problem at once", "vault: {address: \"http://127.0.0.1:1\"}\n" + body, nil, nil,
			[]string{`error (environment): clients[0].affix.api_key_env (client "prod"): environment variable PROD_KEY`, `error (environment): clients[1].affix.api_key_env (client "other"): environment variable OTHER_KEY`,
				"error (environment): vault.auth.token_env: environment variable VAULT_TOKEN", "3 problems in the environment"}},
		{"once: the selected client's problems", "vault: {address: \"http://127.0.0.1:1\"}\n" + body, []string{"-once", "-client", "prod"}, map[string]string{"OTHER_KEY": "k2"},
			[]string{`clients[0].affix.api_key_env (client "prod")`, "vault.auth.token_env", "2 problems in the environment"}},
		{"action", "vault: {address: \"http://127.0.0.1:1\"}\n" + body, []string{"-end-grace", "-client", "prod", "-reason", "leak"}, map[string]string{"VAULT_TOKEN": "t"},
			[]string{`clients[0].affix.api_key_env (client "prod")`, "1 problem in the environment"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			getenv := func(k string) string { return tc.env[k] }
			var out, vout bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if code := Main(ctx, append([]string{"-config", path}, tc.args...), Env{Stdout: &out, Stderr: &out, Getenv: getenv}); code != ExitUsage {
				t.Errorf("exit %d, want 2", code)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if strings.Contains(out.String(), "clients[prod]") || strings.Contains(out.String(), "clients[other]") {
				t.Error("a key spelt clients[<name>]")
			}
			// Each problem line is one -validate prints too.
			Main(ctx, []string{"-config", path, "-validate"}, Env{Stdout: &vout, Stderr: &vout, Getenv: getenv})
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.Contains(l, ": error (") && !strings.Contains(vout.String(), l) {
					t.Errorf("-validate does not print %q", l)
				}
			}
			if t.Failed() {
				t.Logf("start:\n%s\n-validate:\n%s", out.String(), vout.String())
			}
		})
	}
}

// TestStartWarnsAboutInsecureSettings: the daemon logs at start what
// -validate warns about: http:// to a host that is not this machine, and
// vault.tls.insecure_skip_verify.
func TestStartWarnsAboutInsecureSettings(t *testing.T) {
	dir := t.TempDir()
	listen, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	y := "listen: \"" + listen + "\"\nvault: {address: \"http://127.0.0.1:1\", tls: {insecure_skip_verify: true}}\naffix: {base_url: \"http://192.0.2.1:8080\"}\n" +
		"clients:\n  - name: prod\n    vault_path: affix/prod\n    schedule: \"@every 720h\"\n    grace_period: 24h\n"
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VAULT_TOKEN": "t", "AFFIX_API_KEY": "k"}
	out := &vaulttest.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- Main(ctx, []string{"-config", path}, Env{Stdout: out, Stderr: out, Getenv: func(k string) string { return env[k] }})
	}()
	want := []string{`"msg":"config warning: vault.tls.insecure_skip_verify"`, `"msg":"config warning: affix.base_url"`, `http:// to 192.0.2.1, which is not this machine`}
	// The warnings come before the first attempt to reach Vault.
	deadline := time.After(30 * time.Second)
	for !strings.Contains(out.String(), "cannot connect to vault") {
		select {
		case <-deadline:
			t.Fatalf("no attempt to reach Vault:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Errorf("exit %d after the stop", code)
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("start log lacks %q", w)
		}
	}
	if t.Failed() {
		t.Log(out.String())
	}
}
