package cli

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/config"
)

const notifyBase = `clients:
  - {name: prod, vault_path: affix/prod, schedule: "@every 720h", grace_period: 24h}
`

func parse(t *testing.T, y string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(y), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReloadRefusesNotificationChanges: a SIGHUP config that adds, removes
// or changes a webhook is refused as needing a restart.
func TestReloadRefusesNotificationChanges(t *testing.T) {
	one := notifyBase + "notifications:\n  - {url: \"https://h/a\", secret_env: HOOK}\n"
	for name, next := range map[string]string{
		"added":   one,
		"changed": strings.Replace(one, "https://h/a", "https://h/b", 1),
		"removed": notifyBase,
	} {
		old := parse(t, one)
		if name == "added" {
			old = parse(t, notifyBase)
		}
		if got := restartOnly(old, parse(t, next)); len(got) != 1 || got[0] != "notifications" {
			t.Errorf("%s: restartOnly = %v", name, got)
		}
	}
	if got := restartOnly(parse(t, one), parse(t, one)); len(got) != 0 {
		t.Errorf("unchanged: %v", got)
	}
}

// TestBuildNotifierNamesTheKey: a missing or malformed signing key is a
// config error naming notifications[i] (exit 2), never quoting the value;
// no webhook, no notifier.
func TestBuildNotifierNamesTheKey(t *testing.T) {
	c := parse(t, notifyBase+"notifications:\n  - {url: \"https://h/a\", secret_env: HOOK_A}\n  - {url: \"https://h/b\", secret_env: HOOK_B}\n")
	env := map[string]string{"HOOK_B": "whsec_dG9vLXNob3J0LXNlY3JldA=="}
	_, err := buildNotifier(c, func(k string) string { return env[k] }, prometheus.NewRegistry(), zap.NewNop(), nil)
	if err == nil || !strings.Contains(err.Error(), "notifications[0].secret_env: environment variable HOOK_A is empty") ||
		!strings.Contains(err.Error(), "notifications[1].secret_env: the signing key: the key is 16 bytes") || strings.Contains(err.Error(), "dG9v") {
		t.Fatalf("err = %v", err)
	}
	if n, err := buildNotifier(parse(t, notifyBase), nil, prometheus.NewRegistry(), zap.NewNop(), nil); n != nil || err != nil {
		t.Fatalf("no webhooks: %v %v", n, err)
	}
}
