package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/pace"
	"github.com/affix-rotator/affix-rotator/internal/redact"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// newLogger builds the zap logger: JSON (or console) lines on w, durations
// as Go duration strings.
func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey, ec.EncodeTime = "ts", zapcore.ISO8601TimeEncoder
	// Durations as Go duration strings ("24h0m0s", "1.5s"), not bare
	// seconds: a log line says what it means without the unit in the key.
	ec.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level), zap.AddCaller()), nil
}

// minRedacted is the shortest secret the process-wide redaction looks for
// in logs, /status and payloads: API keys, Vault tokens and signing keys
// are far longer, and a shorter one (a test's) would redact common words.
const minRedacted = 8

// addAPIKeys adds the API key of every client of cfg (those that can be
// read) to secrets.
func addAPIKeys(secrets *redact.Set, cfg *config.Config, getenv func(string) string) {
	if secrets == nil {
		return
	}
	for _, c := range cfg.Clients {
		if key, err := cfg.AffixFor(c).APIKey(getenv); err == nil {
			secrets.AddValues(key)
		}
	}
}

// vaultAuth resolves the Vault auth method; the token or secret id comes
// from the environment or a file, never from the YAML.
func vaultAuth(a config.VaultAuth, getenv func(string) string) (vault.Auth, error) {
	switch a.Method {
	case "approle":
		roleID := a.AppRole.RoleID
		if a.AppRole.RoleIDFile != "" {
			b, err := os.ReadFile(a.AppRole.RoleIDFile)
			if err != nil {
				return vault.Auth{}, &config.Error{Key: "vault.auth.approle.role_id_file", Problem: err.Error()}
			}
			roleID = strings.TrimSpace(string(b))
		}
		au, err := vault.AppRoleAuth(a.AppRole.Mount, roleID, a.AppRole.SecretIDFile, a.AppRole.SecretIDEnv)
		if err != nil {
			return vault.Auth{}, &config.Error{Key: "vault.auth.approle", Problem: err.Error()}
		}
		return au, nil
	case "kubernetes":
		au, err := vault.KubernetesAuth(a.Kubernetes.Mount, a.Kubernetes.Role, a.Kubernetes.TokenFile)
		if err != nil {
			return vault.Auth{}, &config.Error{Key: "vault.auth.kubernetes", Problem: err.Error()}
		}
		return au, nil
	default:
		if a.TokenFile != "" {
			b, err := os.ReadFile(a.TokenFile)
			if err != nil {
				return vault.Auth{}, &config.Error{Key: "vault.auth.token_file", Problem: err.Error()}
			}
			tok := strings.TrimRight(string(b), "\r\n")
			if tok == "" || strings.ContainsAny(tok, "\r\n\x00") {
				return vault.Auth{}, &config.Error{Key: "vault.auth.token_file", Problem: "file is empty or holds more than one line"}
			}
			return vault.TokenAuth(secret.New(tok)), nil
		}
		tok := getenv(a.TokenEnv)
		if tok == "" {
			return vault.Auth{}, &config.Error{Key: "vault.auth.token_env", Problem: fmt.Sprintf("environment variable %s is empty", a.TokenEnv)}
		}
		if strings.ContainsAny(tok, "\r\n\x00") {
			return vault.Auth{}, &config.Error{Key: "vault.auth.token_env", Problem: fmt.Sprintf("environment variable %s holds a control character", a.TokenEnv)}
		}
		return vault.TokenAuth(secret.New(tok)), nil
	}
}

// buildClients resolves each client's Affix client and schedule. Clients on
// one API key (on one API host) share a pacer: the account's rate limit,
// and its hold after a 429.
//
// Two clients with the same base URL and API key are refused: the request
// names no client (the key selects it), so both would rotate one
// client_secret, each dropping the other's.
func buildClients(cfg *config.Config, selected []config.Client, getenv func(string) string) ([]*rotator.Client, error) {
	type account struct{ host, key string }
	type target struct{ base, key string }
	pacers := map[account]*pace.Pacer{}
	targets := map[target]string{}
	index := map[string]int{} // position in the config, for error keys
	for i, cc := range cfg.Clients {
		index[cc.Name] = i
	}
	var out []*rotator.Client
	var errs []error
	for _, cc := range selected {
		i := index[cc.Name]
		ac := cfg.AffixFor(cc)
		key, err := ac.APIKey(getenv)
		if err != nil {
			// In the one key format of -validate: clients[0].affix.api_key_env
			// (client "prod") for the client's own key, else the shared one.
			ce := &config.Error{Key: "affix.api_key_env", Problem: err.Error()}
			if e := (*config.Error)(nil); errors.As(err, &e) {
				ce.Key, ce.Problem = e.Key, e.Problem
			}
			if cc.Affix.APIKeyEnv != "" || cc.Affix.APIKeyFile != "" {
				ce.Key, ce.Client = fmt.Sprintf("clients[%d].%s", i, ce.Key), cc.Name
			} else {
				ce.Problem += fmt.Sprintf(" (used by client %q)", cc.Name)
			}
			errs = append(errs, ce)
			continue
		}
		t := target{strings.TrimSuffix(ac.BaseURL, "/"), key.Reveal()}
		if other, dup := targets[t]; dup {
			errs = append(errs, &config.Error{Key: fmt.Sprintf("clients[%d].affix", i), Client: cc.Name, Problem: fmt.Sprintf(
				"client %q has the same base_url and API key as client %q: the API key selects the Affix client, so both would rotate one client_secret and lock each other out; give each its own API key (affix.api_key_env or api_key_file under the client)", cc.Name, other)})
			continue
		}
		targets[t] = cc.Name
		acct := account{hostOf(ac.BaseURL), key.Reveal()}
		p, ok := pacers[acct]
		if !ok {
			p = pace.New(ac.RateLimit, ac.Burst, nil)
			pacers[acct] = p
		}
		api, err := affix.New(ac.BaseURL, key, affix.WithTimeout(ac.Timeout.D()), affix.WithLimiter(p))
		if err != nil {
			errs = append(errs, &config.Error{Key: fmt.Sprintf("clients[%d].affix", i), Client: cc.Name, Problem: err.Error()})
			continue
		}
		sched, err := config.ParseSchedule(cc.Schedule)
		if err != nil {
			errs = append(errs, &config.Error{Key: fmt.Sprintf("clients[%d].schedule", i), Client: cc.Name, Problem: err.Error()})
			continue
		}
		out = append(out, &rotator.Client{
			Name: cc.Name, VaultPath: cc.VaultPath, Schedule: sched, ScheduleSpec: cc.Schedule,
			GracePeriod: cc.GracePeriod.D(), Jitter: cc.Jitter.D(), MaxAge: cc.MaxAge.D(), Bootstrap: cc.Bootstrap,
			Affix: api, AppName: cc.App.Name, RedirectURIs: cc.App.RedirectURIs,
			WebhookURI: affix.Nullable{Set: cc.App.WebhookURI.Set, Null: cc.App.WebhookURI.Null, Value: cc.App.WebhookURI.Value},
		})
	}
	return out, errors.Join(errs...)
}

// hostOf returns the scheme and host of a base URL (which config validation
// has checked), the scope of an API key's rate limit.
func hostOf(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	return u.Scheme + "://" + u.Host
}

// closeStore ends the store's token renewal and revokes a token obtained
// by login (the store logs it), on the way out; nil: nothing to close.
func closeStore(s *vault.Store, log *zap.Logger) {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		log.Warn("vault: the login token was not revoked: it stays valid until its TTL", zap.Error(err))
	}
}
