// Package vaulttest starts a real HashiCorp Vault server in dev mode (an
// in-memory, unsealed, single-node Vault with KV v2 at secret/) as a child
// process for tests and the local stack. The binary comes from $VAULT_BIN,
// `vault` on PATH, or scripts/vault-bin.sh, which builds it once from the Go
// module proxy and caches it outside the repository.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Server is a running Vault dev server.
type Server struct {
	Addr      string // http://127.0.0.1:PORT
	Token     string // root token
	UnsealKey string

	cmd  *exec.Cmd
	dir  string
	out  *SyncBuffer
	done chan struct{}

	clientOnce sync.Once
	client     *api.Client
}

// Binary returns the path of a Vault server binary, building it if needed.
func Binary() (string, error) {
	if b := os.Getenv("VAULT_BIN"); b != "" {
		return b, nil
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "vault-bin.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("vaulttest: scripts/vault-bin.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "vault-bin.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("vaulttest: cannot find scripts/vault-bin.sh above the working directory; set VAULT_BIN")
		}
		dir = parent
	}
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

var unsealRE = regexp.MustCompile(`Unseal Key: (\S+)`)

// Start runs a new dev server on a free loopback port and waits until it
// serves requests. listen may be "" for a free port.
func Start(listen string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if listen == "" {
		if listen, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	dir, err := os.MkdirTemp("", "vaulttest-")
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: "http://" + listen, Token: "root-" + hex.EncodeToString(tok[:]), dir: dir, out: &SyncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(bin, "server", "-dev", "-dev-root-token-id="+s.Token, "-dev-listen-address="+listen, "-dev-no-store-token", "-log-level=warn")
	s.cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+dir, "VAULT_ADDR=", "VAULT_TOKEN=")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("vaulttest: start %s: %w", bin, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m := unsealRE.FindStringSubmatch(s.out.String()); m != nil && s.healthy() {
			s.UnsealKey = m[1]
			return s, nil
		}
		select {
		case <-s.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("vaulttest: vault exited during start-up:\n%s", s.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("vaulttest: vault not ready after 60s:\n%s", s.out.String())
		}
	}
}

func (s *Server) healthy() bool {
	resp, err := http.Get(s.Addr + "/v1/sys/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Stop kills the server and removes its files.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-s.done
	os.RemoveAll(s.dir)
}

// Output returns what the server printed.
func (s *Server) Output() string { return s.out.String() }

// Client returns an API client authenticated with the root token (one per
// server, so that connections are reused).
func (s *Server) Client() *api.Client {
	s.clientOnce.Do(func() {
		cfg := api.DefaultConfig()
		cfg.Address = s.Addr
		cfg.MaxRetries = 0
		c, err := api.NewClient(cfg)
		if err != nil {
			panic(err)
		}
		c.SetToken(s.Token)
		s.client = c
	})
	return s.client
}

// Seal seals the server: every request then fails with 503 until Unseal.
func (s *Server) Seal(ctx context.Context) error {
	return s.Client().Sys().SealWithContext(ctx)
}

// Unseal unseals the server with its unseal key.
func (s *Server) Unseal(ctx context.Context) error {
	st, err := s.Client().Sys().UnsealWithContext(ctx, s.UnsealKey)
	if err != nil {
		return err
	}
	if st.Sealed {
		return errors.New("vaulttest: still sealed after unseal")
	}
	// The KV mount needs a moment after unseal before it serves.
	for i := 0; i < 100 && !s.healthy(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

var (
	shared    *Server
	sharedErr error
)

// Main runs a package's tests with one shared Vault server:
//
//	func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }
func Main(m *testing.M) int {
	shared, sharedErr = Start("")
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	return code
}

// Shared returns the package's shared server, failing the test when it could
// not be started. Tests never skip for want of Vault: the test command builds it.
func Shared(t testing.TB) *Server {
	t.Helper()
	if sharedErr != nil {
		t.Fatalf("vaulttest: no Vault server: %v", sharedErr)
	}
	if shared == nil {
		t.Fatal("vaulttest: Shared called without vaulttest.Main in TestMain")
	}
	return shared
}

// Path returns a KV path unique to the test, for tests sharing one server.
func Path(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", "-", " ", "_", "#", "_").Replace(t.Name())
	return "test/" + name + "-" + hex.EncodeToString(b[:])
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers (a child
// process's stdout and stderr) and readers; for test-support packages.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var _ io.Writer = (*SyncBuffer)(nil)
