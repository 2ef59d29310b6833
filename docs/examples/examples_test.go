// Package examples_test checks that docs/consumers.md shows the example
// files of docs/examples as they are: the files are what the tests run
// (internal/agenttest runs vault-agent/, deploy/k8scheck decodes
// external-secrets/, vault-api/ is a compiled and run example), so the
// page cannot drift from what is tested.
package examples_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestConsumersDocShowsTheExamples: each example file appears in
// docs/consumers.md verbatim, and each Go block of the page is a part of
// the compiled example.
func TestConsumersDocShowsTheExamples(t *testing.T) {
	doc := read(t, filepath.Join("..", "consumers.md"))
	for _, f := range []string{
		"vault-agent/agent.hcl", "vault-agent/client_secret.ctmpl", "vault-agent/client_id.ctmpl",
		"external-secrets/secretstore.yaml", "external-secrets/externalsecret.yaml",
	} {
		if body := strings.TrimRight(read(t, f), "\n"); !strings.Contains(doc, "\n"+body+"\n```") {
			t.Errorf("docs/consumers.md does not show docs/examples/%s as it is", f)
		}
	}
	example := read(t, filepath.Join("vault-api", "example_test.go"))
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) == 0 {
		t.Fatal("docs/consumers.md shows no Go code")
	}
	for _, b := range blocks {
		if !strings.Contains(example, b[1]) {
			t.Errorf("a Go block of docs/consumers.md is not in docs/examples/vault-api/example_test.go:\n%s", b[1])
		}
	}
	for _, ref := range []string{"../shared", "shared/"} {
		if strings.Contains(doc, ref) {
			t.Errorf("docs/consumers.md refers to %s, which is not part of the repository", ref)
		}
	}
}
