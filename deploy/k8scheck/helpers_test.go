package k8scheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// root is the repository root, from deploy/k8scheck.
var root = filepath.Join("..", "..")

// repoPath returns a path under the repository root.
func repoPath(elem ...string) string {
	return filepath.Join(append([]string{root}, elem...)...)
}

// readRepoFile reads a file under the repository root.
func readRepoFile(t *testing.T, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(elem...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tool returns the path of the tool named by env (e.g. HELM), or of name on
// PATH. When neither is found the test is skipped, or fails if
// AFFIX_CHECK_REQUIRE_TOOLS is set (deploy/check.sh sets it).
func tool(t *testing.T, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("AFFIX_CHECK_REQUIRE_TOOLS") != "" {
		t.Fatalf("%s is not set and %s is not on PATH", env, name)
	}
	t.Skipf("%s is not set and %s is not on PATH: run deploy/check.sh", env, name)
	return ""
}
