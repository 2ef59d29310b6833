// Package agenttest runs a real HashiCorp Vault Agent (`vault agent`, the
// binary vaulttest runs as a server) as a child process for tests and the
// bench, with the configuration and templates that docs/consumers.md shows
// (docs/examples/vault-agent): it sets up an AppRole with the consumer
// policy on a vaulttest.Server, and renders the record at RecordPath to two
// files. Only the Vault address, the file paths and the render interval of
// the example are replaced, each of them exactly once, so an example that
// drifts from what is tested fails the test.
package agenttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// The record the example's templates read, and the names of what this
// package creates in Vault for the agent.
const (
	// KVMount is the KV v2 mount of the example's record.
	KVMount = "secret"
	// RecordPath is the example's record, relative to KVMount
	// (the templates read secret/data/affix/prod).
	RecordPath = "affix/prod"
	// Policy is the consumer policy (read on the record's data path).
	Policy = "affix-consumer-prod"
	// Role is the AppRole role the agent logs in with.
	Role = "my-app"
)

// ExamplesDir is the example's directory, relative to the repository root.
var ExamplesDir = filepath.Join("docs", "examples", "vault-agent")

// Options configures Start.
type Options struct {
	// Vault is the server to log in to; the AppRole auth method is enabled
	// on it (at approle/) if it is not already.
	Vault *vaulttest.Server
	// Dir receives the agent's config, the role and secret id files and
	// the rendered files; it is created if need be. Required.
	Dir string
	// RenderInterval is the template_config.static_secret_render_interval,
	// in whole seconds (Vault Agent rounds it down). Default 1s.
	RenderInterval time.Duration
	// Examples is the directory of agent.hcl and the templates. Default:
	// ExamplesDir under the repository root found from the working
	// directory.
	Examples string
}

// Agent is a running Vault Agent.
type Agent struct {
	// SecretFile and ClientIDFile are the files the templates render.
	SecretFile, ClientIDFile string
	// Config is the agent's configuration file, as run.
	Config string

	cmd  *exec.Cmd
	out  *vaulttest.SyncBuffer
	done chan struct{}
}

// The example's values that Start replaces, and what with; each must occur
// exactly once in agent.hcl.
type replacement struct{ old, new string }

// Start sets up the AppRole and starts the agent, and returns once both
// files have been rendered (within 60s) or the agent failed.
func Start(ctx context.Context, opt Options) (*Agent, error) {
	if opt.Vault == nil || opt.Dir == "" {
		return nil, errors.New("agenttest: Vault and Dir are required")
	}
	if opt.RenderInterval <= 0 {
		opt.RenderInterval = time.Second
	}
	if opt.RenderInterval%time.Second != 0 {
		return nil, fmt.Errorf("agenttest: render interval %s is not whole seconds", opt.RenderInterval)
	}
	if opt.Examples == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		opt.Examples = filepath.Join(root, ExamplesDir)
	}
	bin, err := vaulttest.Binary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opt.Dir, 0o700); err != nil {
		return nil, err
	}
	roleID, secretID, err := AppRole(ctx, opt.Vault)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		SecretFile:   filepath.Join(opt.Dir, "affix-client-secret"),
		ClientIDFile: filepath.Join(opt.Dir, "affix-client-id"),
		Config:       filepath.Join(opt.Dir, "agent.hcl"),
		out:          &vaulttest.SyncBuffer{},
		done:         make(chan struct{}),
	}
	roleFile, secretFile := filepath.Join(opt.Dir, "vault-role-id"), filepath.Join(opt.Dir, "vault-secret-id")
	for f, v := range map[string]string{roleFile: roleID, secretFile: secretID} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			return nil, err
		}
	}
	example, err := os.ReadFile(filepath.Join(opt.Examples, "agent.hcl"))
	if err != nil {
		return nil, fmt.Errorf("agenttest: %w", err)
	}
	hcl, err := substitute(string(example), []replacement{
		{`"https://vault.example.com:8200"`, strconv.Quote(opt.Vault.Addr)},
		{`"/etc/my-app/vault-role-id"`, strconv.Quote(roleFile)},
		{`"/etc/my-app/vault-secret-id"`, strconv.Quote(secretFile)},
		{`"/etc/my-app/client_secret.ctmpl"`, strconv.Quote(filepath.Join(opt.Examples, "client_secret.ctmpl"))},
		{`"/etc/my-app/client_id.ctmpl"`, strconv.Quote(filepath.Join(opt.Examples, "client_id.ctmpl"))},
		{`"/run/my-app/affix-client-secret"`, strconv.Quote(a.SecretFile)},
		{`"/run/my-app/affix-client-id"`, strconv.Quote(a.ClientIDFile)},
		{`static_secret_render_interval = "5m"`, fmt.Sprintf(`static_secret_render_interval = "%ds"`, int(opt.RenderInterval/time.Second))},
	})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(a.Config, []byte(hcl), 0o600); err != nil {
		return nil, err
	}
	a.cmd = exec.Command(bin, "agent", "-config="+a.Config, "-log-level=info")
	a.cmd.Dir = opt.Dir
	a.cmd.Env = append(withoutVault(os.Environ()), "HOME="+opt.Dir)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("agenttest: start %s agent: %w", bin, err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for !rendered(a.SecretFile) || !rendered(a.ClientIDFile) {
		select {
		case <-a.done:
			return nil, fmt.Errorf("agenttest: vault agent exited before rendering:\n%s", a.out.String())
		case <-ctx.Done():
			a.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.Stop()
			return nil, fmt.Errorf("agenttest: nothing rendered after 60s:\n%s", a.out.String())
		}
	}
	return a, nil
}

// substitute replaces each old by its new in s, failing when an old does
// not occur exactly once: the example changed, and the test must follow.
func substitute(s string, rs []replacement) (string, error) {
	for _, r := range rs {
		if n := strings.Count(s, r.old); n != 1 {
			return "", fmt.Errorf("agenttest: %s/agent.hcl holds %s %d times, want once: update internal/agenttest with the example", ExamplesDir, r.old, n)
		}
		s = strings.Replace(s, r.old, r.new, 1)
	}
	return s, nil
}

func rendered(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// AppRole enables the AppRole auth method on v (at approle/, if it is not
// yet), writes the consumer Policy (read on the record's data path) and
// the Role bound to it, and returns the role's id and a new secret id.
func AppRole(ctx context.Context, v *vaulttest.Server) (roleID, secretID string, err error) {
	c := v.Client()
	auths, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return "", "", fmt.Errorf("agenttest: list auth methods: %w", err)
	}
	if _, ok := auths["approle/"]; !ok {
		if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			return "", "", fmt.Errorf("agenttest: enable approle: %w", err)
		}
	}
	policy := fmt.Sprintf("path %q {\n  capabilities = [\"read\"]\n}\n", KVMount+"/data/"+RecordPath)
	if err := c.Sys().PutPolicyWithContext(ctx, Policy, policy); err != nil {
		return "", "", fmt.Errorf("agenttest: write policy %s: %w", Policy, err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+Role, map[string]any{
		"token_policies": Policy, "token_ttl": "1h", "token_max_ttl": "24h",
	}); err != nil {
		return "", "", fmt.Errorf("agenttest: write role %s: %w", Role, err)
	}
	r, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/"+Role+"/role-id")
	if err != nil || r == nil {
		return "", "", fmt.Errorf("agenttest: read role id: %v", err)
	}
	roleID, _ = r.Data["role_id"].(string)
	s, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+Role+"/secret-id", nil)
	if err != nil || s == nil {
		return "", "", fmt.Errorf("agenttest: new secret id: %v", err)
	}
	secretID, _ = s.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		return "", "", errors.New("agenttest: empty role id or secret id")
	}
	return roleID, secretID, nil
}

// withoutVault drops the VAULT_* variables (a token or address of the
// caller's must not reach the agent: it uses its config alone).
func withoutVault(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "HOME=") {
			out = append(out, kv)
		}
	}
	return out
}

// Stop kills the agent and waits for it to exit.
func (a *Agent) Stop() {
	if a.cmd.Process != nil {
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-a.done
}

// Output returns what the agent logged (it logs no secret).
func (a *Agent) Output() string { return a.out.String() }

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, ExamplesDir, "agent.hcl")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("agenttest: no %s above the working directory", filepath.Join(ExamplesDir, "agent.hcl"))
		}
		dir = parent
	}
}
