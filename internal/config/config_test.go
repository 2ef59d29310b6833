package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const minimal = `
clients:
  - name: prod
    vault_path: affix/prod
    schedule: "@every 720h"
    grace_period: 24h
`

func TestExampleConfigIsValidAndComplete(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data, "config.example.yaml")
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if len(c.Clients) != 1 || c.Clients[0].MaxAge.D() != 744*time.Hour {
		t.Fatalf("example parsed wrong: %+v", c.Clients)
	}
	// Every key of the struct is documented in the example.
	var walk func(reflect.Type)
	walk = func(rt reflect.Type) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || rt == optionalType {
			return
		}
		for i := 0; i < rt.NumField(); i++ {
			tag := strings.Split(rt.Field(i).Tag.Get("yaml"), ",")[0]
			if tag != "" && !strings.Contains(string(data), tag+":") {
				t.Errorf("config.example.yaml does not document %q", tag)
			}
			walk(rt.Field(i).Type)
		}
	}
	walk(reflect.TypeOf(Config{}))
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal), "t")
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if c.Listen != ":9464" || c.InstanceID != host || c.Log.Level != "info" || c.Log.Format != "json" ||
		c.Vault.KVMount != "secret" || c.Vault.Auth.Method != "token" || c.Vault.Auth.TokenEnv != "VAULT_TOKEN" ||
		c.Affix.BaseURL != "https://api.affixapi.com" || c.Affix.APIKeyEnv != "AFFIX_API_KEY" || c.Affix.Timeout.D() != 30*time.Second ||
		c.Rotation.LeaseDuration.D() != 5*time.Minute || c.Rotation.RetryMax.D() != 5*time.Minute || c.Rotation.MaxConcurrent != 10 {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestBrokenConfigsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ name, yaml, key string }{
		{"empty file", "", "(file)"},
		{"two documents", minimal + "---\n" + minimal, "(file)"},
		{"unknown top key", "bogus: 1\n" + minimal, "bogus: unknown key (line 1)"},
		{"unknown nested key", "vault:\n  kv_mout: x\n" + minimal, "vault.kv_mout: unknown key"},
		{"unknown client key", strings.Replace(minimal, "grace_period: 24h", "grace_period: 24h\n    grace: 1h", 1), "clients[0].grace: unknown key"},
		{"bad cron", strings.Replace(minimal, "@every 720h", "@evry 720h", 1), "clients[0].schedule"},
		{"negative grace", strings.Replace(minimal, "24h", "-1h", 1), "clients[0].grace_period: must be positive"},
		{"missing grace", strings.Replace(minimal, "    grace_period: 24h\n", "", 1), "clients[0].grace_period"},
		{"bad duration", strings.Replace(minimal, "24h", "1 day", 1), "clients[0].grace_period"},
		{"number duration", strings.Replace(minimal, "24h", "[1]", 1), "clients[0].grace_period"},
		{"missing vault path", strings.Replace(minimal, "    vault_path: affix/prod\n", "", 1), "clients[0].vault_path: required"},
		{"absolute vault path", strings.Replace(minimal, "affix/prod", "/affix/prod", 1), "clients[0].vault_path"},
		{"dotdot vault path", strings.Replace(minimal, "affix/prod", "affix/../x", 1), "clients[0].vault_path"},
		{"duplicate names", minimal + "  - {name: prod, vault_path: a/b, schedule: \"@daily\", grace_period: 1h}\n", `clients[1].name: duplicate "prod"`},
		{"duplicate paths", minimal + "  - {name: p2, vault_path: affix/prod, schedule: \"@daily\", grace_period: 1h}\n", "clients[1].vault_path: duplicate"},
		{"bad name", strings.Replace(minimal, "name: prod", "name: \"pr od\"", 1), "clients[0].name"},
		{"max_age below grace", strings.Replace(minimal, "grace_period: 24h", "grace_period: 24h\n    max_age: 1h", 1), "clients[0].max_age"},
		{"negative jitter", strings.Replace(minimal, "grace_period: 24h", "grace_period: 24h\n    jitter: -1s", 1), "clients[0].jitter"},
		{"no clients", "listen: \":1\"\n", "clients: at least one"},
		{"clients not a list", "clients: {}\n", "clients: must be a list"},
		{"bad method", "vault: {auth: {method: magic}}\n" + minimal, "vault.auth.method"},
		{"approle without block", "vault: {auth: {method: approle}}\n" + minimal, "vault.auth.approle"},
		{"approle without secret id", "vault: {auth: {method: approle, approle: {role_id: r}}}\n" + minimal, "vault.auth.approle.secret_id_file"},
		{"kubernetes without role", "vault: {auth: {method: kubernetes, kubernetes: {}}}\n" + minimal, "vault.auth.kubernetes.role"},
		{"block for another method", "vault: {auth: {method: token, kubernetes: {role: r}}}\n" + minimal, "vault.auth.kubernetes: given"},
		{"bad base url", "affix: {base_url: \"ftp://x\"}\n" + minimal, "affix.base_url"},
		{"credentials in url", "affix: {base_url: \"https://u:pw@x\"}\n" + minimal, "affix.base_url: must not hold credentials"},
		{"bad listen", "listen: nope\n" + minimal, "listen"},
		{"bad log level", "log: {level: loud}\n" + minimal, "log.level"},
		{"bool type", strings.Replace(minimal, "grace_period: 24h", "grace_period: 24h\n    bootstrap: yes please", 1), "clients[0].bootstrap: must be true or false"},
		{"short lease", "rotation: {lease_duration: 5s}\n" + minimal, "rotation.lease_duration"},
		{"bad redirect", strings.Replace(minimal, "grace_period: 24h", "grace_period: 24h\n    app: {redirect_uris: [\"not a url\"]}", 1), "clients[0].app.redirect_uris[0]"},
		{"webhook type", strings.Replace(minimal, "grace_period: 24h", "grace_period: 24h\n    app: {webhook_uri: [1]}", 1), "clients[0].app.webhook_uri"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "t.yaml")
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error does not name %q:\n%v", tc.key, err)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("not a *config.Error: %T", err)
			}
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	_, err := Parse([]byte("log: {level: loud}\nclients:\n  - {name: a, schedule: nope, grace_period: -1s}\n"), "t")
	for _, key := range []string{"log.level", "clients[0].vault_path", "clients[0].schedule", "clients[0].grace_period"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Fatalf("missing %s in %v", key, err)
		}
	}
}

func TestWebhookURI(t *testing.T) {
	for _, tc := range []struct {
		line string
		want OptionalString
	}{
		{"", OptionalString{}},
		{"app: {webhook_uri: null}", OptionalString{Set: true, Null: true}},
		{"app: {webhook_uri: ~}", OptionalString{Set: true, Null: true}},
		{"app: {webhook_uri: \"https://h.example/x\"}", OptionalString{Set: true, Value: "https://h.example/x"}},
	} {
		y := minimal
		if tc.line != "" {
			y = strings.Replace(minimal, "grace_period: 24h", "grace_period: 24h\n    "+tc.line, 1)
		}
		c, err := Parse([]byte(y), "t")
		if err != nil {
			t.Fatalf("%s: %v", tc.line, err)
		}
		if got := c.Clients[0].App.WebhookURI; got != tc.want {
			t.Fatalf("%q: got %+v want %+v", tc.line, got, tc.want)
		}
	}
}

func TestAffixForAndAPIKey(t *testing.T) {
	c, err := Parse([]byte("affix: {api_key_env: MAIN_KEY, timeout: 10s}\n"+strings.Replace(minimal, "grace_period: 24h", "grace_period: 24h\n    affix: {base_url: \"https://dev.api.affixapi.com\", api_key_file: KEYFILE}", 1)), "t")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	c.Clients[0].Affix.APIKeyFile = file
	a := c.AffixFor(c.Clients[0])
	if a.BaseURL != "https://dev.api.affixapi.com" || a.APIKeyEnv != "" || a.APIKeyFile != file || a.Timeout.D() != 10*time.Second {
		t.Fatalf("merged: %+v", a)
	}
	env := map[string]string{"MAIN_KEY": "k-from-env-SECRET", "BAD": "line1\nline2-SECRET"}
	getenv := func(k string) string { return env[k] }
	_ = os.WriteFile(file, []byte("k-from-file-SECRET\n"), 0o600)
	if k, err := a.APIKey(getenv); err != nil || k.Reveal() != "k-from-file-SECRET" {
		t.Fatalf("file key: %v", err)
	}
	if k, err := c.Affix.APIKey(getenv); err != nil || k.Reveal() != "k-from-env-SECRET" {
		t.Fatalf("env key: %v", err)
	}
	for _, tc := range []struct {
		a   Affix
		key string
	}{
		{Affix{APIKeyEnv: "MISSING"}, "affix.api_key_env"},
		{Affix{APIKeyEnv: "BAD"}, "affix.api_key_env"},
		{Affix{APIKeyFile: filepath.Join(dir, "nope")}, "affix.api_key_file"},
	} {
		_, err := tc.a.APIKey(getenv)
		if err == nil || !strings.Contains(err.Error(), tc.key) || strings.Contains(err.Error(), "SECRET") {
			t.Fatalf("%+v: %v", tc.a, err)
		}
	}
}

func TestParseSchedule(t *testing.T) {
	for _, spec := range []string{"@every 720h", "@daily", "0 3 * * 1", "CRON_TZ=Europe/Paris 0 3 1 * *"} {
		if _, err := ParseSchedule(spec); err != nil {
			t.Errorf("%s: %v", spec, err)
		}
	}
	for _, spec := range []string{"", "@evry 1h", "* * * * * *", "61 * * * *"} {
		if _, err := ParseSchedule(spec); err == nil {
			t.Errorf("%q accepted", spec)
		}
	}
}
