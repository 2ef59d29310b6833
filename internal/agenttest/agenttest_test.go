package agenttest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// TestSubstituteRefusesDrift: a value the test replaces that is missing
// from the example, or there twice, fails instead of running something
// else than the docs show.
func TestSubstituteRefusesDrift(t *testing.T) {
	rs := []replacement{{`"a"`, `"x"`}, {`"b"`, `"y"`}}
	if got, err := substitute(`p = "a"  q = "b"`, rs); err != nil || got != `p = "x"  q = "y"` {
		t.Fatalf("%q %v", got, err)
	}
	for _, s := range []string{`p = "a"`, `p = "a" q = "b" r = "b"`} {
		if _, err := substitute(s, rs); err == nil || !strings.Contains(err.Error(), "want once") {
			t.Fatalf("%q: %v", s, err)
		}
	}
}

// TestAgentRendersTheRecord runs the example's agent against a real Vault:
// it logs in with AppRole (read on the record only), renders client_secret
// and client_id without a newline, 0600, and renders a new client_secret
// within the render interval (plus start-up slack) of the write.
func TestAgentRendersTheRecord(t *testing.T) {
	v, err := vaulttest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	ctx := context.Background()
	kv := v.Client().KVv2(KVMount)
	if _, err := kv.Put(ctx, RecordPath, map[string]any{"client_secret": "first-secret", "client_id": "cid-x", "phase": "stable"}); err != nil {
		t.Fatal(err)
	}
	a, err := Start(ctx, Options{Vault: v, Dir: filepath.Join(t.TempDir(), "agent"), RenderInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(a.ClientIDFile); got != "cid-x" {
		t.Fatalf("client id file holds %q", got)
	}
	if got := read(a.SecretFile); got != "first-secret" {
		t.Fatalf("client secret file holds %d bytes, not exactly the record's client_secret", len(got))
	}
	if st, err := os.Stat(a.SecretFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("client secret file mode %v %v", st.Mode(), err)
	}
	var settings []string // the config without its comments
	for _, l := range strings.Split(read(a.Config), "\n") {
		if l, _, _ = strings.Cut(l, "#"); strings.TrimSpace(l) != "" {
			settings = append(settings, l)
		}
	}
	for _, gone := range []string{`"/etc/my-app/`, `"/run/my-app/`, `vault.example.com`, `"5m"`} {
		if strings.Contains(strings.Join(settings, "\n"), gone) {
			t.Fatalf("the agent's config still holds %s", gone)
		}
	}
	if _, err := kv.Put(ctx, RecordPath, map[string]any{"client_secret": "second-secret", "client_id": "cid-x", "phase": "overlap"}); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	for read(a.SecretFile) != "second-secret" {
		if time.Since(written) > 5*time.Second {
			t.Fatalf("the new secret was not rendered within 5s:\n%s", a.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the new secret was rendered %s after the write (render interval 1s)", time.Since(written).Round(time.Millisecond))
	// It logged in with AppRole (no token of the test reached it).
	if out := a.Output(); !strings.Contains(out, "authentication successful") {
		t.Fatalf("no AppRole login in the agent's output:\n%s", out)
	}
}
