package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVaultAddrWithCredentialsExits2: the daemon, -once and -status refuse
// a VAULT_ADDR holding user info (exit 2), and never print it.
func TestVaultAddrWithCredentialsExits2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(notifyBase), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VAULT_ADDR": "https://admin:s3cr3tpass@vault.example:8200", "VAULT_TOKEN": "hvs.x", "AFFIX_API_KEY": "k"}
	for _, args := range [][]string{{"-config", path}, {"-config", path, "-once"}, {"-config", path, "-status"}} {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), args, Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
		if code != ExitUsage || !strings.Contains(errOut.String(), "VAULT_ADDR: must not hold credentials") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut.String())
		}
		if strings.Contains(out.String()+errOut.String(), "s3cr3tpass") {
			t.Errorf("%v prints the credential: %s%s", args, out.String(), errOut.String())
		}
	}
}
