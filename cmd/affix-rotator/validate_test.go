package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// TestValidatePreflight runs the real binary's -validate on broken configs
// and environments against the real Vault dev server: each problem exits
// with the code of whose fault it is (2 the file or the environment, 1 Vault,
// 0 when only warnings) and names its key in the one format,
// `clients[0].affix.api_key_env (client "prod")`. It logs the table of
// cases, exit codes and messages (the closing note).
func TestValidatePreflight(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	vc := s.vault.Client()
	good := s.config("good.yaml", "h", "    schedule: \"@every 720h\"\n    grace_period: 24h\n")
	base, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	file := func(name, content string) string {
		p := filepath.Join(s.dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty := file("empty-key", "")

	// A token whose policy only reads records; one that may read and
	// update but not create.
	token := func(name, hcl string) string {
		if err := vc.Sys().PutPolicyWithContext(ctx, name, hcl); err != nil {
			t.Fatal(err)
		}
		tok, err := vc.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{name}, DisplayName: name})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Auth.ClientToken
	}
	readOnly := token("validate-read-only", `path "secret/data/*" { capabilities = ["read"] }`)
	noCreate := token("validate-no-create", `path "secret/data/*" { capabilities = ["read", "update"] }`)
	withPatch := token("validate-least", `path "secret/data/*" { capabilities = ["read", "update"] }
path "secret/metadata/*" { capabilities = ["patch"] }`)

	// Records: one malformed, one whose latest version is deleted.
	malformed := vaulttest.Path(t)
	if _, err := vc.KVv2("secret").Put(ctx, malformed, map[string]any{"client_secret": s.s0, "rotated_at": "yesterday"}); err != nil {
		t.Fatal(err)
	}
	deleted := vaulttest.Path(t)
	if _, err := vc.KVv2("secret").Put(ctx, deleted, map[string]any{"client_secret": s.s0}); err != nil {
		t.Fatal(err)
	}
	if err := vc.KVv2("secret").Delete(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	dead, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}

	type edit struct{ from, to string }
	client := func(extra string) edit { return edit{"", extra} } // appended to the (last) client
	sched := func(spec, grace string) []edit {
		return []edit{{`"@every 720h"`, fmt.Sprintf("%q", spec)}, {"grace_period: 24h", "grace_period: " + grace}}
	}
	auth := func(a string) edit { return edit{"auth: {method: token, token_env: VAULT_TOKEN}", "auth: " + a} }
	cases := []struct {
		name  string
		edits []edit
		env   []string
		args  []string
		code  int
		want  []string // each in the output
	}{
		// The file (exit 2).
		{"cron that never fires", sched("0 0 31 2 *", "1h"), nil, nil, 2, []string{`clients[0].schedule (client "prod"): "0 0 31 2 *" never fires`, "error (file)"}},
		{"@every 0s", sched("@every 0s", "1h"), nil, nil, 2, []string{`clients[0].schedule (client "prod"): "@every 0s" does not wait`}},
		{"@every under 1m", sched("@every 30s", "10s"), nil, nil, 2, []string{`clients[0].schedule (client "prod"): "@every 30s" runs more often than once a minute`}},
		{"grace longer than the interval", sched("@every 12h", "24h"), nil, nil, 2, []string{`clients[0].grace_period (client "prod"): 24h is not shorter than the shortest interval`, "back to back"}},
		{"grace equal to a daily cron's interval", sched("0 3 * * *", "24h"), nil, nil, 2, []string{`clients[0].grace_period (client "prod"): 24h is not shorter`, `"0 3 * * *" (24h`}},
		{"grace as long as February", sched("0 3 1 * *", "672h"), nil, nil, 2, []string{`clients[0].grace_period (client "prod"): 672h is not shorter`, "(672h, from 2025-02-01T03:00:00Z to 2025-03-01T03:00:00Z)"}},
		{"jitter at least the interval", append(sched("@daily", "1h"), client("    jitter: 1440m\n")), nil, nil, 2, []string{`clients[0].jitter (client "prod"): 1440m is not shorter`}},
		{"max_age not above the grace", []edit{client("    max_age: 24h\n")}, nil, nil, 2, []string{`clients[0].max_age (client "prod"): 24h must be longer than grace_period (24h)`}},
		{"negative grace as written", []edit{{"grace_period: 24h", "grace_period: -1h"}}, nil, nil, 2, []string{`clients[0].grace_period (client "prod"): must be positive, got -1h (line 17)`}},
		{"vault_path pasted from the API", []edit{{"vault_path: " + s.path, "vault_path: secret/data/" + s.path}}, nil, nil, 2, []string{`clients[0].vault_path (client "prod"):`, "data/ segment", "(line 15)"}},
		{"no Vault address at all", []edit{{"address: " + fmt.Sprintf("%q", s.vault.Addr), `address: ""`}}, nil, nil, 2, []string{"vault.address:", "VAULT_ADDR", "https://127.0.0.1:8200"}},
		{"every problem at once", append(sched("0 0 31 2 *", "-5m"), client("    jitter: -1s\n    max_age: 1m\n")), nil, nil, 2, []string{`clients[0].schedule (client "prod")`, `clients[0].grace_period (client "prod"): must be positive, got -5m`, `clients[0].jitter (client "prod"): must not be negative, got -1s`}},
		// Warnings only (exit 0).
		{"http:// to a non-loopback Affix", []edit{{"base_url: " + fmt.Sprintf("%q", s.fake.URL), `base_url: "http://affix.example.com"`}}, nil, nil, 0, []string{`warning: affix.base_url: "http://affix.example.com": http:// to affix.example.com, which is not this machine`, "OK (1 client, 1 warning)"}},
		{"no patch on the record's metadata (the reconcile claim)", nil, []string{"VAULT_TOKEN=" + noCreate}, nil, 0, []string{`warning: clients[0].vault_path (client "prod"): the token (token-validate-no-create) lacks patch on secret/metadata/` + s.path, "two KV versions each", "OK (1 client, 1 warning)"}},
		{"the README's least privilege: no warning", nil, []string{"VAULT_TOKEN=" + withPatch}, nil, 0, []string{"OK (1 client)\n"}},
		// The environment (exit 2).
		{"API key env unset", []edit{{"api_key_env: AFFIX_API_KEY", "api_key_env: AFFIX_KEY_NOT_SET"}}, nil, nil, 2, []string{"error (environment): affix.api_key_env: environment variable AFFIX_KEY_NOT_SET", "in the environment (not the file's fault"}},
		{"client's API key env unset", []edit{client("    affix: {api_key_env: PROD_KEY_NOT_SET}\n")}, nil, nil, 2, []string{`error (environment): clients[0].affix.api_key_env (client "prod"): environment variable PROD_KEY_NOT_SET`}},
		{"API key file missing", []edit{{"api_key_env: AFFIX_API_KEY", "api_key_file: /nonexistent/affix-key"}}, nil, nil, 2, []string{"affix.api_key_file: file /nonexistent/affix-key (the Affix API key) does not exist"}},
		{"API key file empty", []edit{{"api_key_env: AFFIX_API_KEY", "api_key_file: " + empty}}, nil, nil, 2, []string{"affix.api_key_file: file " + empty + " (the Affix API key) is empty"}},
		{"Vault token env unset", nil, []string{"VAULT_TOKEN="}, nil, 2, []string{"vault.auth.token_env: environment variable VAULT_TOKEN (the Vault token) is unset or empty", "Vault not checked"}},
		{"Vault token file missing", []edit{auth("{method: token, token_file: /nonexistent/token}")}, nil, nil, 2, []string{"vault.auth.token_file: file /nonexistent/token (the Vault token) does not exist"}},
		{"AppRole secret id file missing", []edit{auth("{method: approle, approle: {role_id: r, secret_id_file: /nonexistent/sid}}")}, nil, nil, 2, []string{"vault.auth.approle.secret_id_file: file /nonexistent/sid (the AppRole secret id) does not exist"}},
		{"AppRole secret id env unset", []edit{auth("{method: approle, approle: {role_id: r, secret_id_env: SID_NOT_SET}}")}, nil, nil, 2, []string{"vault.auth.approle.secret_id_env: environment variable SID_NOT_SET"}},
		{"Kubernetes token file missing", []edit{auth("{method: kubernetes, kubernetes: {role: r, token_file: /nonexistent/sa}}")}, nil, nil, 2, []string{"vault.auth.kubernetes.token_file: file /nonexistent/sa (the Kubernetes service account token) does not exist"}},
		{"CA certificate missing", []edit{{"kv_mount: secret", "kv_mount: secret\n  tls: {ca_cert: /nonexistent/ca.pem}"}}, nil, nil, 2, []string{"vault.tls.ca_cert: file /nonexistent/ca.pem"}},
		// Online (exit 1).
		{"Vault unreachable", []edit{{fmt.Sprintf("%q", s.vault.Addr), fmt.Sprintf("%q", "http://"+dead)}}, nil, nil, 1, []string{"error (vault): vault.address: Vault at http://" + dead + " is unreachable", "exit 1"}},
		{"token invalid", nil, []string{"VAULT_TOKEN=hvs.not-a-token"}, nil, 1, []string{"error (vault): vault.auth.token_env: Vault at " + s.vault.Addr + " refused the token (lookup-self) with 403"}},
		{"read-only token", nil, []string{"VAULT_TOKEN=" + readOnly}, nil, 1, []string{`error (vault): clients[0].vault_path (client "prod"): the token (token-validate-read-only) lacks "update" on secret/data/` + s.path}},
		{"record missing", []edit{{"vault_path: " + s.path, "vault_path: " + s.path + "-missing"}}, nil, nil, 1, []string{`clients[0].vault_path (client "prod"): no record`, "vault kv put -cas=0 secret/" + s.path + "-missing client_secret=-`"}},
		{"record malformed", []edit{{"vault_path: " + s.path, "vault_path: " + malformed}}, nil, nil, 1, []string{`clients[0].vault_path (client "prod"): the record is malformed`, "rotated_at"}},
		{"record deleted, bootstrap on", []edit{{"vault_path: " + s.path, "vault_path: " + deleted}, client("    bootstrap: true\n")}, nil, nil, 1, []string{`clients[0].vault_path (client "prod"): deleted`, "vault kv undelete"}},
		{"bootstrap without create", []edit{{"vault_path: " + s.path, "vault_path: " + s.path + "-new"}, client("    bootstrap: true\n")}, []string{"VAULT_TOKEN=" + noCreate}, nil, 1, []string{`clients[0].vault_path (client "prod"): the token (token-validate-no-create) lacks "create"`}},
		// Fine.
		{"missing record, bootstrap on", []edit{{"vault_path: " + s.path, "vault_path: " + s.path + "-new"}, client("    bootstrap: true\n")}, nil, nil, 0, []string{"bootstrap is on, the first rotation creates it", "OK (1 client)"}},
		{"good config", nil, nil, nil, 0, []string{"reachable; token valid", "next runs (UTC):", "prod: ", "OK (1 client)"}},
		{"-offline does not need the environment", nil, []string{"VAULT_TOKEN=", "AFFIX_API_KEY="}, []string{"-offline"}, 0, []string{"offline: the environment and Vault were not checked", "OK (1 client)"}},
	}
	if len(cases) < 20 {
		t.Fatalf("only %d cases", len(cases))
	}
	var table []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := string(base)
			for _, e := range tc.edits {
				next := strings.Replace(cfg, e.from, e.to, 1)
				if e.from == "" {
					next = cfg + e.to
				}
				if next == cfg && e.from != e.to {
					t.Fatalf("edit %q did not change the config", e.from)
				}
				cfg = next
			}
			path := file(strings.NewReplacer(" ", "-", "/", "-", "'", "").Replace(tc.name)+".yaml", cfg)
			s.env = tc.env
			defer func() { s.env = nil }()
			p := s.start(append([]string{"-config", path, "-validate"}, tc.args...)...)
			code := p.wait(t, 30*time.Second)
			out := p.out.String()
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, sec := range []string{s.key, s.s0, s.vault.Token, readOnly, noCreate} {
				if strings.Contains(out, sec) {
					t.Errorf("a secret is in the output")
				}
			}
			if t.Failed() {
				t.Logf("config:\n%s\noutput:\n%s", cfg, out)
			}
			table = append(table, fmt.Sprintf("| %s | %d | %s |", tc.name, code, firstProblem(out)))
		})
	}
	t.Logf("-validate on %d configs and environments:\n| case | exit | message |\n|---|---|---|\n%s", len(table), strings.Join(table, "\n"))
}

// firstProblem is the output's most telling lines, for the table: its
// errors and warnings, else its OK line, without the file name.
func firstProblem(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, ": error ("); i >= 0 {
			lines = append(lines, l[i+2:])
		} else if i := strings.Index(l, ": warning: "); i >= 0 {
			lines = append(lines, l[i+2:])
		}
	}
	if len(lines) == 0 {
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, ": OK") {
				lines = append(lines, l[strings.Index(l, ": OK")+2:])
			}
		}
	}
	return strings.ReplaceAll(strings.Join(lines, " <br> "), "|", "\\|")
}
