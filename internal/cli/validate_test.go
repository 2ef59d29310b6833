package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateInProcess: -validate's exit codes and messages without Vault
// (the online checks are tested against the real Vault in
// cmd/affix-rotator, TestValidatePreflight).
func TestValidateInProcess(t *testing.T) {
	dir := t.TempDir()
	const good = "vault: {address: \"http://127.0.0.1:1\"}\nclients:\n  - name: prod\n    vault_path: affix/prod\n    schedule: \"@every 720h\"\n    grace_period: 24h\n"
	for _, tc := range []struct {
		name, yaml string
		args       []string
		env        map[string]string
		code       int
		want       []string
	}{
		{"offline ok", good, []string{"-offline"}, nil, 0, []string{"OK (1 client)", "next runs (UTC):", "prod: ", "from now: Vault was not read", ": Affix: not checked ("}},
		{"-validate with -once", good, []string{"-offline", "-once"}, nil, 2, []string{"exclusive"}},
		{"offline file problem", strings.Replace(good, "24h", "720h", 1), []string{"-offline"}, nil, 2, []string{`error (file): clients[0].grace_period (client "prod"): 720h is not shorter`, "exit 2"}},
		{"strict errors and lint at once", strings.Replace(strings.Replace(good, "24h", "-1h", 1), "@every 720h", "@every 0s", 1), []string{"-offline"}, nil, 2,
			[]string{"got -1h (line 6)", `"@every 0s" does not wait`}},
		{"environment", good, nil, map[string]string{"VAULT_TOKEN": "t"}, 2, []string{"error (environment): affix.api_key_env: environment variable AFFIX_API_KEY", "not the file's fault"}},
		{"online only", good, nil, map[string]string{"VAULT_TOKEN": "t", "AFFIX_API_KEY": "k"}, 1, []string{"error (vault): vault.address: Vault at http://127.0.0.1:1 is unreachable", "exit 1", ": Affix: not checked ("}},
		{"not yaml", "clients: [\n", []string{"-offline"}, nil, 2, []string{"error (file)", "not valid YAML"}},
		{"grace not above consumers.max_refresh", good + "    consumers: {max_refresh: 30h}\n", []string{"-offline"}, nil, 2,
			[]string{`error (file): clients[0].grace_period (client "prod"): 24h does not exceed consumers.max_refresh (30h): grace_period must exceed the slowest consumer's refresh interval plus its restart time`, "(line 6)"}},
		{"grace above consumers.max_refresh", good + "    consumers: {max_refresh: 1h}\n", []string{"-offline"}, nil, 0, []string{"OK (1 client)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			getenv := func(k string) string { return tc.env[k] }
			code := Main(context.Background(), append([]string{"-config", path, "-validate"}, tc.args...), Env{Stdout: &out, Stderr: &out, Getenv: getenv})
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if t.Failed() {
				t.Log(out.String())
			}
		})
	}
	var out bytes.Buffer
	if code := Main(context.Background(), []string{"-config", "x.yaml", "-offline"}, Env{Stdout: &out, Stderr: &out}); code != 2 || !strings.Contains(out.String(), "-offline is only meaningful with -validate") {
		t.Fatalf("-offline alone: exit %d: %s", code, out.String())
	}
}
