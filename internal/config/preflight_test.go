package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestScheduleInterval(t *testing.T) {
	for spec, want := range map[string]time.Duration{
		"@every 720h": 720 * time.Hour, "@daily": 24 * time.Hour, "0 3 * * *": 24 * time.Hour,
		"0 3 1 * *": 28 * 24 * time.Hour, "0 3 * * 1,2": 24 * time.Hour, "*/15 * * * *": 15 * time.Minute,
		"CRON_TZ=Europe/Paris 0 3 * * *": 23 * time.Hour, // the spring DST change, within 100 runs of 1 January
	} {
		iv, err := ScheduleInterval(spec)
		if err != nil || iv.Never || iv.Min != want {
			t.Errorf("%q: %+v %v, want %s", spec, iv, err, want)
		}
	}
	if iv, err := ScheduleInterval("0 0 31 2 *"); err != nil || !iv.Never {
		t.Errorf("31 February: %+v %v", iv, err)
	}
}

func TestLint(t *testing.T) {
	const head = "vault: {address: \"https://vault:8200\"}\nclients:\n  - name: prod\n    vault_path: affix/prod\n"
	noenv := func(string) string { return "" }
	for _, tc := range []struct {
		name, yaml  string
		errs, warns []string
	}{
		{"fine", head + "    schedule: \"@every 720h\"\n    grace_period: 24h\n", nil, nil},
		{"never", head + "    schedule: \"0 0 31 2 *\"\n    grace_period: 1h\n", []string{`clients[0].schedule (client "prod"): "0 0 31 2 *" never fires`}, nil},
		{"every 0s", head + "    schedule: \"@every 0s\"\n    grace_period: 1h\n", []string{`clients[0].schedule (client "prod"): "@every 0s" does not wait`}, nil},
		{"every 59s", head + "    schedule: \"@every 59s\"\n    grace_period: 1s\n", []string{`"@every 59s" runs more often than once a minute`}, nil},
		{"grace", head + "    schedule: \"@every 1h\"\n    grace_period: 60m\n", []string{`clients[0].grace_period (client "prod"): 60m is not shorter than the shortest interval between two runs of schedule "@every 1h" (1h, `}, nil},
		{"jitter", head + "    schedule: \"@hourly\"\n    grace_period: 1m\n    jitter: 2h\n", []string{`clients[0].jitter (client "prod"): 2h is not shorter`}, nil},
		{"no address", strings.Replace(head, "vault: {address: \"https://vault:8200\"}\n", "", 1) + "    schedule: \"@daily\"\n    grace_period: 1h\n", []string{"vault.address: not set, and VAULT_ADDR is not set either"}, nil},
		{"http", strings.Replace(head, "https://vault:8200", "http://vault:8200", 1) + "    schedule: \"@daily\"\n    grace_period: 1h\n    affix: {base_url: \"http://10.0.0.1\"}\n",
			nil, []string{`vault.address: "http://vault:8200": http:// to vault`, `clients[0].affix.base_url (client "prod"): "http://10.0.0.1"`}},
		{"insecure_skip_verify", strings.Replace(head, "vault: {address: \"https://vault:8200\"}", "vault: {address: \"https://vault:8200\", tls: {insecure_skip_verify: true}}", 1) + "    schedule: \"@daily\"\n    grace_period: 1h\n",
			nil, []string{"vault.tls.insecure_skip_verify: true: Vault's certificate is not verified"}},
		{"http loopback", head + "    schedule: \"@daily\"\n    grace_period: 1h\n    affix: {base_url: \"http://127.0.0.1:8080\"}\n", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFile([]byte(tc.yaml), "t.yaml")
			if err != nil {
				t.Fatal(err)
			}
			errs, warns := f.Lint(noenv)
			check := func(what string, got []*Error, want []string) {
				if len(got) != len(want) {
					t.Errorf("%s: got %v, want %d", what, got, len(want))
				}
				for _, w := range want {
					found := false
					for _, e := range got {
						found = found || strings.Contains(e.Error(), w)
					}
					if !found {
						t.Errorf("%s: %q not in %v", what, w, got)
					}
				}
			}
			check("errors", errs, tc.errs)
			check("warnings", warns, tc.warns)
		})
	}
}

func TestEnvironment(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	full := filepath.Join(dir, "full")
	_ = os.WriteFile(empty, nil, 0o600)
	_ = os.WriteFile(full, []byte("x\n"), 0o600)
	y := `vault: {address: "https://vault:8200", auth: {method: approle, approle: {role_id_file: ` + full + `, secret_id_file: ` + empty + `}}}
affix: {api_key_env: KEY_A}
clients:
  - {name: a, vault_path: affix/a, schedule: "@daily", grace_period: 1h}
  - {name: b, vault_path: affix/b, schedule: "@daily", grace_period: 1h, affix: {api_key_file: /nonexistent/k}}
  - {name: c, vault_path: affix/c, schedule: "@daily", grace_period: 1h, affix: {api_key_env: KEY_C}}
`
	f, err := ParseFile([]byte(y), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KEY_C": "key-c-value"}
	errs := f.Environment(func(k string) string { return env[k] })
	want := []string{
		"affix.api_key_env: environment variable KEY_A (the Affix API key) is unset or empty",
		`clients[1].affix.api_key_file (client "b"): file /nonexistent/k (the Affix API key) does not exist`,
		"vault.auth.approle.secret_id_file: file " + empty + " (the AppRole secret id) is empty",
	}
	if len(errs) != len(want) {
		t.Fatalf("got %v", errs)
	}
	for i, w := range want {
		if !strings.Contains(errs[i].Error(), w) {
			t.Errorf("%d: %q, want %q", i, errs[i], w)
		}
		if strings.Contains(errs[i].Error(), "key-c-value") {
			t.Error("a secret in the message")
		}
	}
}
