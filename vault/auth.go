package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/backoff"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// Auth says how the store authenticates: a static token, or a login method
// (AppRole, Kubernetes) whose token is renewed and, when it can be renewed
// no more, replaced by logging in again.
type Auth struct {
	Method string         // "token", "approle" or "kubernetes" (for logs and errors)
	Token  secret.Value   // method token
	Login  api.AuthMethod // approle and kubernetes
}

// TokenAuth authenticates with a token obtained elsewhere (env var, file,
// Vault Agent sink). A renewable token is renewed.
func TokenAuth(token secret.Value) Auth { return Auth{Method: "token", Token: token} }

// AppRoleAuth logs in at auth/<mount> with a role id and a secret id read
// from a file or an environment variable at each login.
func AppRoleAuth(mount, roleID, secretIDFile, secretIDEnv string) (Auth, error) {
	sid := &approle.SecretID{FromFile: secretIDFile, FromEnv: secretIDEnv}
	a, err := approle.NewAppRoleAuth(roleID, sid, approle.WithMountPath(mount))
	if err != nil {
		return Auth{}, fmt.Errorf("vault: approle auth: %w", err)
	}
	return Auth{Method: "approle", Login: a}, nil
}

// KubernetesAuth logs in at auth/<mount> as role with the pod's service
// account token, re-read from tokenFile at each login: the kubelet replaces
// the token before it expires, so the one read at start may be refused by
// the time the daemon logs in again. The file is read once here too, to
// fail fast when it is missing.
func KubernetesAuth(mount, role, tokenFile string) (Auth, error) {
	k := kubernetesLogin{mount: mount, role: role, tokenFile: tokenFile}
	if _, err := k.method(); err != nil {
		return Auth{}, fmt.Errorf("vault: kubernetes auth: %w", err)
	}
	return Auth{Method: "kubernetes", Login: k}, nil
}

// kubernetesLogin is the library's kubernetes auth method built afresh at
// each login from the token in the file (the library's own file option
// reads the file only once, when the method is built).
type kubernetesLogin struct{ mount, role, tokenFile string }

// Login implements api.AuthMethod.
func (k kubernetesLogin) Login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	m, err := k.method()
	if err != nil {
		return nil, err
	}
	return m.Login(ctx, c)
}

// method reads the token file and builds the library's method with it.
// Errors name the file, never its content.
func (k kubernetesLogin) method() (*kubernetes.KubernetesAuth, error) {
	b, err := os.ReadFile(k.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("read the service account token: %w", err)
	}
	jwt := strings.TrimSpace(string(b))
	if jwt == "" {
		return nil, fmt.Errorf("the service account token file %s is empty", k.tokenFile)
	}
	m, err := kubernetes.NewKubernetesAuth(k.role, kubernetes.WithMountPath(k.mount), kubernetes.WithServiceAccountToken(jwt))
	if err != nil {
		return nil, fmt.Errorf("kubernetes auth method (mount %s, role %s): %w", k.mount, k.role, err)
	}
	return m, nil
}

// DeniedHint says what to check when Vault denies the method's login or
// token (for logs and the one-shot commands' FAILED line).
func (a Auth) DeniedHint() string {
	switch a.Method {
	case "approle":
		return "check the role id and the secret id (expired, or out of uses?) and that the AppRole role exists"
	case "kubernetes":
		return "check that the token in vault.auth.kubernetes.token_file is current, that the Kubernetes auth role (vault.auth.kubernetes.role) has this pod's service account and namespace in bound_service_account_names and bound_service_account_namespaces, " +
			"and that the auth method's config (kubernetes_host, kubernetes_ca_cert, token_reviewer_jwt) lets Vault have the token reviewed by the cluster's API server; Vault logs the reason at debug level (\"login unauthorized\")"
	default:
		return "check that the token is valid (not expired or revoked: `vault token lookup`)"
	}
}

// apiClient holds the Vault client one pointer away from the structs that
// use it. The api.Client keeps its token in an unexported string field,
// and fmt, printing a struct with %s or %q, follows a pointer field once
// (in its %!s(…) complaint) and prints the fields behind it: behind this
// wrapper it finds only another pointer, printed as an address.
type apiClient struct{ *api.Client }

func newAPIClient(c *api.Client) *apiClient { return &apiClient{c} }

// authenticator owns the client's token: the first login, renewal through
// api.LifetimeWatcher, and a fresh login when renewal ends or Vault denies.
type authenticator struct {
	client  *apiClient
	auth    Auth
	log     *zap.Logger
	obs     Observer
	secrets Secrets // nil: none
	kickCh  chan struct{}
	// freshCh hands the background loop a token that cure logged in for,
	// so that it renews that one instead of logging in again.
	freshCh chan *api.Secret
	// mu serialises logins (cure's and the background loop's).
	mu   sync.Mutex
	stop context.CancelFunc // ends run
	done chan struct{}      // closed when run has returned
}

// cure is called after Vault refused (401/403) a request sent with the
// token used. It reports whether to send the request once more:
//
//   - another login replaced the token since: yes, with the new one;
//   - the token is no longer valid (lookup-self is refused too: revoked or
//     expired) and the method can log in (AppRole, Kubernetes): it logs in
//     now, hands the new token to the background loop, and says yes;
//   - the token is valid (lookup-self answers): the refusal comes from its
//     policy, which a new login would get again: no login, no;
//   - a static token that is no longer valid cannot be replaced: no.
func (a *authenticator) cure(ctx context.Context, used string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.client.Token() != used {
		return true
	}
	if _, err := a.client.Auth().Token().LookupSelfWithContext(ctx); err == nil || !isDeniedResponse(err) || a.auth.Login == nil {
		return false
	}
	sec, err := a.login(ctx)
	if err != nil {
		a.log.Warn("vault: the token is no longer valid (revoked or expired) and logging in again failed; retrying in the background", zap.String("auth_method", a.auth.Method), zap.Error(err))
		a.kick()
		return false
	}
	a.log.Info("vault: authenticated", zap.String("auth_method", a.auth.Method), zap.String("why", "the token was no longer valid (revoked or expired): logged in again; the refused request is sent once more"))
	select {
	case <-a.freshCh: // an older hand-off the loop has not taken yet
	default:
	}
	a.freshCh <- sec
	return true
}

func (a *authenticator) kick() {
	select {
	case a.kickCh <- struct{}{}:
	default:
	}
}

// login authenticates once and returns the secret to watch (nil when the
// token cannot be renewed).
func (a *authenticator) login(ctx context.Context) (*api.Secret, error) {
	start := time.Now()
	sec, err := a.doLogin(ctx)
	denied := isDeniedResponse(err)
	if a.obs != nil {
		result, up := "ok", true
		switch {
		case denied:
			result = "denied" // Vault answered: it refuses the credentials
		case err != nil:
			result, up = "error", false
		}
		a.obs.VaultRequest("login", result, time.Since(start), up)
	}
	if denied {
		err = fmt.Errorf("%w: %w", ErrDenied, err)
	}
	if err == nil && a.secrets != nil && sec != nil && sec.Auth != nil {
		a.secrets.Add(sec.Auth.ClientToken)
	}
	return sec, err
}

// isDeniedResponse reports whether Vault answered 401 or 403.
func isDeniedResponse(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized)
}

func (a *authenticator) doLogin(ctx context.Context) (*api.Secret, error) {
	if a.auth.Login == nil {
		a.client.SetToken(a.auth.Token.Reveal())
		self, err := a.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("vault: check token (auth method token): %w", err)
		}
		if renewable, _ := self.TokenIsRenewable(); !renewable {
			return nil, nil
		}
		sec, err := a.client.Auth().Token().RenewSelfWithContext(ctx, 0)
		if isDeniedResponse(err) {
			// The token is valid (lookup-self answered) but its policies
			// do not grant auth/token/renew-self (a token created with
			// -no-default-policy, say): use it until it expires.
			a.log.Warn("vault: the token may not renew itself (its policies lack auth/token/renew-self); it is used as it is until it expires", zap.Error(err))
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("vault: renew token: %w", err)
		}
		return sec, nil
	}
	a.client.ClearToken()
	sec, err := a.client.Auth().Login(ctx, a.auth.Login)
	if err != nil {
		return nil, fmt.Errorf("vault: login (auth method %s): %w", a.auth.Method, err)
	}
	if sec == nil || sec.Auth == nil {
		return nil, fmt.Errorf("vault: login (auth method %s): no auth info in the response", a.auth.Method)
	}
	return sec, nil
}

// run keeps the token alive until ctx ends: it renews sec with a
// LifetimeWatcher and logs in again (with capped backoff) when renewal stops,
// when the token reaches its max TTL, or when Vault denies a request.
func (a *authenticator) run(ctx context.Context, sec *api.Secret) {
	for {
		fresh := a.watch(ctx, sec)
		if ctx.Err() != nil {
			return
		}
		if fresh != nil {
			sec = fresh // cure logged in already
			continue
		}
		sec = a.relogin(ctx)
	}
}

// watch returns when the token needs replacing or ctx ends; it returns the
// token cure logged in for, if that is why.
func (a *authenticator) watch(ctx context.Context, sec *api.Secret) *api.Secret {
	if sec == nil || sec.Auth == nil || !sec.Auth.Renewable {
		// Nothing to renew: a static token (re-checked when Vault denies a
		// request) or a login token that lives until its TTL.
		var expiry <-chan time.Time
		if sec != nil && sec.Auth != nil && sec.Auth.LeaseDuration > 0 {
			t := time.NewTimer(time.Duration(sec.Auth.LeaseDuration) * time.Second * 9 / 10)
			defer t.Stop()
			expiry = t.C
		}
		select {
		case <-ctx.Done():
		case <-a.kickCh:
		case <-expiry:
		case fresh := <-a.freshCh:
			return fresh
		}
		return nil
	}
	w, err := a.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: sec})
	if err != nil {
		a.log.Warn("vault: cannot watch the token; logging in again", zap.Error(err))
		return nil
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.DoneCh():
			if err != nil {
				a.log.Warn("vault: token renewal stopped; logging in again", zap.Error(err))
			} else {
				a.log.Info("vault: token reached its max TTL; logging in again")
			}
			return nil
		case <-w.RenewCh():
			if a.obs != nil {
				a.obs.VaultRequest("renew", "ok", 0, true)
			}
			a.log.Debug("vault: token renewed")
		case <-a.kickCh:
			return nil
		case fresh := <-a.freshCh:
			return fresh
		}
	}
}

// relogin logs in until it succeeds or ctx ends.
func (a *authenticator) relogin(ctx context.Context) *api.Secret {
	b := backoff.New(time.Second, time.Minute, nil)
	for {
		a.mu.Lock()
		sec, err := a.login(ctx)
		a.mu.Unlock()
		if err == nil {
			a.log.Info("vault: authenticated", zap.String("auth_method", a.auth.Method))
			return sec
		}
		d := b.Next()
		if errors.Is(err, ErrDenied) {
			a.log.Error("vault: authentication denied; retrying: "+a.auth.DeniedHint(), zap.String("auth_method", a.auth.Method), zap.Error(err), zap.Duration("retry_in", d))
		} else {
			a.log.Warn("vault: authentication failed; retrying", zap.String("auth_method", a.auth.Method), zap.Error(err), zap.Duration("retry_in", d))
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Close stops the token's renewal and, when the token was obtained by a
// login (AppRole, Kubernetes), revokes it (auth/token/revoke-self) and
// logs so: it would otherwise stay valid until its TTL. A token given to
// the process (method token) is not the process's to revoke and is left
// alone. Use the Store no more after Close.
func (s *Store) Close(ctx context.Context) error {
	a := s.auth
	if a == nil {
		return nil
	}
	a.stop()
	select {
	case <-a.done:
	case <-ctx.Done():
		return fmt.Errorf("vault: close: waiting for the token renewal to stop: %w", ctx.Err())
	}
	if a.auth.Login == nil || a.client.Token() == "" {
		return nil
	}
	start := time.Now()
	err := a.client.Auth().Token().RevokeSelfWithContext(ctx, "")
	if err != nil {
		s.observe("revoke", "error", start, false)
		return fmt.Errorf("vault: revoke the login token (auth method %s, auth/token/revoke-self): %w", a.auth.Method, err)
	}
	s.observe("revoke", "ok", start, true)
	a.client.ClearToken()
	a.log.Info("vault: login token revoked (auth/token/revoke-self)", zap.String("auth_method", a.auth.Method))
	return nil
}
