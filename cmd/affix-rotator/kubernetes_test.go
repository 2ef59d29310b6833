package main_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/k8stest"
)

// k8sStack is a stack whose daemon logs in to Vault with the kubernetes
// auth method: Vault's auth/<mount> points at a k8stest TokenReview server
// (kubernetes_host, kubernetes_ca_cert, token_reviewer_jwt, as in the
// README), and the role affix-rotator is bound to the service account
// affix-rotator in the namespace affix-rotator, with a policy on the
// client's record only. The processes get no VAULT_TOKEN.
type k8sStack struct {
	*stack
	k8s       *k8stest.Server
	mount     string
	tokenFile string
}

func newK8sStack(t *testing.T) *k8sStack {
	t.Helper()
	ctx := context.Background()
	s := &k8sStack{stack: newStack(t), mount: "k8s-" + randHex()[:8]}
	s.env = append(s.env, "VAULT_TOKEN=")
	var err error
	if s.k8s, err = k8stest.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.k8s.Close)
	root := s.vault.Client()
	if err := s.k8s.EnableVaultAuth(ctx, root, s.mount); err != nil {
		t.Fatal(err)
	}
	policy := `path "secret/data/` + s.path + `" { capabilities = ["read", "update"] }`
	if err := root.Sys().PutPolicyWithContext(ctx, s.mount, policy); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/"+s.mount+"/role/affix-rotator", map[string]any{
		"bound_service_account_names":      "affix-rotator",
		"bound_service_account_namespaces": "affix-rotator",
		"token_policies":                   s.mount,
		"token_ttl":                        "1h",
		"token_max_ttl":                    "24h",
	}); err != nil {
		t.Fatal(err)
	}
	s.tokenFile = filepath.Join(s.dir, "sa-token")
	return s
}

// mountToken writes a token of namespace/name where the kubelet would, and
// returns it.
func (s *k8sStack) mountToken(namespace, name string) string {
	s.t.Helper()
	jwt, err := s.k8s.Issue(namespace, name)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(s.tokenFile, []byte(jwt), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return jwt
}

// kubeConfig is stack.config with vault.auth set to the kubernetes method.
func (s *k8sStack) kubeConfig(name, instanceID, clientExtra string) string {
	s.t.Helper()
	p := s.config(name, instanceID, clientExtra)
	b, err := os.ReadFile(p)
	if err != nil {
		s.t.Fatal(err)
	}
	tokenAuth := "auth: {method: token, token_env: VAULT_TOKEN}"
	kubeAuth := "auth: {method: kubernetes, kubernetes: {mount: " + s.mount + ", role: affix-rotator, token_file: " + s.tokenFile + "}}"
	if !strings.Contains(string(b), tokenAuth) {
		s.t.Fatal("stack.config no longer writes the token auth line this test replaces")
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), tokenAuth, kubeAuth, 1)), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// authenticated counts the TokenReviews that authenticated the pod's
// service account.
func (s *k8sStack) authenticated() int {
	n := 0
	for _, r := range s.k8s.Reviews() {
		if r.Authenticated && r.Username == "system:serviceaccount:affix-rotator:affix-rotator" {
			n++
		}
	}
	return n
}

func assertNoJWT(t *testing.T, out string, jwts ...string) {
	t.Helper()
	for _, jwt := range jwts {
		for _, part := range append(strings.Split(jwt, "."), jwt) {
			if strings.Contains(out, part) {
				t.Fatal("the service account JWT appears in the output")
			}
		}
	}
}

// TestKubernetesAuthOnce runs a `-once` rotation with the kubernetes auth
// method against real Vault (which reviews the service account JWT with the
// TokenReview server) and the Affix fake: it completes, the record is
// stable, and Affix accepts exactly the new secret.
func TestKubernetesAuthOnce(t *testing.T) {
	s := newK8sStack(t)
	jwt := s.mountToken("affix-rotator", "affix-rotator")
	cfg := s.kubeConfig("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 1s\n")
	p := s.start("-config", cfg, "-once")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.out.String())
	}
	final := s.record()
	current := str(final, "client_secret")
	if str(final, "phase") != "stable" || current == s.s0 || final["previous_client_secret"] != nil || str(final, "rotated_at") == "" {
		t.Fatalf("final record: phase %v, rotated %v", final["phase"], current != s.s0)
	}
	if got := strings.Join(s.requests(), " "); got != "200[N1,S0] 200[N1]" {
		t.Fatalf("requests %s", got)
	}
	if !s.fake.Accepts(s.key, current) || s.fake.Accepts(s.key, s.s0) {
		t.Fatal("Affix does not accept exactly the new secret at the end")
	}
	if n := s.authenticated(); n != 1 {
		t.Fatalf("%d authenticated TokenReviews, want 1 (one login): %+v", n, s.k8s.Reviews())
	}
	assertNoJWT(t, p.out.String(), jwt)
}

// TestKubernetesAuthDaemonRelogin revokes every Vault token of the
// kubernetes mount while the daemon runs (and the kubelet has replaced the
// service account token in its file meanwhile, the old one now refused):
// the daemon logs in again with the new token by itself and goes on
// rotating, without a fork, Vault's secret accepted by Affix at the end.
func TestKubernetesAuthDaemonRelogin(t *testing.T) {
	ctx := context.Background()
	s := newK8sStack(t)
	old := s.mountToken("affix-rotator", "affix-rotator")
	cfg := s.kubeConfig("d.yaml", "pod-a", "    schedule: \"@every 2s\"\n    grace_period: 1s\n    max_age: 2s\n")
	p := s.start("-config", cfg)
	first := s.waitFor("a first rotation", 30*time.Second, func(r map[string]any) bool { return str(r, "rotated_at") != "" })

	fresh := s.mountToken("affix-rotator", "affix-rotator")
	s.k8s.Revoke(old)
	revokedAt := time.Now()
	if _, err := s.vault.Client().Logical().WriteWithContext(ctx, "sys/leases/revoke-prefix/auth/"+s.mount+"/", nil); err != nil {
		t.Fatal(err)
	}
	s.waitFor("a rotation after the revocation", 40*time.Second, func(r map[string]any) bool {
		at, err := time.Parse(time.RFC3339Nano, str(r, "rotated_at"))
		return err == nil && at.After(revokedAt) && str(r, "client_secret") != str(first, "client_secret")
	})
	p.kill9(t)

	if n := s.authenticated(); n < 2 {
		t.Fatalf("%d authenticated TokenReviews, want a second login after the revocation", n)
	}
	out := p.out.String()
	relogin := false
	for _, line := range strings.Split(out, "\n") {
		relogin = relogin || strings.Contains(line, `"msg":"vault: authenticated"`) && strings.Contains(line, `"auth_method":"kubernetes"`)
	}
	if !relogin {
		t.Fatalf("no re-login logged:\n%s", out)
	}
	checkHistory(t, s.stack)
	if !s.fake.Accepts(s.key, str(s.record(), "client_secret")) {
		t.Fatal("I1 violated: Vault's secret is not accepted at the end")
	}
	assertNoJWT(t, out, old, fresh)
}

// TestKubernetesAuthRejected: a `-once` whose service account token the
// TokenReview refuses exits 1, saying that Vault denied the kubernetes
// login and what to check, without printing the token; the record is
// untouched.
func TestKubernetesAuthRejected(t *testing.T) {
	s := newK8sStack(t)
	jwt := s.mountToken("affix-rotator", "affix-rotator")
	s.k8s.Revoke(jwt)
	cfg := s.kubeConfig("c.yaml", "host-a", "    schedule: \"@every 720h\"\n    grace_period: 1s\n")
	p := s.start("-config", cfg, "-once")
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, p.out.String())
	}
	out := p.out.String()
	if !strings.Contains(out, "FAILED: vault denied the credentials (auth method kubernetes)") {
		t.Fatalf("output does not say the kubernetes login was denied:\n%s", out)
	}
	// What to check is the service account and the auth method's config,
	// not a token lookup or a secret id.
	for _, want := range []string{"bound_service_account_names", "token_reviewer_jwt"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the hint does not mention %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "vault token lookup") || strings.Contains(out, "its secret") {
		t.Fatalf("the hint is the token/approle one:\n%s", out)
	}
	assertNoJWT(t, out, jwt)
	if str(s.record(), "client_secret") != s.s0 || len(s.fake.Requests()) != 0 {
		t.Fatal("a denied login touched the record or Affix")
	}
	t.Logf("output:\n%s", out)
}
