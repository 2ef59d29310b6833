package vault

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
)

// Config configures a Store. Empty Address and Namespace fall back to the
// VAULT_ADDR and VAULT_NAMESPACE environment variables, as the Vault CLI
// does; VAULT_CACERT and VAULT_SKIP_VERIFY are honoured the same way.
type Config struct {
	Address            string
	Namespace          string
	KVMount            string // e.g. "secret"
	Timeout            time.Duration
	CACert             string
	InsecureSkipVerify bool
	Auth               Auth
	Observer           Observer
	Logger             *zap.Logger
	// Secrets, when set, is told every token a login obtains, so that the
	// process's one redaction removes it from outside text too.
	Secrets Secrets
}

// Secrets collects the secrets in play (a *redact.Set).
type Secrets interface{ Add(secrets ...string) }

// New builds the Vault client, authenticates once (failing fast with a clear
// error), and keeps the token renewed in the background until ctx ends or
// Close is called.
func New(ctx context.Context, cfg Config) (*Store, error) {
	ac := api.DefaultConfig()
	if ac.Error != nil {
		return nil, fmt.Errorf("vault: read environment: %w", ac.Error)
	}
	if cfg.Address != "" {
		ac.Address = cfg.Address
	}
	if u, err := url.Parse(ac.Address); err == nil && u.User != nil {
		// Not quoted: the user info is a credential.
		return nil, errors.New("vault: the address (vault.address or VAULT_ADDR) must not hold credentials (user:password@)")
	}
	if cfg.Timeout > 0 {
		ac.Timeout = cfg.Timeout
	}
	// The rotator retries with its own capped backoff and jitter; one layer
	// of retries is enough.
	ac.MaxRetries = 0
	if cfg.CACert != "" || cfg.InsecureSkipVerify {
		if err := ac.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert, Insecure: cfg.InsecureSkipVerify}); err != nil {
			return nil, fmt.Errorf("vault: tls: %w", err)
		}
	}
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("vault: client for %s: %w", ac.Address, err)
	}
	// The client shares ac.HttpClient: from now on no request follows a
	// redirect to another host.
	ac.HttpClient.Transport = sameOrigin{next: ac.HttpClient.Transport}
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	mount := strings.Trim(cfg.KVMount, "/")
	if mount == "" {
		mount = "secret"
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	a := &authenticator{client: newAPIClient(client), auth: cfg.Auth, log: log, obs: cfg.Observer, secrets: cfg.Secrets, kickCh: make(chan struct{}, 1),
		freshCh: make(chan *api.Secret, 1), done: make(chan struct{})}
	sec, err := a.login(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w (address %s)", err, ac.Address)
	}
	rctx, stop := context.WithCancel(ctx)
	a.stop = stop
	go func() {
		defer close(a.done)
		a.run(rctx, sec)
	}()
	return &Store{client: a.client, kv: client.KVv2(mount), mount: mount, obs: cfg.Observer, auth: a}, nil
}
