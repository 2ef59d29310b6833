package cli

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/notify"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// describing is a Registerer that records each metric it registers, with
// its variable labels, so that a family without series is seen too.
type describing struct {
	prometheus.Registerer
	labels map[string]string // name -> "a, b"
}

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

func (d describing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := descRE.FindStringSubmatch(desc.String()); m != nil {
			d.labels[m[1]] = strings.ReplaceAll(m[2], ",", ", ")
		}
	}
	return d.Registerer.Register(c)
}

func (d describing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := d.Register(c); err != nil {
			panic(err)
		}
	}
}

// readmeMetrics returns README.md's Metrics table: name -> labels.
func readmeMetrics(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Metrics\n")
	if !ok {
		t.Fatal("README.md has no ## Metrics section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	out := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(affix_rotator_[a-z_]+)` \\|([^|]*)\\|").FindAllStringSubmatch(sec, -1) {
		out[m[1]] = strings.TrimSpace(m[2])
	}
	return out
}

// TestReadmeMetricsTable: README's metrics table lists every affix_rotator_
// metric the daemon registers (the constructors the daemon calls, every
// family described, series or not), with its labels, and nothing else; and
// every affix_rotator_ family a running daemon serves on /metrics is in it.
func TestReadmeMetricsTable(t *testing.T) {
	doc := readmeMetrics(t)
	d := describing{prometheus.NewRegistry(), map[string]string{}}
	rotator.NewMetrics(d)
	notify.NewMetrics(d)
	ReloadGauges(d)
	for name, labels := range d.labels {
		got, ok := doc[name]
		switch {
		case !ok:
			t.Errorf("README's metrics table lacks %s (labels %q)", name, labels)
		case got != labels:
			t.Errorf("README's metrics table gives %s the labels %q; the registry has %q", name, got, labels)
		}
	}
	for name := range doc {
		if _, ok := d.labels[name]; !ok {
			t.Errorf("README's metrics table lists %s, which the daemon does not register", name)
		}
	}

	// The running daemon (Vault unreachable, a webhook configured): every
	// affix_rotator_ family it serves is documented.
	listen, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	dead, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	y := "listen: \"" + listen + "\"\nvault: {address: \"http://" + dead + "\"}\n" +
		"notifications:\n  - url: \"http://127.0.0.1:1/hook\"\n    secret_env: HOOK_SECRET\n" +
		"clients:\n  - name: prod\n    vault_path: affix/prod\n    schedule: \"@every 720h\"\n    grace_period: 24h\n"
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VAULT_TOKEN": "t", "AFFIX_API_KEY": "k", "HOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	out := &vaulttest.SyncBuffer{}
	go func() {
		done <- Main(ctx, []string{"-config", path}, Env{Stdout: out, Stderr: out, Getenv: func(k string) string { return env[k] }})
	}()
	defer func() { cancel(); <-done }()
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for body == "" {
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never answered:\n%s", out.String())
		}
		if resp, err := http.Get("http://" + listen + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	var served []string
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (affix_rotator_[a-z_]+) `).FindAllStringSubmatch(body, -1) {
		served = append(served, m[1])
		if _, ok := doc[m[1]]; !ok {
			t.Errorf("the daemon serves %s, which README's metrics table lacks", m[1])
		}
	}
	sort.Strings(served)
	if len(served) < 10 {
		t.Fatalf("only %d affix_rotator_ families served: %v\n%s", len(served), served, out.String())
	}
}

// sourceStrings returns every string literal of the repository's Go code
// (tests and generated code aside): what the binary can print.
func sourceStrings(t *testing.T) []string {
	t.Helper()
	var out []string
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "bench" || d.Name() == "deploy") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					out = append(out, s)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// placeholderRE matches what a quoted message leaves open: "…" and
// <placeholders>.
var placeholderRE = regexp.MustCompile(`…|<[^<>]*>`)

// quotedMessages returns the messages docs/runbook.md quotes: every inline
// `code span` of three words or more that is not a command, a query or a
// metric, and every line of a fenced block tagged "text" (output the
// binary prints).
func quotedMessages(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	var out []string
	fence := regexp.MustCompile("(?s)```([a-z]*)\n(.*?)```")
	for _, m := range fence.FindAllStringSubmatch(md, -1) {
		if m[1] == "text" {
			for _, l := range strings.Split(m[2], "\n") {
				if l = strings.TrimSpace(l); l != "" {
					out = append(out, l)
				}
			}
		}
	}
	md = fence.ReplaceAllString(md, "")
	notMessage := regexp.MustCompile(`^(vault|kubectl|curl|journalctl|systemctl|docker|helm|affix-rotator|sudo|kill|jq|-)\b|==|^affix_rotator_|^[0-9*]+( [0-9*]+){4}$`)
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(md, -1) {
		s := strings.Join(strings.Fields(m[1]), " ")
		if len(strings.Fields(s)) < 3 || notMessage.MatchString(s) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// TestRunbookMessagesAreTheBinarys: every message the runbook quotes is
// one the binary prints, word for word: each part of it between
// placeholders ("…", <mount>) is found in a string of the source or in
// what the binary printed for the runbook's examples (exit 2: a bad
// duration, a variable unset; an incident command without -reason).
func TestRunbookMessagesAreTheBinarys(t *testing.T) {
	strs := sourceStrings(t)
	corpus := strings.Join(strs, "\n")
	var templates [][]string
	for _, s := range strs {
		if p := verbRE.Split(s, -1); len(p) > 1 {
			templates = append(templates, p)
		}
	}
	// The runbook's exit-2 examples, printed by the command itself.
	dir := t.TempDir()
	const good = "vault: {address: \"https://vault.example.com:8200\"}\nclients:\n  - name: prod\n    vault_path: affix/prod\n    schedule: \"@every 720h\"\n    grace_period: 24h\n"
	for _, run := range []struct {
		yaml string
		args []string
		env  map[string]string
	}{
		{strings.Replace(good, "24h", "-1h", 1), nil, nil},
		{good, nil, map[string]string{"VAULT_TOKEN": "t"}},
		{good, []string{"-end-grace", "-client", "prod"}, nil},
	} {
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, []byte(run.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		Main(context.Background(), append([]string{"-config", path}, run.args...), Env{Stdout: &b, Stderr: &b, Getenv: func(k string) string { return run.env[k] }})
		corpus += "\n" + strings.ReplaceAll(b.String(), path, "/etc/affix-rotator/config.yaml")
	}
	corpus += "\nprod: " + interrupted(flags{config: "/etc/affix-rotator/config.yaml"}, "prod")
	n := 0
	for _, msg := range quotedMessages(t) {
		n++
		for _, part := range placeholderRE.Split(msg, -1) {
			part = strings.TrimSpace(part)
			if len(part) < 3 {
				continue
			}
			if !strings.Contains(corpus, part) && !fitsTemplate(part, templates, corpus) {
				t.Errorf("docs/runbook.md quotes %q: %q is in no message of the binary", msg, part)
				break
			}
		}
		// A placeholder of several words is a part of the message too.
		for _, ph := range placeholderRE.FindAllString(msg, -1) {
			if inner := strings.Trim(ph, "<>"); strings.Contains(inner, " ") && !strings.Contains(corpus, inner) {
				t.Errorf("docs/runbook.md quotes %q: %q is in no message of the binary", msg, inner)
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d messages found in the runbook: the extraction is broken", n)
	}
}

// verbRE matches a fmt verb of a format string.
var verbRE = regexp.MustCompile(`%[-+# 0-9.]*[a-zA-Z]`)

// fitsTemplate reports whether part is a piece of a message some format
// string of the source produces: the format's text between its verbs
// appears in part in order, around what the verbs filled in, and covers
// most of part (so that "%s: %s" fits nothing), together with what the
// verbs filled in that is itself a string of the source (corpus).
func fitsTemplate(part string, templates [][]string, corpus string) bool {
	for _, pieces := range templates {
		for i, p := range pieces {
			// part begins inside piece i (with a suffix of it, perhaps
			// empty: then it begins with what verb i filled in).
			for s := 0; s <= len(p); s++ {
				suf := p[s:]
				if !strings.HasPrefix(part, suf) {
					continue
				}
				if covered, ok := fitRest(part[len(suf):], pieces[i+1:], corpus); ok && len(suf)+covered >= max(8, len(part)*6/10) {
					return true
				}
			}
		}
	}
	return false
}

// fitRest matches rest, which begins with what a verb filled in, against
// the pieces that follow it; it returns how many of rest's bytes are the
// format's own text or a verb's value found in corpus.
func fitRest(rest string, pieces []string, corpus string) (int, bool) {
	known := func(v string) int {
		if len(v) >= 8 && strings.Contains(corpus, v) {
			return len(v)
		}
		return 0
	}
	if len(pieces) == 0 {
		return known(rest), true // rest is the last verb's value
	}
	p := pieces[0]
	best, ok := 0, false
	if p == "" {
		return fitRest(rest, pieces[1:], corpus)
	}
	// rest ends inside p: a prefix of p at its end.
	for k := 1; k <= len(p) && k <= len(rest); k++ {
		if strings.HasSuffix(rest, p[:k]) {
			best, ok = max(best, k+known(rest[:len(rest)-k])), true
		}
	}
	// Or p is whole in rest, and the remainder fits the next pieces.
	for from := 0; from < len(rest); {
		i := strings.Index(rest[from:], p)
		if i < 0 {
			break
		}
		at := from + i
		if c, fit := fitRest(rest[at+len(p):], pieces[1:], corpus); fit {
			best, ok = max(best, known(rest[:at])+len(p)+c), true
		}
		from = at + 1
	}
	// Or the verb's value runs to the end of part.
	if !ok {
		return known(rest), true
	}
	return best, ok
}
