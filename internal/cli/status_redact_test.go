package cli

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestStatusRedactsRecordLastError: a record's last_error (outside text
// written by some process) that echoes the API key URL-encoded is shown by
// -status, table and JSON, redacted. A real Vault holds the record.
func TestStatusRedactsRecordLastError(t *testing.T) {
	srv, err := vaulttest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	const key = "AFX+live/key=0123456789"
	s, err := vault.New(t.Context(), vault.Config{Address: srv.Addr, Auth: vault.TokenAuth(secret.New(srv.Token))})
	if err != nil {
		t.Fatal(err)
	}
	rec := vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("current-secret-0001"),
		LastError: "rotation r1 aborted: affix: 403; message: WAF blocked key=" + url.QueryEscape(key)}
	if _, err := s.Write(t.Context(), "affix/prod", rec, 0); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte("vault: {address: \""+srv.Addr+"\"}\n"+notifyBase), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VAULT_TOKEN": srv.Token, "AFFIX_API_KEY": key}
	for _, args := range [][]string{{"-status"}, {"-status", "-o", "json"}} {
		var out, errOut bytes.Buffer
		Main(context.Background(), append([]string{"-config", cfg}, args...), Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
		if !strings.Contains(out.String(), "WAF blocked key=[REDACTED]") {
			t.Errorf("%v: last_error not shown redacted:\n%s%s", args, out.String(), errOut.String())
		}
		if strings.Contains(out.String(), url.QueryEscape(key)) {
			t.Errorf("%v shows the encoded key", args)
		}
	}
}
