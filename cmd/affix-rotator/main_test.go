package main_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

var bin string

// TestMain builds the real binary once; every test runs it as a process
// against a real Vault dev server and the Affix fake.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "affix-rotator-bin-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "affix-rotator")
	build := exec.Command("go", "build", "-race", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := vaulttest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

type stack struct {
	t      *testing.T
	vault  *vaulttest.Server
	fake   *affixtest.Server
	key    string
	path   string
	s0     string
	dir    string
	listen string
	env    []string // extra environment of the processes started (later values win)
}

func newStack(t *testing.T) *stack {
	t.Helper()
	return newStackOn(t, vaulttest.Shared(t))
}

func newStackOn(t *testing.T, srv *vaulttest.Server) *stack {
	t.Helper()
	s := &stack{t: t, vault: srv, key: "affix-key-" + randHex(), path: vaulttest.Path(t), dir: t.TempDir()}
	s.fake = affixtest.NewServer()
	t.Cleanup(s.fake.Close)
	s0, _ := secret.Generate()
	s.s0 = s0.Reveal()
	s.fake.AddClient(s.key, "cid-prod", s.s0)
	if _, err := srv.Client().KVv2("secret").Put(context.Background(), s.path, map[string]any{"client_secret": s.s0}); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.listen, err = vaulttest.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	return s
}

func randHex() string {
	v, _ := secret.Generate()
	return strings.ReplaceAll(v.Reveal(), "-", "")[:16]
}

// config writes a config file; extra is appended to the client entry.
func (s *stack) config(name, instanceID, clientExtra string) string {
	s.t.Helper()
	return s.configListen(name, instanceID, s.listen, clientExtra)
}

func (s *stack) configListen(name, instanceID, listen, clientExtra string) string {
	s.t.Helper()
	y := fmt.Sprintf(`listen: %q
instance_id: %q
log: {level: debug, format: json}
vault:
  address: %q
  kv_mount: secret
  auth: {method: token, token_env: VAULT_TOKEN}
affix:
  base_url: %q
  api_key_env: AFFIX_API_KEY
  timeout: 5s
rotation: {lease_duration: 30s, retry_initial: 200ms, retry_max: 2s, clock_skew_margin: 500ms}
clients:
  - name: prod
    vault_path: %s
%s`, listen, instanceID, s.vault.Addr, s.fake.URL, s.path, clientExtra)
	p := filepath.Join(s.dir, name)
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

type proc struct {
	cmd  *exec.Cmd
	out  *syncBuf
	err  error
	done chan struct{}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *syncBuf) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func (s *stack) start(args ...string) *proc {
	s.t.Helper()
	p := &proc{out: &syncBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(append(os.Environ(), "VAULT_TOKEN="+s.vault.Token, "AFFIX_API_KEY="+s.key, "VAULT_ADDR=", "VAULT_NAMESPACE="), s.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	s.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if s.t.Failed() {
			s.t.Logf("output of %v:\n%s", args, p.out.String())
		}
	})
	return p
}

func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %s; output:\n%s", timeout, p.out.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

func (s *stack) record() map[string]any {
	kv, err := s.vault.Client().KVv2("secret").Get(context.Background(), s.path)
	if err != nil {
		return nil
	}
	return kv.Data
}

func str(m map[string]any, k string) string { v, _ := m[k].(string); return v }

// waitFor polls the record until cond holds.
func (s *stack) waitFor(what string, timeout time.Duration, cond func(map[string]any) bool) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if rec := s.record(); rec != nil && cond(rec) {
			return rec
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("timed out waiting for %s; record phase %v; requests %v", what, s.record()["phase"], s.requests())
	return nil
}

// requests labels the secrets Affix received (affixtest.Sequence).
func (s *stack) requests() []string { return affixtest.Sequence(s.fake.Requests(), s.s0) }

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
