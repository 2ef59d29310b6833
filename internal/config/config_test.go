package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// minimal is the smallest valid config: one client, everything else default.
const minimal = `clients:
  - name: prod
    vault_path: affix/prod
    schedule: "@every 720h"
    grace_period: 24h
`

// withClient returns minimal with extra lines (written at the client's
// indentation, "\n"-separated) added to the first client.
func withClient(extra ...string) string {
	var b strings.Builder
	b.WriteString(minimal)
	for _, l := range extra {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// replaceOnce is strings.Replace(s, old, new, 1) that fails the test when
// old is absent (so a table entry cannot silently test the valid config).
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("%q not found in:\n%s", old, s)
	}
	return strings.Replace(s, old, new, 1)
}

func readExample(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// allErrors flattens errors.Join trees.
func allErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, allErrors(e)...)
		}
		return out
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func TestExampleConfigIsValid(t *testing.T) {
	c, err := Parse(readExample(t), "config.example.yaml")
	if err != nil {
		t.Fatalf("example config:\n%v", err)
	}
	if len(c.Clients) != 1 {
		t.Fatalf("want one active client, got %d", len(c.Clients))
	}
	p := c.Clients[0]
	if p.Name != "prod" || p.VaultPath != "affix/prod" || p.Schedule != "@every 720h" ||
		p.GracePeriod.D() != 24*time.Hour || p.MaxAge.D() != 744*time.Hour || p.Jitter != 0 || p.Bootstrap {
		t.Fatalf("prod client: %+v", p)
	}
	if p.App.Name != nil || p.App.RedirectURIs != nil || p.App.WebhookURI.Set {
		t.Fatalf("prod sends app fields: %+v", p.App)
	}
	if c.Listen != DefaultListen || c.Vault.Auth.Method != "token" || c.Vault.Auth.TokenEnv != "VAULT_TOKEN" ||
		c.Affix.BaseURL != DefaultBaseURL || c.Affix.APIKeyEnv != "AFFIX_API_KEY" || c.Rotation.MaxConcurrent != 10 ||
		c.Rotation.ReconcileInterval.D() != DefaultReconcileInterval || c.Rotation.RereadInterval.D() != DefaultRereadInterval ||
		c.Rotation.ClockSkewMargin.D() != DefaultClockSkewMargin {
		t.Fatalf("example does not show the defaults: %+v", c)
	}
}

// TestExampleConfigDocumentsEveryKey: every yaml key of every struct appears
// as a key ("name:") in the example's text, set or in a comment.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	text := string(readExample(t))
	seen := map[reflect.Type]bool{}
	var walk func(rt reflect.Type, path string)
	walk = func(rt reflect.Type, path string) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || rt == optionalType || seen[rt] {
			return
		}
		seen[rt] = true
		for i := 0; i < rt.NumField(); i++ {
			tag, _, _ := strings.Cut(rt.Field(i).Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				t.Errorf("%s.%s has no yaml tag", rt.Name(), rt.Field(i).Name)
				continue
			}
			if !regexp.MustCompile(`(?m)(^|[\s{,#-])` + regexp.QuoteMeta(tag) + `:`).MatchString(text) {
				t.Errorf("config.example.yaml does not document %s", join(path, tag))
			}
			walk(rt.Field(i).Type, join(path, tag))
		}
	}
	walk(configType, "")
	if len(seen) < 10 {
		t.Fatalf("walked only %d structs", len(seen))
	}
}

// uncomment removes "# " after the indentation from the lines of a
// commented block: from the line equal to first, every following line that
// starts with prefix.
func uncomment(t *testing.T, text, first, prefix string) string {
	t.Helper()
	lines := strings.Split(text, "\n")
	start := -1
	for i, l := range lines {
		if l == first {
			start = i
			break
		}
	}
	if start < 0 {
		t.Fatalf("block %q not found in the example", first)
	}
	indent := prefix[:strings.Index(prefix, "#")]
	for i := start; i < len(lines) && strings.HasPrefix(lines[i], prefix); i++ {
		lines[i] = indent + strings.TrimPrefix(lines[i], prefix)
	}
	return strings.Join(lines, "\n")
}

// TestExampleCommentedBlocksAreValid: the commented parts of the example
// (the second client, the approle and kubernetes blocks) are valid once
// uncommented, and mean what their comments say.
func TestExampleCommentedBlocksAreValid(t *testing.T) {
	text := string(readExample(t))

	t.Run("second client", func(t *testing.T) {
		y := uncomment(t, text, "  # - name: staging", "  # ")
		c, err := Parse([]byte(y), "example+staging")
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Clients) != 2 {
			t.Fatalf("clients: %d", len(c.Clients))
		}
		s := c.Clients[1]
		if s.Name != "staging" || s.App.Name == nil || *s.App.Name != "Your App (staging)" || len(s.App.RedirectURIs) != 1 ||
			s.App.WebhookURI != (OptionalString{Set: true, Null: true}) {
			t.Fatalf("staging: %+v", s)
		}
		a := c.AffixFor(s)
		if a.BaseURL != "https://dev.api.affixapi.com" || a.APIKeyFile == "" || a.APIKeyEnv != "" || a.Timeout.D() != 10*time.Second {
			t.Fatalf("staging affix: %+v", a)
		}
		if p := c.AffixFor(c.Clients[0]); p != c.Affix {
			t.Fatalf("prod affix %+v != top level %+v", p, c.Affix)
		}
	})
	for _, m := range []string{"approle", "kubernetes"} {
		t.Run(m, func(t *testing.T) {
			y := uncomment(t, text, "    # "+m+":", "    # ")
			y = replaceOnce(t, y, "method: token", "method: "+m)
			y = replaceOnce(t, y, "token_env: VAULT_TOKEN", "token_env: \"\"")
			c, err := Parse([]byte(y), "example+"+m)
			if err != nil {
				t.Fatal(err)
			}
			switch m {
			case "approle":
				if a := c.Vault.Auth.AppRole; a == nil || a.Mount != "approle" || a.RoleID == "" || a.SecretIDFile == "" {
					t.Fatalf("approle: %+v", a)
				}
			case "kubernetes":
				if k := c.Vault.Auth.Kubernetes; k == nil || k.Role != "affix-rotator" || k.TokenFile != DefaultKubeTokenFile {
					t.Fatalf("kubernetes: %+v", k)
				}
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Skip("no hostname")
	}
	c, err := Parse([]byte(minimal), "t")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:     ":9464",
		InstanceID: host,
		Log:        Log{Level: "info", Format: "json"},
		Vault: Vault{
			KVMount: "secret", Timeout: Duration(30 * time.Second),
			Auth: VaultAuth{Method: "token", TokenEnv: "VAULT_TOKEN"},
		},
		Affix: Affix{BaseURL: "https://api.affixapi.com", APIKeyEnv: "AFFIX_API_KEY", Timeout: Duration(30 * time.Second)},
		Rotation: Rotation{
			LeaseDuration: Duration(5 * time.Minute), RetryInitial: Duration(time.Second), RetryMax: Duration(5 * time.Minute), MaxConcurrent: 10,
			ReconcileInterval: Duration(time.Hour), RereadInterval: Duration(30 * time.Second), ClockSkewMargin: Duration(30 * time.Second),
		},
		Clients: []Client{{Name: "prod", VaultPath: "affix/prod", Schedule: "@every 720h", GracePeriod: Duration(24 * time.Hour)}},
	}
	if !reflect.DeepEqual(*c, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", *c, want)
	}

	for _, tc := range []struct {
		name, yaml string
		check      func(*Config) bool
	}{
		{"null blocks are absent", "log: ~\nvault: ~\naffix:\nrotation: null\n" + minimal, func(c *Config) bool {
			return c.Log.Level == "info" && c.Vault.Timeout.D() == 30*time.Second && c.Affix.Timeout.D() == 30*time.Second && c.Rotation.MaxConcurrent == 10
		}},
		{"empty strings are absent", "listen: \"\"\ninstance_id: \"\"\nlog: {level: \"\"}\nvault: {kv_mount: \"\"}\n" + minimal, func(c *Config) bool {
			return c.Listen == ":9464" && c.InstanceID != "" && c.Log.Level == "info" && c.Vault.KVMount == "secret"
		}},
		{"token_file replaces the token_env default", "vault: {auth: {token_file: /run/vault/token}}\n" + minimal, func(c *Config) bool {
			return c.Vault.Auth.TokenEnv == "" && c.Vault.Auth.TokenFile == "/run/vault/token"
		}},
		{"api_key_file replaces the api_key_env default", "affix: {api_key_file: /run/affix/key}\n" + minimal, func(c *Config) bool {
			return c.Affix.APIKeyEnv == "" && c.Affix.APIKeyFile == "/run/affix/key"
		}},
		{"approle mount", "vault: {auth: {method: approle, approle: {role_id: r, secret_id_env: SID}}}\n" + minimal, func(c *Config) bool {
			return c.Vault.Auth.AppRole.Mount == "approle" && c.Vault.Auth.TokenEnv == ""
		}},
		{"kubernetes mount and token file", "vault: {auth: {method: kubernetes, kubernetes: {role: r}}}\n" + minimal, func(c *Config) bool {
			k := c.Vault.Auth.Kubernetes
			return k.Mount == "kubernetes" && k.TokenFile == DefaultKubeTokenFile && c.Vault.Auth.TokenEnv == ""
		}},
		{"burst defaults to 1 with a rate limit", "affix: {rate_limit: 2.5}\n" + minimal, func(c *Config) bool {
			return c.Affix.RateLimit == 2.5 && c.Affix.Burst == 1
		}},
		{"no burst without a rate limit", minimal, func(c *Config) bool { return c.Affix.Burst == 0 }},
		{"explicit values win", "listen: \"127.0.0.1:0\"\ninstance_id: pod-1\nrotation: {lease_duration: 30s, retry_initial: 200ms, retry_max: 2s, max_concurrent: 1}\n" + minimal, func(c *Config) bool {
			r := c.Rotation
			return c.Listen == "127.0.0.1:0" && c.InstanceID == "pod-1" && r.LeaseDuration.D() == 30*time.Second && r.RetryInitial.D() == 200*time.Millisecond && r.RetryMax.D() == 2*time.Second && r.MaxConcurrent == 1
		}},
		{"explicit rotation intervals win", "rotation: {reconcile_interval: 15m, reread_interval: 5s, clock_skew_margin: 2m}\n" + minimal, func(c *Config) bool {
			r := c.Rotation
			return r.ReconcileInterval.D() == 15*time.Minute && r.RereadInterval.D() == 5*time.Second && r.ClockSkewMargin.D() == 2*time.Minute
		}},
		{"zero reconcile_interval disables it", "rotation: {reconcile_interval: 0}\n" + minimal, func(c *Config) bool {
			return c.Rotation.ReconcileInterval == 0 && c.Rotation.RereadInterval.D() == DefaultRereadInterval
		}},
		{"zero clock_skew_margin", "rotation: {clock_skew_margin: 0s}\n" + minimal, func(c *Config) bool {
			return c.Rotation.ClockSkewMargin == 0 && c.Rotation.ReconcileInterval.D() == DefaultReconcileInterval
		}},
		{"null rotation intervals take the defaults", "rotation:\n  reconcile_interval: ~\n  reread_interval: null\n  clock_skew_margin:\n" + minimal, func(c *Config) bool {
			r := c.Rotation
			return r.ReconcileInterval.D() == time.Hour && r.RereadInterval.D() == 30*time.Second && r.ClockSkewMargin.D() == 30*time.Second
		}},
		{"vault_path under another mount name", "vault: {kv_mount: kv}\n" + replaceOnce(t, minimal, "affix/prod", "secret/affix/prod"), func(c *Config) bool {
			return c.Clients[0].VaultPath == "secret/affix/prod"
		}},
		{"vault_path ending in data", replaceOnce(t, minimal, "affix/prod", "affix/data"), func(c *Config) bool {
			return c.Clients[0].VaultPath == "affix/data"
		}},
		{"vault_path with data in a name", replaceOnce(t, minimal, "affix/prod", "metadata-svc/database/prod"), func(c *Config) bool {
			return c.Clients[0].VaultPath == "metadata-svc/database/prod"
		}},
		{"zero jitter and max_age", withClient("jitter: 0", "max_age: 0s"), func(c *Config) bool {
			return c.Clients[0].Jitter == 0 && c.Clients[0].MaxAge == 0
		}},
		{"consumers.max_refresh below grace", withClient("consumers: {max_refresh: 23h59m}"), func(c *Config) bool {
			return c.Clients[0].Consumers.MaxRefresh.D() == 23*time.Hour+59*time.Minute
		}},
		{"consumers.max_refresh left out or 0", withClient("consumers: {max_refresh: 0}"), func(c *Config) bool {
			return c.Clients[0].Consumers.MaxRefresh == 0
		}},
		{"anchors and merge keys", minimal + "  - &base {name: b, vault_path: affix/b, schedule: \"@daily\", grace_period: 1h, jitter: 5m, affix: {api_key_env: KEY_B}}\n  - <<: *base\n    name: c\n    vault_path: affix/c\n    affix: {api_key_env: KEY_C}\n", func(c *Config) bool {
			return len(c.Clients) == 3 && c.Clients[2].Name == "c" && c.Clients[2].Schedule == "@daily" && c.Clients[2].Jitter.D() == 5*time.Minute
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "t")
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("unexpected: %+v", c)
			}
		})
	}
}

func TestBrokenConfigsNameTheKey(t *testing.T) {
	approle := func(block string) string {
		return "vault: {auth: {method: approle, approle: " + block + "}}\n" + minimal
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string // each must appear in the message
	}{
		// The file as a whole.
		{"empty file", "", []string{"t.yaml: the file is empty"}},
		{"comments only", "# nothing\n", []string{"t.yaml: the file is empty"}},
		{"null document", "~\n", []string{"t.yaml: the file is empty"}},
		{"two documents", minimal + "---\n" + minimal, []string{"t.yaml: holds more than one YAML document"}},
		{"broken second document", minimal + "---\n[\n", []string{"t.yaml: not valid YAML"}},
		{"syntax error", "clients: [\n", []string{"t.yaml: not valid YAML"}},
		{"top level list", "- a\n", []string{"t.yaml: must be a mapping"}},

		// Unknown keys, with their path and line.
		{"unknown top key", "bogus: 1\n" + minimal, []string{"bogus: unknown key (line 1)"}},
		{"unknown nested key", "vault:\n  kv_mout: x\n" + minimal, []string{`vault.kv_mout: unknown key (line 2); did you mean "kv_mount"?`}},
		{"unknown deep key", "vault:\n  auth:\n    tokenenv: X\n" + minimal, []string{"vault.auth.tokenenv: unknown key (line 3)"}},
		{"unknown client key", withClient("grace: 1h"), []string{"clients[0].grace: unknown key (line 6)"}},
		{"unknown app key", withClient("app: {webhook: x}"), []string{"clients[0].app.webhook: unknown key"}},
		{"no key for secrets", "affix: {api_key: sk_live}\n" + minimal, []string{"affix.api_key: unknown key"}},
		{"duplicate key", "listen: \":1\"\nlisten: \":2\"\n" + minimal, []string{"listen: given twice (line 1 and line 2)"}},

		// Wrong YAML types.
		{"number as duration", replaceOnce(t, minimal, "24h", "5"), []string{`clients[0].grace_period: "5" is not a duration`}},
		{"bad duration string", replaceOnce(t, minimal, "24h", "1 day"), []string{`clients[0].grace_period: "1 day" is not a duration`}},
		{"day unit", replaceOnce(t, minimal, "24h", "1d"), []string{"clients[0].grace_period", "write 24h for a day"}},
		{"list as duration", "vault: {timeout: [30s]}\n" + minimal, []string{"vault.timeout: must be a duration"}},
		{"clients mapping", "clients: {}\n", []string{"clients: must be a list, got a mapping (line 1)"}},
		{"client scalar", "clients: [prod]\n", []string{`clients[0]: must be a mapping of keys, got "prod"`}},
		{"block scalar", "log: info\n" + minimal, []string{`log: must be a mapping of keys, got "info" (line 1)`}},
		{"string list", "listen: [\":1\"]\n" + minimal, []string{"listen: must be a string, got a list"}},
		{"bool", withClient("bootstrap: \"yes\""), []string{`clients[0].bootstrap: must be true or false, got "yes"`}},
		{"int", "rotation: {max_concurrent: ten}\n" + minimal, []string{"rotation.max_concurrent: must be a whole number"}},
		{"int fraction", "rotation: {max_concurrent: 1.5}\n" + minimal, []string{"rotation.max_concurrent: must be a whole number"}},
		{"int overflow", "rotation: {max_concurrent: 99999999999999999999}\n" + minimal, []string{"rotation.max_concurrent: must be a whole number"}},
		{"float", "affix: {rate_limit: fast}\n" + minimal, []string{"affix.rate_limit: must be a number"}},
		{"redirect_uris string", withClient("app: {redirect_uris: \"https://x.example\"}"), []string{"clients[0].app.redirect_uris: must be a list"}},
		{"webhook type", withClient("app: {webhook_uri: [1]}"), []string{"clients[0].app.webhook_uri: must be a string or null"}},
		{"webhook number", withClient("app: {webhook_uri: 5}"), []string{"clients[0].app.webhook_uri: must be a string or null"}},

		// Top level, log, vault.
		{"bad listen", "listen: nope\n" + minimal, []string{"listen:"}},
		{"bad port", "listen: \":99999\"\n" + minimal, []string{"listen:", "65535"}},
		{"instance id with space", "instance_id: \"a b\"\n" + minimal, []string{"instance_id:"}},
		{"bad log level", "log: {level: loud}\n" + minimal, []string{`log.level: "loud" is not one of`}},
		{"bad log format", "log: {format: xml}\n" + minimal, []string{"log.format:"}},
		{"kv_mount slashes", "vault: {kv_mount: /secret/}\n" + minimal, []string{"vault.kv_mount:"}},
		{"vault address", "vault: {address: \"vault:8200\"}\n" + minimal, []string{"vault.address:"}},
		{"vault zero timeout", "vault: {timeout: 0}\n" + minimal, []string{"vault.timeout: must be positive"}},
		{"bad method", "vault: {auth: {method: magic}}\n" + minimal, []string{`vault.auth.method: "magic" is not one of token, approle, kubernetes`}},
		{"token env and file", "vault: {auth: {token_env: T, token_file: /f}}\n" + minimal, []string{"vault.auth.token_file: give token_env or token_file, not both"}},
		{"token env not a name", "vault: {auth: {token_env: \"hvs.abc def\"}}\n" + minimal, []string{"vault.auth.token_env:", "not an environment variable name"}},
		{"approle without block", "vault: {auth: {method: approle}}\n" + minimal, []string{"vault.auth.approle: required with method approle"}},
		{"approle without secret id", approle("{role_id: r}"), []string{"vault.auth.approle.secret_id_file: required"}},
		{"approle two secret ids", approle("{role_id: r, secret_id_env: S, secret_id_file: /f}"), []string{"vault.auth.approle.secret_id_env: give secret_id_file or secret_id_env, not both"}},
		{"approle without role id", approle("{secret_id_env: S}"), []string{"vault.auth.approle.role_id: required"}},
		{"approle with token_env", "vault: {auth: {method: approle, token_env: VAULT_TOKEN, approle: {role_id: r, secret_id_env: S}}}\n" + minimal, []string{"vault.auth.token_env: only for method token"}},
		{"kubernetes without block", "vault: {auth: {method: kubernetes}}\n" + minimal, []string{"vault.auth.kubernetes: required"}},
		{"kubernetes without role", "vault: {auth: {method: kubernetes, kubernetes: {mount: k8s}}}\n" + minimal, []string{"vault.auth.kubernetes.role: required"}},
		{"block for another method", "vault: {auth: {method: token, kubernetes: {role: r}}}\n" + minimal, []string{"vault.auth.kubernetes: given, but method is \"token\""}},
		{"approle block with kubernetes", "vault: {auth: {method: kubernetes, kubernetes: {role: r}, approle: {role_id: r, secret_id_env: S}}}\n" + minimal, []string{"vault.auth.approle: given"}},

		// Affix.
		{"bad base url scheme", "affix: {base_url: \"ftp://x\"}\n" + minimal, []string{"affix.base_url:", "http:// or https://"}},
		{"relative base url", "affix: {base_url: \"api.affixapi.com\"}\n" + minimal, []string{"affix.base_url:"}},
		{"base url query", "affix: {base_url: \"https://x.example/?token=hunter2\"}\n" + minimal, []string{"affix.base_url:", "query"}},
		{"base url fragment", "affix: {base_url: \"https://x.example/#f\"}\n" + minimal, []string{"affix.base_url:", "fragment"}},
		{"credentials in url", "affix: {base_url: \"https://u:pw@x.example\"}\n" + minimal, []string{"affix.base_url: must not hold credentials"}},
		{"api key env and file", "affix: {api_key_env: K, api_key_file: /f}\n" + minimal, []string{"affix.api_key_file: give api_key_env or api_key_file"}},
		{"api key env holds a key", "affix: {api_key_env: \"sk-123-456\"}\n" + minimal, []string{"affix.api_key_env:", "not an environment variable name"}},
		{"long value of the wrong type", "affix: {burst: sk_live_0123456789abcdef0123}\n" + minimal, []string{"affix.burst: must be a whole number, got a value of 28 characters"}},
		{"affix zero timeout", "affix: {timeout: 0s}\n" + minimal, []string{"affix.timeout: must be positive"}},
		{"negative rate", "affix: {rate_limit: -1}\n" + minimal, []string{"affix.rate_limit:"}},
		{"nan rate", "affix: {rate_limit: .nan}\n" + minimal, []string{"affix.rate_limit:"}},
		{"zero burst", "affix: {rate_limit: 1, burst: 0}\n" + minimal, []string{"affix.burst:"}},

		// Rotation.
		{"short lease", "rotation: {lease_duration: 5s}\n" + minimal, []string{"rotation.lease_duration: must be at least 30s"}},
		{"zero retry", "rotation: {retry_initial: 0}\n" + minimal, []string{"rotation.retry_initial: must be positive"}},
		{"retry max below initial", "rotation: {retry_initial: 10s, retry_max: 1s}\n" + minimal, []string{"rotation.retry_max:"}},
		{"zero concurrency", "rotation: {max_concurrent: 0}\n" + minimal, []string{"rotation.max_concurrent: must be at least 1"}},
		{"negative reconcile", "rotation: {reconcile_interval: -1m}\n" + minimal, []string{"rotation.reconcile_interval: must not be negative, got -1m (0 disables it) (line 1)"}},
		{"reconcile not a duration", "rotation: {reconcile_interval: 1d}\n" + minimal, []string{"rotation.reconcile_interval:", "write 24h for a day"}},
		{"zero reread", "rotation: {reread_interval: 0}\n" + minimal, []string{"rotation.reread_interval: must be positive, got 0 (line 1)"}},
		{"negative reread", "rotation: {reread_interval: -5s}\n" + minimal, []string{"rotation.reread_interval: must be positive"}},
		{"reread not a duration", "rotation: {reread_interval: 30}\n" + minimal, []string{`rotation.reread_interval: "30" is not a duration`}},
		{"negative clock skew", "rotation: {clock_skew_margin: -30s}\n" + minimal, []string{"rotation.clock_skew_margin: must not be negative, got -30s"}},
		{"clock skew list", "rotation: {clock_skew_margin: [30s]}\n" + minimal, []string{"rotation.clock_skew_margin: must be a duration"}},

		// Clients.
		{"no clients key", "listen: \":1\"\n", []string{"clients: at least one client is required"}},
		{"empty clients", "clients: []\n", []string{"clients: at least one client is required"}},
		{"missing name", replaceOnce(t, minimal, "  - name: prod\n    ", "  - "), []string{"clients[0].name: required"}},
		{"bad name", replaceOnce(t, minimal, "name: prod", "name: \"pr od\""), []string{"clients[0].name:"}},
		{"long name", replaceOnce(t, minimal, "name: prod", "name: "+strings.Repeat("a", 65)), []string{"clients[0].name:"}},
		{"duplicate names", minimal + "  - {name: x, vault_path: a/x, schedule: \"@daily\", grace_period: 1h}\n  - {name: prod, vault_path: a/b, schedule: \"@daily\", grace_period: 1h}\n",
			[]string{`clients[2].name: duplicate "prod" (also clients[0])`}},
		{"duplicate vault paths", minimal + "  - {name: p2, vault_path: affix/prod, schedule: \"@daily\", grace_period: 1h}\n", []string{`clients[1].vault_path: duplicate "affix/prod" (also clients[0])`}},
		{"missing vault path", replaceOnce(t, minimal, "    vault_path: affix/prod\n", ""), []string{"clients[0].vault_path: required"}},
		{"absolute vault path", replaceOnce(t, minimal, "affix/prod", "/affix/prod"), []string{"clients[0].vault_path:"}},
		{"dotdot vault path", replaceOnce(t, minimal, "affix/prod", "affix/../x"), []string{"clients[0].vault_path:", ".."}},
		{"space in vault path", replaceOnce(t, minimal, "affix/prod", "\"affix/pr od\""), []string{"clients[0].vault_path:", "whitespace"}},
		{"api vault path", replaceOnce(t, minimal, "affix/prod", "data/affix/prod"), []string{"clients[0].vault_path:", "data/", `write "affix/prod"`}},
		{"metadata vault path", replaceOnce(t, minimal, "affix/prod", "metadata/affix/prod"), []string{"clients[0].vault_path:", "metadata/", `write "affix/prod"`}},
		{"missing schedule", replaceOnce(t, minimal, "    schedule: \"@every 720h\"\n", ""), []string{"clients[0].schedule: required"}},
		{"bad cron", replaceOnce(t, minimal, "@every 720h", "@evry 720h"), []string{`clients[0].schedule: invalid cron spec "@evry 720h"`}},
		{"six fields", replaceOnce(t, minimal, "@every 720h", "0 0 3 * * *"), []string{"clients[0].schedule: invalid cron spec"}},
		{"bad time zone", replaceOnce(t, minimal, "@every 720h", "CRON_TZ=Mars/Olympus 0 3 * * *"), []string{"clients[0].schedule: invalid cron spec"}},
		{"missing grace", replaceOnce(t, minimal, "    grace_period: 24h\n", ""), []string{"clients[0].grace_period: required"}},
		{"negative grace", replaceOnce(t, minimal, "24h", "-1h"), []string{"clients[0].grace_period: must be positive, got -1h (line 5)"}},
		{"zero grace", replaceOnce(t, minimal, "24h", "0"), []string{"clients[0].grace_period: must be positive"}},
		{"negative jitter", withClient("jitter: -1s"), []string{"clients[0].jitter: must not be negative"}},
		{"negative max_age", withClient("max_age: -1h"), []string{"clients[0].max_age: must not be negative"}},
		{"max_age below grace", withClient("max_age: 1h"), []string{"clients[0].max_age:", "longer than grace_period"}},
		{"max_age equal to grace", withClient("max_age: 24h"), []string{"clients[0].max_age:"}},
		{"grace below consumers.max_refresh", withClient("consumers: {max_refresh: 36h}"), []string{
			`clients[0].grace_period: 24h does not exceed consumers.max_refresh (36h): grace_period must exceed the slowest consumer's refresh interval plus its restart time`, "(line 5)"}},
		{"grace equal to consumers.max_refresh", withClient("consumers:", "  max_refresh: 24h"), []string{"clients[0].grace_period", "does not exceed consumers.max_refresh (24h)"}},
		{"negative consumers.max_refresh", withClient("consumers: {max_refresh: -5m}"), []string{"clients[0].consumers.max_refresh", "must not be negative, got -5m"}},
		{"consumers.max_refresh not a duration", withClient("consumers: {max_refresh: 5 minutes}"), []string{"clients[0].consumers.max_refresh", "not a duration"}},
		{"unknown key under consumers", withClient("consumers: {max_refesh: 5m}"), []string{"clients[0].consumers.max_refesh: unknown key", `did you mean "max_refresh"`}},
		{"override base url", withClient("affix: {base_url: \"not a url\"}"), []string{"clients[0].affix.base_url:"}},
		{"override env and file", withClient("affix: {api_key_env: K, api_key_file: /f}"), []string{"clients[0].affix.api_key_file: give api_key_env or api_key_file"}},
		{"override negative timeout", withClient("affix: {timeout: -1s}"), []string{"clients[0].affix.timeout:"}},
		{"empty app name", withClient("app: {name: \"\"}"), []string{"clients[0].app.name:"}},
		{"relative redirect", withClient("app: {redirect_uris: [\"https://ok.example/cb\", \"/callback\"]}"), []string{"clients[0].app.redirect_uris[1]:", "not an absolute URL"}},
		{"redirect with fragment", withClient("app: {redirect_uris: [\"https://ok.example/cb#x\"]}"), []string{"clients[0].app.redirect_uris[0]:", "fragment"}},
		{"bad webhook", withClient("app: {webhook_uri: \"hooks.example/x\"}"), []string{"clients[0].app.webhook_uri:"}},

		// Aliases that never end.
		{"alias cycle", "clients: &c [*c]\n", []string{"clients[0]: must be a mapping of keys, got a list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "t.yaml")
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if c != nil {
				t.Fatal("a config returned with an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(plain(err), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			for _, leak := range []string{"sk-123-456", "sk_live_", "hunter2", "pw@"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("message echoes %q:\n%v", leak, err)
				}
			}
			for _, e := range allErrors(err) {
				var ce *Error
				if !errors.As(e, &ce) {
					t.Errorf("not a *config.Error: %T %v", e, e)
				}
			}
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	y := "log: {level: loud}\nvault: {kv_mout: x}\nclients:\n  - {name: a, schedule: nope, grace_period: -1s}\n  - {name: a, vault_path: /x, schedule: \"@daily\", grace_period: 1h, max_age: 1h}\n"
	_, err := Parse([]byte(y), "t")
	if err == nil {
		t.Fatal("accepted")
	}
	errs := allErrors(err)
	want := []string{
		"vault.kv_mout: unknown key (line 2)",
		"log.level:",
		"clients[0].vault_path: required",
		"clients[0].schedule: invalid cron spec",
		"clients[0].grace_period: must be positive",
		`clients[1].name: duplicate "a" (also clients[0])`,
		"clients[1].vault_path:",
		"clients[1].max_age:",
		"clients[1].affix: same base_url and API key (api_key_env AFFIX_API_KEY) as clients[0]",
	}
	for _, w := range want {
		if !strings.Contains(plain(err), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("want %d problems, got %d:\n%v", len(want), len(errs), err)
	}
}

// TestTypeErrorsAreNotRepeated: a value of the wrong type is reported once,
// not also as missing or invalid.
func TestTypeErrorsAreNotRepeated(t *testing.T) {
	for _, y := range []string{
		replaceOnce(t, minimal, "24h", "5"),
		"clients: {}\n",
		"clients: [prod]\n",
		"rotation: [1]\n" + minimal,
	} {
		_, err := Parse([]byte(y), "t")
		if n := len(allErrors(err)); n != 1 {
			t.Errorf("%q: want 1 problem, got %d:\n%v", y, n, err)
		}
	}
}

// TestIndicesSurviveTypeErrors: a list element of the wrong type does not
// shift the indices named in the messages about the elements after it.
func TestIndicesSurviveTypeErrors(t *testing.T) {
	y := "clients:\n  - prod\n  - {name: b, vault_path: a/b, schedule: nope, grace_period: 1h, app: {redirect_uris: [[1], \"/rel\"]}, affix: {api_key_env: KEY_B}}\n"
	_, err := Parse([]byte(y), "t")
	for _, w := range []string{
		`clients[0]: must be a mapping of keys, got "prod"`,
		"clients[1].schedule: invalid cron spec",
		"clients[1].app.redirect_uris[0]: must be a string, got a list",
		`clients[1].app.redirect_uris[1]: "/rel" is not an absolute URL`,
	} {
		if err == nil || !strings.Contains(plain(err), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	if n := len(allErrors(err)); n != 4 {
		t.Errorf("want 4 problems, got %d:\n%v", n, err)
	}
}

// TestYAMLNullSkipsUnmarshaler records the yaml.v3 behaviour that App's
// UnmarshalYAML works around: for an explicit null, yaml.v3 zeroes the
// field without calling the field type's UnmarshalYAML. If a future yaml.v3
// calls it, App's workaround is merely redundant.
func TestYAMLNullSkipsUnmarshaler(t *testing.T) {
	var v struct {
		W OptionalString `yaml:"w"`
	}
	if err := yaml.Unmarshal([]byte("w: null\n"), &v); err != nil {
		t.Fatal(err)
	}
	t.Logf("yaml.v3 decodes `w: null` into a bare OptionalString as %+v (UnmarshalYAML called: %v)", v.W, v.W.Set)
}

func TestWebhookURI(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       OptionalString
	}{
		{"unset", minimal, OptionalString{}},
		{"app without webhook", withClient("app: {name: n}"), OptionalString{}},
		{"null", withClient("app:", "  webhook_uri: null"), OptionalString{Set: true, Null: true}},
		{"tilde", withClient("app: {webhook_uri: ~}"), OptionalString{Set: true, Null: true}},
		{"empty value", withClient("app:", "  webhook_uri:"), OptionalString{Set: true, Null: true}},
		{"string", withClient("app: {webhook_uri: \"https://h.example/x\"}"), OptionalString{Set: true, Value: "https://h.example/x"}},
		{"quoted null is a string", withClient("app: {webhook_uri: \"null\"}"), OptionalString{}}, // not a URL: rejected below
		{"alias to null", "x: &nothing null\n" + withClient("app: {webhook_uri: *nothing}"), OptionalString{}},
		{"merged null", minimal + "  - name: b\n    vault_path: a/b\n    schedule: \"@daily\"\n    grace_period: 1h\n    affix: {api_key_env: KEY_B}\n    app:\n      <<: {webhook_uri: null}\n      name: B\n", OptionalString{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "t")
			switch tc.name {
			case "quoted null is a string":
				if err == nil || !strings.Contains(err.Error(), "clients[0].app.webhook_uri") {
					t.Fatalf("\"null\" accepted as a URL: %v", err)
				}
				return
			case "alias to null":
				// x is not a config key; check the alias through the decoder alone.
				if err == nil || !strings.Contains(err.Error(), "x: unknown key") {
					t.Fatalf("err %v", err)
				}
				var a struct {
					App App `yaml:"app"`
				}
				if err := yaml.Unmarshal([]byte("n: &nothing null\napp: {webhook_uri: *nothing}\n"), &a); err != nil {
					t.Fatal(err)
				}
				if a.App.WebhookURI != (OptionalString{Set: true, Null: true}) {
					t.Fatalf("alias to null: %+v", a.App.WebhookURI)
				}
				return
			case "merged null":
				if err != nil {
					t.Fatal(err)
				}
				if w := c.Clients[1].App.WebhookURI; w != (OptionalString{Set: true, Null: true}) || *c.Clients[1].App.Name != "B" {
					t.Fatalf("merged: %+v", c.Clients[1].App)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Clients[0].App.WebhookURI; got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAppFields(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(App) bool
	}{
		{"nothing set", minimal, func(a App) bool { return a.Name == nil && a.RedirectURIs == nil && !a.WebhookURI.Set }},
		{"name", withClient("app: {name: \"Your App\"}"), func(a App) bool { return a.Name != nil && *a.Name == "Your App" }},
		{"empty redirect list is set", withClient("app: {redirect_uris: []}"), func(a App) bool { return a.RedirectURIs != nil && len(a.RedirectURIs) == 0 }},
		{"null redirect list is unset", withClient("app: {redirect_uris: null}"), func(a App) bool { return a.RedirectURIs == nil }},
		{"redirect list", withClient("app: {redirect_uris: [\"https://app.example/cb\", \"com.example.app:/oauth\"]}"), func(a App) bool {
			return reflect.DeepEqual(a.RedirectURIs, []string{"https://app.example/cb", "com.example.app:/oauth"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "t")
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c.Clients[0].App) {
				t.Fatalf("app: %+v", c.Clients[0].App)
			}
		})
	}
}

func TestAffixFor(t *testing.T) {
	top := Affix{BaseURL: "https://api.affixapi.com", APIKeyEnv: "AFFIX_API_KEY", Timeout: Duration(30 * time.Second), RateLimit: 2, Burst: 3}
	topFile := top
	topFile.APIKeyEnv, topFile.APIKeyFile = "", "/run/key"
	for _, tc := range []struct {
		name     string
		top      Affix
		override AffixOverride
		want     Affix
	}{
		{"no override", top, AffixOverride{}, top},
		{"base url", top, AffixOverride{BaseURL: "https://dev.api.affixapi.com"},
			Affix{BaseURL: "https://dev.api.affixapi.com", APIKeyEnv: "AFFIX_API_KEY", Timeout: Duration(30 * time.Second), RateLimit: 2, Burst: 3}},
		{"timeout", top, AffixOverride{Timeout: Duration(time.Second)},
			Affix{BaseURL: "https://api.affixapi.com", APIKeyEnv: "AFFIX_API_KEY", Timeout: Duration(time.Second), RateLimit: 2, Burst: 3}},
		{"env replaces env", top, AffixOverride{APIKeyEnv: "OTHER"},
			Affix{BaseURL: "https://api.affixapi.com", APIKeyEnv: "OTHER", Timeout: Duration(30 * time.Second), RateLimit: 2, Burst: 3}},
		{"file clears inherited env", top, AffixOverride{APIKeyFile: "/run/staging"},
			Affix{BaseURL: "https://api.affixapi.com", APIKeyFile: "/run/staging", Timeout: Duration(30 * time.Second), RateLimit: 2, Burst: 3}},
		{"env clears inherited file", topFile, AffixOverride{APIKeyEnv: "STAGING"},
			Affix{BaseURL: "https://api.affixapi.com", APIKeyEnv: "STAGING", Timeout: Duration(30 * time.Second), RateLimit: 2, Burst: 3}},
		{"everything", topFile, AffixOverride{BaseURL: "http://127.0.0.1:8080", APIKeyEnv: "K", Timeout: Duration(time.Minute)},
			Affix{BaseURL: "http://127.0.0.1:8080", APIKeyEnv: "K", Timeout: Duration(time.Minute), RateLimit: 2, Burst: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{Affix: tc.top}
			if got := c.AffixFor(Client{Affix: tc.override}); got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestAffixForParsed(t *testing.T) {
	y := "affix: {api_key_env: MAIN_KEY, timeout: 10s}\n" + withClient("affix: {base_url: \"https://dev.api.affixapi.com\", api_key_file: /run/staging-key}")
	c, err := Parse([]byte(y), "t")
	if err != nil {
		t.Fatal(err)
	}
	a := c.AffixFor(c.Clients[0])
	if a.BaseURL != "https://dev.api.affixapi.com" || a.APIKeyEnv != "" || a.APIKeyFile != "/run/staging-key" || a.Timeout.D() != 10*time.Second {
		t.Fatalf("merged: %+v", a)
	}
}

func TestAPIKey(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const secretMark = "SeCrEt"
	env := map[string]string{
		"GOOD":      "key-" + secretMark,
		"NEWLINE":   "key-" + secretMark + "\n",
		"TWO_LINES": "key-" + secretMark + "\nsecond-" + secretMark,
		"TAB":       "key-\t" + secretMark,
		"SPACES":    " key-" + secretMark,
		"EMPTY":     "",
	}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name string
		a    Affix
		want string // the key, when it is valid
		err  string // what the error must contain otherwise
	}{
		{"env", Affix{APIKeyEnv: "GOOD"}, "key-" + secretMark, ""},
		{"file with newline", Affix{APIKeyFile: file("nl", "key-"+secretMark+"\n")}, "key-" + secretMark, ""},
		{"file with crlf", Affix{APIKeyFile: file("crlf", "key-"+secretMark+"\r\n")}, "key-" + secretMark, ""},
		{"file without newline", Affix{APIKeyFile: file("bare", "key-"+secretMark)}, "key-" + secretMark, ""},
		{"file wins over env", Affix{APIKeyFile: file("both", "from-file-"+secretMark+"\n"), APIKeyEnv: "GOOD"}, "from-file-" + secretMark, ""},
		{"missing env", Affix{APIKeyEnv: "AFFIX_API_KEY"}, "", "affix.api_key_env: environment variable AFFIX_API_KEY is empty"},
		{"empty env", Affix{APIKeyEnv: "EMPTY"}, "", "affix.api_key_env: environment variable EMPTY is empty"},
		{"env with newline", Affix{APIKeyEnv: "NEWLINE"}, "", "affix.api_key_env: the API key in environment variable NEWLINE holds a control character"},
		{"env with two lines", Affix{APIKeyEnv: "TWO_LINES"}, "", "affix.api_key_env:"},
		{"env with tab", Affix{APIKeyEnv: "TAB"}, "", "affix.api_key_env:"},
		{"env with spaces", Affix{APIKeyEnv: "SPACES"}, "", "affix.api_key_env:"},
		{"file with two lines", Affix{APIKeyFile: file("two", "key-"+secretMark+"\nmore-"+secretMark+"\n")}, "", "affix.api_key_file:"},
		{"file with two newlines", Affix{APIKeyFile: file("twonl", "key-"+secretMark+"\n\n")}, "", "affix.api_key_file:"},
		{"file with lone cr", Affix{APIKeyFile: file("cr", "key-"+secretMark+"\r")}, "", "affix.api_key_file:"},
		{"empty file", Affix{APIKeyFile: file("empty", "\n")}, "", "affix.api_key_file:"},
		{"missing file", Affix{APIKeyFile: filepath.Join(dir, "nope")}, "", "affix.api_key_file:"},
		{"huge file", Affix{APIKeyFile: file("huge", strings.Repeat(secretMark, 20000))}, "", "affix.api_key_file:"},
		{"nothing configured", Affix{}, "", "neither api_key_env nor api_key_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := tc.a.APIKey(getenv)
			if tc.err == "" {
				if err != nil || k.Reveal() != tc.want {
					t.Fatalf("got %q, %v; want %q", k.Reveal(), err, tc.want)
				}
				if s := fmt.Sprint(k); strings.Contains(s, secretMark) {
					t.Fatalf("key prints as %q", s)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %q", k.Reveal())
			}
			if !k.IsZero() {
				t.Fatal("a key returned with an error")
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error does not contain %q: %v", tc.err, err)
			}
			if strings.Contains(err.Error(), secretMark) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), secretMark) {
				t.Fatalf("error leaks the value: %v", err)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("not a *config.Error: %T", err)
			}
		})
	}
}

func TestParseSchedule(t *testing.T) {
	for _, spec := range []string{"@every 720h", "@daily", "@monthly", "0 3 * * 1", "*/15 * * * *", "CRON_TZ=Europe/Paris 0 3 1 * *", "TZ=UTC 0 3 * * *"} {
		if _, err := ParseSchedule(spec); err != nil {
			t.Errorf("%s: %v", spec, err)
		}
	}
	for _, spec := range []string{"", "@evry 1h", "* * * * * *", "61 * * * *", "@every", "CRON_TZ=Nowhere/City 0 3 * * *"} {
		if _, err := ParseSchedule(spec); err == nil {
			t.Errorf("%q accepted", spec)
		}
	}
	s, err := ParseSchedule("CRON_TZ=Europe/Paris 0 3 * * *")
	if err != nil {
		t.Fatal(err)
	}
	next := s.Next(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if want := time.Date(2025, 1, 1, 2, 0, 0, 0, time.UTC); !next.Equal(want) {
		t.Fatalf("next %v, want %v (03:00 Paris)", next, want)
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"30s", 30 * time.Second, false},
		{"720h", 720 * time.Hour, false},
		{"1h30m", 90 * time.Minute, false},
		{"0", 0, false},
		{"-5m", -5 * time.Minute, false},
		{"5", 0, true},
		{"1d", 0, true},
		{"soon", 0, true},
		{"[1s]", 0, true},
		{"{a: 1}", 0, true},
	} {
		var v struct {
			D Duration `yaml:"d"`
		}
		err := yaml.Unmarshal([]byte("d: "+tc.in+"\n"), &v)
		if (err != nil) != tc.err || (!tc.err && v.D.D() != tc.want) {
			t.Errorf("%s: got %v, %v", tc.in, v.D.D(), err)
		}
		if tc.err && (err == nil || !strings.Contains(err.Error(), "line 1")) {
			t.Errorf("%s: error does not give the line: %v", tc.in, err)
		}
	}
	out, err := yaml.Marshal(struct {
		D Duration `yaml:"d"`
	}{Duration(90 * time.Second)})
	if err != nil || string(out) != "d: 1m30s\n" {
		t.Fatalf("marshal: %q %v", out, err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(p); err != nil || c.Clients[0].Name != "prod" {
		t.Fatalf("load: %v", err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p+": the file is empty") {
		t.Fatalf("empty file: %v", err)
	}
}

// TestAliasExpansionIsBounded: a document whose aliases expand to a huge
// tree is rejected with bounded work (bytes allocated, not wall time)
// instead of hanging the loader.
func TestAliasExpansionIsBounded(t *testing.T) {
	// Wide: 1,000 aliases of a client holding an alias of 500 URIs.
	var wide strings.Builder
	wide.WriteString("u: &u [")
	for i := 0; i < 500; i++ {
		wide.WriteString(`"https://a.example",`)
	}
	wide.WriteString("]\nclients:\n")
	wide.WriteString("  - &c {name: c, vault_path: a/c, schedule: \"@daily\", grace_period: 1h, app: {redirect_uris: *u}}\n")
	for i := 0; i < 1000; i++ {
		wide.WriteString("  - *c\n")
	}
	// Deep: nine levels of ten aliases each ("billion laughs", 10^9 nodes).
	var deep strings.Builder
	deep.WriteString("a0: &a0 [\"x\"]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&deep, "a%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d,", i-1), 10), ","))
	}
	deep.WriteString("clients: *a9\n")
	// The bound is on work (bytes allocated), not on time, so that a loaded
	// machine cannot fail it: the wide document allocates about 85 MB; an
	// unbounded expansion of either allocates orders of magnitude more.
	// The timeout only keeps a hang from blocking the suite.
	// Under the race detector every allocation costs more: allocScale.
	const maxAlloc = allocScale * 512 << 20
	for name, doc := range map[string]string{"wide": wide.String(), "deep": deep.String()} {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			go func() { _, err := Parse([]byte(doc), "t"); done <- err }()
			select {
			case err := <-done:
				runtime.ReadMemStats(&after)
				if err == nil {
					t.Fatal("accepted")
				}
				if n := after.TotalAlloc - before.TotalAlloc; n > maxAlloc {
					t.Fatalf("Parse of a %d-byte document allocated %d MB (limit %d MB): the expansion is not bounded", len(doc), n>>20, maxAlloc>>20)
				}
			case <-time.After(5 * time.Minute):
				t.Fatal("Parse did not return")
			}
		})
	}
}

func TestMergeKeys(t *testing.T) {
	base := "  - &a {name: a, vault_path: affix/a, schedule: \"@daily\"}\n  - &g {grace_period: 2h}\n"
	c, err := Parse([]byte("clients:\n  - <<: [{name: a, vault_path: affix/a}, {schedule: \"@daily\", grace_period: 2h}]\n    jitter: 1m\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	if cl := c.Clients[0]; cl.Name != "a" || cl.Schedule != "@daily" || cl.GracePeriod.D() != 2*time.Hour || cl.Jitter.D() != time.Minute {
		t.Fatalf("merged list: %+v", cl)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"merge of a scalar", "clients:\n  - <<: 5\n    name: x\n", "clients[0]: << must merge a mapping, got the number 5"},
		{"merge of a list of scalars", "clients:\n  - <<: [5]\n    name: x\n", "clients[0]: << must merge mappings"},
		{"unknown key in a merged anchor", "clients:\n" + base + "  - <<: [*a, *g]\n    nme: b\n", "clients[2].nme: unknown key (line 5)"},
		{"bad type in a merged anchor", "clients:\n  - &x {name: x, vault_path: a/x, schedule: \"@daily\", grace_period: 5}\n", `clients[0].grace_period: "5" is not a duration`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "t")
			if err == nil || !strings.Contains(plain(err), tc.want) {
				t.Fatalf("want %q in:\n%v", tc.want, err)
			}
		})
	}
}

// TestTranslateYAMLErrors: should yaml's strict decoder ever reject what
// the walker let through, its messages still name the key on their line.
func TestTranslateYAMLErrors(t *testing.T) {
	w := newWalker()
	w.note(3, "vault")
	w.note(4, "vault.kv_mount")
	w.note(5, "clients[0].app.name")
	w.note(5, "clients[0].app.redirect_uris") // flow style: two keys on a line
	errs := w.translate(&yaml.TypeError{Errors: []string{
		"line 4: field kv_mout not found in type config.Vault",
		"line 5: cannot unmarshal !!seq into string",
		"line 9: something",
		"no line",
	}}, "c.yaml")
	var got []string
	for _, e := range errs {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Fatalf("%T", e)
		}
		got = append(got, e.Error())
	}
	want := []string{
		"vault.kv_mount: field kv_mout not found in type config.Vault (line 4)",
		"clients[0].app: cannot unmarshal !!seq into string (line 5)",
		"c.yaml: something (line 9)",
		"c.yaml: no line",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if e := w.translate(errors.New("yaml: boom"), "c.yaml"); e[0].Error() != "c.yaml: boom" {
		t.Fatal(e[0])
	}
}

func TestVaultAddress(t *testing.T) {
	for addr, ok := range map[string]bool{
		"https://vault.example:8200":         true,
		"http://127.0.0.1:8200":              true,
		"unix:///run/vault-agent.sock":       true,
		"unix://":                            false,
		"vault.example:8200":                 false,
		"https://":                           false,
		"https://vault.example:8200/?x=1":    false,
		"https://root:hunter2@vault.example": false,
	} {
		_, err := Parse([]byte("vault: {address: \""+addr+"\"}\n"+minimal), "t")
		if (err == nil) != ok {
			t.Errorf("%s: %v", addr, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("message echoes a password: %v", err)
		}
	}
}

// TestErrorFormat pins the message shape other packages and the docs rely on.
func TestErrorFormat(t *testing.T) {
	e := &Error{Key: "clients[1].schedule", Problem: `invalid cron spec "@evry 1h": boom`}
	if e.Error() != `clients[1].schedule: invalid cron spec "@evry 1h": boom` {
		t.Fatal(e.Error())
	}
}

// TestClientsNeedTheirOwnAPIKey: the API key selects the Affix client, so
// two clients that read their key from the same place (and have the same
// base_url) are refused, naming the key and the other client.
func TestClientsNeedTheirOwnAPIKey(t *testing.T) {
	second := func(extra string) string {
		return minimal + "  - name: b\n    vault_path: affix/b\n    schedule: \"@daily\"\n    grace_period: 1h\n" + extra
	}
	for _, tc := range []struct {
		name, yaml, err string
	}{
		{"both on the top-level key", second(""), "clients[1].affix: same base_url and API key (api_key_env AFFIX_API_KEY) as clients[0]"},
		{"the same variable again", second("    affix: {api_key_env: AFFIX_API_KEY}\n"), "clients[1].affix: same base_url"},
		{"the same file", "affix: {api_key_file: /run/k}\n" + second("    affix: {api_key_file: /run/k}\n"), "clients[1].affix: same base_url and API key (api_key_file /run/k)"},
		{"the same base_url with a trailing slash", "affix: {base_url: \"https://a.example\"}\n" + second("    affix: {base_url: \"https://a.example/\"}\n"), "clients[1].affix: same base_url"},
		{"own variable", second("    affix: {api_key_env: KEY_B}\n"), ""},
		{"own file", second("    affix: {api_key_file: /run/kb}\n"), ""},
		{"another Affix server", second("    affix: {base_url: \"https://dev.api.affixapi.com\"}\n"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "t")
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(plain(err), tc.err)):
				t.Fatalf("want %q, got %v", tc.err, err)
			}
		})
	}
}

// TestVaultPathAPIPaste: a vault_path pasted from a KV v2 API path (with the
// mount, or a data/ or metadata/ segment) is refused, naming the key,
// explaining the mistake and giving the path to write instead.
func TestVaultPathAPIPaste(t *testing.T) {
	for _, tc := range []struct {
		name, mount, path string
		want              []string
	}{
		{"mount and data", "", "secret/data/affix/prod", []string{`"secret/data/affix/prod" holds a data/ segment`, "KV v2 API path", "relative to vault.kv_mount", `write "affix/prod"`}},
		{"mount and metadata", "", "secret/metadata/affix/prod", []string{"metadata/ segment", `write "affix/prod"`}},
		{"mount only", "", "secret/affix/prod", []string{`"secret/affix/prod" starts with the KV mount "secret/"`, `write "affix/prod"`}},
		{"data first", "", "data/affix/prod", []string{"data/ segment", `write "affix/prod"`}},
		{"metadata first", "", "metadata/affix/prod", []string{"metadata/ segment", `write "affix/prod"`}},
		{"metadata inside", "", "affix/metadata/x", []string{"metadata/ segment", `write "x"`, `set vault.kv_mount: "affix"`}},
		{"another mount", "", "kv/data/affix/prod", []string{"data/ segment", `write "affix/prod"`, `set vault.kv_mount: "kv"`}},
		{"custom mount", "kv/team", "kv/team/data/affix/prod", []string{"data/ segment", `("kv/team")`, `write "affix/prod"`}},
		{"custom mount only", "kv/team", "kv/team/affix/prod", []string{`starts with the KV mount "kv/team/"`, `write "affix/prod"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := replaceOnce(t, minimal, "affix/prod", tc.path)
			if tc.mount != "" {
				y = "vault: {kv_mount: " + tc.mount + "}\n" + y
			}
			c, err := Parse([]byte(y), "t.yaml")
			if err == nil {
				t.Fatalf("accepted: %+v", c.Clients[0])
			}
			errs := allErrors(err)
			if len(errs) != 1 {
				t.Fatalf("want one problem, got %d:\n%v", len(errs), err)
			}
			var ce *Error
			if !errors.As(errs[0], &ce) || ce.Key != "clients[0].vault_path" {
				t.Fatalf("want an error for clients[0].vault_path, got %T %v", errs[0], errs[0])
			}
			for _, w := range tc.want {
				if !strings.Contains(ce.Problem, w) {
					t.Errorf("problem does not contain %q:\n%s", w, ce.Problem)
				}
			}
		})
	}
}

var clientNoteRE = regexp.MustCompile(` \(client "[^"]*"\)`)

// plain is err's message without the client names that follow clients[i]
// keys (`clients[0].x (client "prod"): …` becomes `clients[0].x: …`), for
// the tests written before the names were added; TestKeyFormat checks
// the names themselves.
func plain(err error) string {
	if err == nil {
		return ""
	}
	return clientNoteRE.ReplaceAllString(err.Error(), "")
}

// TestErrorFormat: every message names its key in one format, with the
// client's name, the line, and a duration as the file wrote it.
func TestKeyFormat(t *testing.T) {
	y := "clients:\n  - name: prod\n    vault_path: affix/prod\n    schedule: \"@daily\"\n    grace_period: -1h\n    jitter: -90m\n"
	_, err := Parse([]byte(y), "t.yaml")
	for _, w := range []string{
		`clients[0].grace_period (client "prod"): must be positive, got -1h (line 5)`,
		`clients[0].jitter (client "prod"): must not be negative, got -90m (line 6)`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	e := (&Error{Key: "affix.api_key_env", Problem: "x", Client: "prod", Line: 3}).Error()
	if e != `affix.api_key_env (client "prod"): x (line 3)` {
		t.Fatal(e)
	}
}
