package config

import (
	"strings"
	"testing"
)

// TestVaultAddrWithCredentialsRefused: VAULT_ADDR with user info is refused
// as vault.address is, by VaultAddr and by Lint, and no message quotes it.
func TestVaultAddrWithCredentialsRefused(t *testing.T) {
	f, err := ParseFile([]byte(minimal), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"https://user:s3cr3tpass@vault.example:8200", "http://s3cr3tpass@vault.example:8200"} {
		getenv := func(k string) string { return map[string]string{"VAULT_ADDR": addr}[k] }
		_, err := f.Config.VaultAddr(getenv)
		if err == nil || !strings.Contains(err.Error(), "VAULT_ADDR") || !strings.Contains(err.Error(), "credentials") {
			t.Fatalf("VaultAddr(%s): %v", addr, err)
		}
		errs, warns := f.Lint(getenv)
		var all []string
		for _, e := range append(errs, warns...) {
			all = append(all, e.Error())
		}
		text := strings.Join(all, "\n")
		if len(errs) == 0 || !strings.Contains(text, "VAULT_ADDR: must not hold credentials") {
			t.Errorf("Lint with VAULT_ADDR %s: errors %q", addr, text)
		}
		if strings.Contains(text+err.Error(), "s3cr3tpass") {
			t.Errorf("a message quotes the credential: %s", text)
		}
	}
	if a, err := f.Config.VaultAddr(func(string) string { return "https://vault.example:8200" }); err != nil || a != "https://vault.example:8200" {
		t.Fatalf("plain VAULT_ADDR: %q %v", a, err)
	}
}
