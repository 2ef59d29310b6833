package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/secret/secrettest"
	"github.com/affix-rotator/affix-rotator/notify"
)

// TestLoadedConfigPrintsNoSecret loads a config from a file, reads its API
// key and signing key as the daemon does, and walks the config and what
// was read through every printer.
func TestLoadedConfigPrintsNoSecret(t *testing.T) {
	const apiKey = "APIKEY-from-env-never-printed-4c1d"
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	y := minimal + "notifications:\n  - {url: \"https://h.example/x\", secret_env: HOOK}\n"
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AFFIX_API_KEY": apiKey, "HOOK": hookKey}
	getenv := func(k string) string { return env[k] }
	key, err := c.AffixFor(c.Clients[0]).APIKey(getenv)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := c.WebhookKeys(0, getenv)
	if err != nil {
		t.Fatal(err)
	}
	type loaded struct {
		cfg  *Config
		key  secret.Value
		keys []notify.Key
	}
	l := loaded{c, key, hk}
	for name, v := range map[string]any{"*Config": c, "loaded": l, "*loaded": &l} {
		secrettest.AssertNotPrinted(t, name, v, apiKey, hookKey[len(notify.KeyPrefix):])
	}
}
