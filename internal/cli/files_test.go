package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenKeyFileWarned: a key file readable by others is a warning of
// -validate and of the start log (here -once, whose Vault is not there).
func TestOpenKeyFileWarned(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "api-key")
	if err := os.WriteFile(key, []byte("APIKEY-in-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "c.yaml")
	y := "vault: {address: \"http://127.0.0.1:1\"}\naffix: {api_key_file: " + key + "}\n" + notifyBase
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	env := Env{Getenv: func(k string) string { return map[string]string{"VAULT_TOKEN": "hvs.x"}[k] }}
	for _, args := range [][]string{{"-validate", "-offline"}, {"-once", "-retry-timeout", "1ms"}} {
		var out, errOut bytes.Buffer
		env.Stdout, env.Stderr = &out, &errOut
		Main(context.Background(), append([]string{"-config", cfg}, args...), env)
		all := out.String() + errOut.String()
		if !strings.Contains(all, "affix.api_key_file") || !strings.Contains(all, key+" is mode 0644: group or others may read") {
			t.Errorf("%v: no warning for the 0644 key file:\n%s", args, all)
		}
		if strings.Contains(all, "APIKEY-in-a-file") {
			t.Errorf("%v prints the key", args)
		}
	}
}

// TestShortSigningKeyExits2: a webhook signing key shorter than 24 bytes is
// a config error (exit 2) naming the key, never quoting it.
func TestShortSigningKeyExits2(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	y := "vault: {address: \"http://127.0.0.1:1\"}\n" + notifyBase + "notifications:\n  - {url: \"https://h.example/x\", secret_env: HOOK}\n"
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	const short = "whsec_c2hvcnQta2V5LTE2Ynl0ZQ==" // 16 bytes
	env := map[string]string{"VAULT_TOKEN": "hvs.x", "AFFIX_API_KEY": "k", "HOOK": short}
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"-config", cfg, "-once"}, Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
	if code != ExitUsage || !strings.Contains(errOut.String(), "notifications[0].secret_env") || !strings.Contains(errOut.String(), "16 bytes once decoded") {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), "c2hvcnQta2V5LTE2Ynl0ZQ") {
		t.Fatal("the key is printed")
	}
}
