package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/pace"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// newLogger builds the zap logger: JSON (or console) lines on w.
func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey, ec.EncodeTime = "ts", zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level), zap.AddCaller()), nil
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

// buildClients resolves each client's Affix account (one HTTP client per
// base URL and API key, shared by the clients that use it) and schedule.
func buildClients(cfg *config.Config, selected []config.Client, getenv func(string) string) ([]*rotator.Client, error) {
	type account struct{ base, key string }
	accounts := map[account]*affix.Client{}
	var out []*rotator.Client
	var errs []error
	for i, cc := range selected {
		ac := cfg.AffixFor(cc)
		key, err := ac.APIKey(getenv)
		if err != nil {
			errs = append(errs, fmt.Errorf("clients[%s]: %w", cc.Name, err))
			continue
		}
		id := account{ac.BaseURL, key.Reveal()}
		api, ok := accounts[id]
		if !ok {
			// One pacer per API key: the clients sharing an account share
			// its rate limit, and a 429 to any of them holds them all until
			// its Retry-After.
			api, err = affix.New(ac.BaseURL, key, affix.WithTimeout(ac.Timeout.D()),
				affix.WithLimiter(pace.New(ac.RateLimit, ac.Burst, nil)))
			if err != nil {
				errs = append(errs, &config.Error{Key: fmt.Sprintf("clients[%d].affix", i), Problem: err.Error()})
				continue
			}
			accounts[id] = api
		}
		sched, err := config.ParseSchedule(cc.Schedule)
		if err != nil {
			errs = append(errs, &config.Error{Key: fmt.Sprintf("clients[%d].schedule", i), Problem: err.Error()})
			continue
		}
		out = append(out, &rotator.Client{
			Name: cc.Name, VaultPath: cc.VaultPath, Schedule: sched,
			GracePeriod: cc.GracePeriod.D(), Jitter: cc.Jitter.D(), MaxAge: cc.MaxAge.D(), Bootstrap: cc.Bootstrap,
			Affix: api, AppName: cc.App.Name, RedirectURIs: cc.App.RedirectURIs,
			WebhookURI: affix.Nullable{Set: cc.App.WebhookURI.Set, Null: cc.App.WebhookURI.Null, Value: cc.App.WebhookURI.Value},
		})
	}
	return out, errors.Join(errs...)
}
