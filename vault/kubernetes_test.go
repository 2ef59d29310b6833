package vault_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/affix-rotator/affix-rotator/internal/k8stest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/vault"
)

// Service account the Vault role below is bound to.
const (
	k8sNamespace = "affix-rotator"
	k8sAccount   = "affix-rotator"
)

// k8sAuth is a real Vault's kubernetes auth method pointed at a k8stest
// TokenReview server, with a role "affix-rotator" bound to the service
// account affix-rotator/affix-rotator and a policy on secret/data/test/*.
type k8sAuth struct {
	vault *vaulttest.Server
	k8s   *k8stest.Server
	mount string // a mount of its own on the shared Vault
}

func newK8sAuth(t *testing.T) *k8sAuth {
	t.Helper()
	ctx := context.Background()
	k, err := k8stest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	srv := vaulttest.Shared(t)
	root := srv.Client()
	p := vaulttest.Path(t)
	mount := "k8s-" + p[len(p)-8:] // its random suffix
	if err := k.EnableVaultAuth(ctx, root, mount); err != nil {
		t.Fatal(err)
	}
	policy := `path "secret/data/test/*" { capabilities = ["create","read","update"] }`
	if err := root.Sys().PutPolicyWithContext(ctx, "rotator-"+mount, policy); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/affix-rotator", map[string]any{
		"bound_service_account_names":      k8sAccount,
		"bound_service_account_namespaces": k8sNamespace,
		"token_policies":                   "rotator-" + mount,
		"token_ttl":                        "1h",
		"token_max_ttl":                    "24h",
	}); err != nil {
		t.Fatal(err)
	}
	return &k8sAuth{vault: srv, k8s: k, mount: mount}
}

// tokenFile writes jwt where the kubelet would mount it and returns the path.
func tokenFile(t *testing.T, jwt string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(jwt), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// issue returns a new token of the bound service account.
func (k *k8sAuth) issue(t *testing.T) string {
	t.Helper()
	jwt, err := k.k8s.Issue(k8sNamespace, k8sAccount)
	if err != nil {
		t.Fatal(err)
	}
	return jwt
}

// store logs in with the token in file and returns the store, its observer
// and its logs.
func (k *k8sAuth) store(ctx context.Context, t *testing.T, file string) (*vault.Store, *obs, *observer.ObservedLogs, error) {
	t.Helper()
	auth, err := vault.KubernetesAuth(k.mount, "affix-rotator", file)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	o := &obs{}
	s, err := vault.New(ctx, vault.Config{Address: k.vault.Addr, KVMount: "secret", Timeout: 5 * time.Second, Auth: auth, Observer: o, Logger: zap.New(core)})
	return s, o, logs, err
}

// revokeAll revokes every token the mount has issued, as an operator does
// with `vault token revoke -mode=path auth/<mount>/`.
func (k *k8sAuth) revokeAll(ctx context.Context, t *testing.T) {
	t.Helper()
	if _, err := k.vault.Client().Logical().WriteWithContext(ctx, "sys/leases/revoke-prefix/auth/"+k.mount+"/", nil); err != nil {
		t.Fatal(err)
	}
}

// authenticated counts the TokenReviews that authenticated the bound
// service account.
func (k *k8sAuth) authenticated() int {
	n := 0
	for _, r := range k.k8s.Reviews() {
		if r.Authenticated && r.Username == "system:serviceaccount:"+k8sNamespace+":"+k8sAccount {
			n++
		}
	}
	return n
}

// readUntilOK reads path until a read succeeds: the first read after a
// revocation is denied and starts the re-login in the background.
func readUntilOK(ctx context.Context, t *testing.T, s *vault.Store, path string) (vault.Record, []error) {
	t.Helper()
	var errs []error
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, _, err := s.Read(ctx, path)
		if err == nil {
			return rec, errs
		}
		errs = append(errs, err)
		if time.Now().After(deadline) {
			t.Fatalf("no successful read within 10s: %d errors, the last: %v", len(errs), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKubernetesLoginWriteAndRelogin logs in to a real Vault with the
// kubernetes auth method (Vault asks the TokenReview server about the
// service account JWT), writes and reads a record, and, when every token of
// the mount is revoked under it, logs in again with the JWT by itself.
func TestKubernetesLoginWriteAndRelogin(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	k := newK8sAuth(t)
	jwt := k.issue(t)
	s, o, logs, err := k.store(ctx, t, tokenFile(t, jwt))
	if err != nil {
		t.Fatalf("%v\nreviews: %+v\n%s", err, k.k8s.Reviews(), k.vault.Output())
	}
	if n := k.authenticated(); n != 1 {
		t.Fatalf("Vault made %d authenticated TokenReviews at login, want 1: %+v", n, k.k8s.Reviews())
	}
	who, err := s.WhoAmI(ctx)
	if err != nil || !strings.HasPrefix(who, k.mount+"-"+k8sNamespace+"-"+k8sAccount+" (entity ") {
		t.Fatalf("whoami %q %v, want the service account's token", who, err)
	}
	path := vaulttest.Path(t)
	if _, err := s.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("a")}, 0); err != nil {
		t.Fatal(err)
	}

	k.revokeAll(ctx, t)
	rec, errs := readUntilOK(ctx, t, s, path)
	if !rec.ClientSecret.Equal(secret.New("a")) {
		t.Fatal("read back another secret")
	}
	for _, err := range errs {
		if !errors.Is(err, vault.ErrDenied) {
			t.Fatalf("a read with the revoked token failed otherwise than denied: %v", err)
		}
	}
	if n := strings.Count(o.String(), "login:ok"); n != 2 {
		t.Fatalf("%d logins, want 2 (start, after revocation): %s", n, o)
	}
	if n := k.authenticated(); n != 2 {
		t.Fatalf("%d authenticated TokenReviews, want 2", n)
	}
	if n := logs.FilterMessage("vault: authenticated").FilterField(zap.String("auth_method", "kubernetes")).Len(); n != 1 {
		t.Fatalf("%d 'vault: authenticated' lines for kubernetes after the revocation, want 1", n)
	}
	if _, err := s.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("b")}, 1); err != nil {
		t.Fatalf("write after re-login: %v", err)
	}
	assertNoJWT(t, jwt, o.String(), logText(logs))
}

// TestKubernetesReloginReadsRotatedToken: the kubelet replaces the pod's
// service account token in its file before the old one expires; a re-login
// must send the token in the file now, not the one read at start.
func TestKubernetesReloginReadsRotatedToken(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	k := newK8sAuth(t)
	old := k.issue(t)
	file := tokenFile(t, old)
	s, _, logs, err := k.store(ctx, t, file)
	if err != nil {
		t.Fatal(err)
	}
	path := vaulttest.Path(t)
	if _, err := s.Write(ctx, path, vault.Record{Phase: vault.PhaseStable, ClientSecret: secret.New("a")}, 0); err != nil {
		t.Fatal(err)
	}
	fresh := k.issue(t)
	if err := os.WriteFile(file, []byte(fresh+"\n"), 0o600); err != nil { // a trailing newline is not part of the token
		t.Fatal(err)
	}
	k.k8s.Revoke(old) // expired, say
	k.revokeAll(ctx, t)
	readUntilOK(ctx, t, s, path)
	assertNoJWT(t, old, logText(logs))
	assertNoJWT(t, fresh, logText(logs))
}

// TestKubernetesLoginRejected: a login Vault refuses after its TokenReview
// (or before, for a service account the role is not bound to) fails with
// ErrDenied and an error that names the auth method and holds no JWT.
func TestKubernetesLoginRejected(t *testing.T) {
	ctx := context.Background()
	k := newK8sAuth(t)
	revoked := k.issue(t)
	k.k8s.Revoke(revoked)
	foreign, err := k8stest.IssueForeign(k8sNamespace, k8sAccount)
	if err != nil {
		t.Fatal(err)
	}
	otherNS, err := k.k8s.Issue("default", k8sAccount)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, jwt string }{
		{"token the API server invalidated", revoked},
		{"token of another cluster", foreign},
		{"service account the role is not bound to", otherNS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := k.store(ctx, t, tokenFile(t, tc.jwt))
			if !errors.Is(err, vault.ErrDenied) {
				t.Fatalf("login: %v, want ErrDenied", err)
			}
			if !strings.Contains(err.Error(), "auth method kubernetes") {
				t.Fatalf("error does not name the auth method: %v", err)
			}
			assertNoJWT(t, tc.jwt, err.Error())
			t.Logf("error: %v", err)
		})
	}

	// Vault's own reviewer token is refused by the API server: Vault denies
	// the login too (its log says why).
	bad := k.issue(t)
	if _, err := k.vault.Client().Logical().WriteWithContext(ctx, "auth/"+k.mount+"/config", map[string]any{
		"kubernetes_host": k.k8s.URL, "kubernetes_ca_cert": k.k8s.CACert, "token_reviewer_jwt": bad,
	}); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = k.store(ctx, t, tokenFile(t, bad))
	if !errors.Is(err, vault.ErrDenied) || !strings.Contains(err.Error(), "auth method kubernetes") {
		t.Fatalf("login with Vault's reviewer refused: %v", err)
	}
	assertNoJWT(t, bad, err.Error())
	if r := k.k8s.Reviews(); r[len(r)-1].Reviewer {
		t.Fatalf("the last review was not refused for its reviewer: %+v", r[len(r)-1])
	}
}

// assertNoJWT fails when any text holds jwt or one of its three parts.
func assertNoJWT(t *testing.T, jwt string, texts ...string) {
	t.Helper()
	for _, text := range texts {
		for _, part := range append(strings.Split(jwt, "."), jwt) {
			if strings.Contains(text, part) {
				t.Fatal("the service account JWT appears in an error or a log")
			}
		}
	}
}

func logText(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&b, "%s %v\n", e.Message, e.ContextMap())
	}
	return b.String()
}
