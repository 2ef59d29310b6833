package vaultapi_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/affix-rotator/affix-rotator/internal/agenttest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// TestMain gives the example what an application's deployment gives it: a
// Vault (a dev server), the record affix/prod, an AppRole with the consumer
// policy (read on secret/data/affix/prod only), its role id in
// MY_APP_ROLE_ID and a secret id in $MY_APP_DIR/vault-secret-id.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	v, err := vaulttest.Start("")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer v.Stop()
	ctx := context.Background()
	s, _ := secret.Generate()
	if _, err := v.Client().KVv2(agenttest.KVMount).Put(ctx, agenttest.RecordPath, map[string]any{"client_secret": s.Reveal(), "phase": "stable"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	roleID, secretID, err := agenttest.AppRole(ctx, v)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "vault-api-example-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "vault-secret-id"), []byte(secretID), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for k, val := range map[string]string{"VAULT_ADDR": v.Addr, "VAULT_TOKEN": "", "MY_APP_ROLE_ID": roleID, "MY_APP_DIR": dir} {
		os.Setenv(k, val)
	}
	return m.Run()
}
