package cli

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
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
