package cli

import (
	"context"
	"net"
	"net/url"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/httpapi"
	"github.com/affix-rotator/affix-rotator/internal/redact"
	"github.com/affix-rotator/affix-rotator/internal/version"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// vaultAddress is the Vault the process talks to, for logs and /status:
// the config's address, else VAULT_ADDR, else the Vault library's
// default; never with user info (Main refuses it; this drops it again).
func vaultAddress(cfg *config.Config, getenv func(string) string) string {
	a, err := cfg.VaultAddr(getenv)
	switch {
	case err != nil:
		return "(VAULT_ADDR refused: not shown)"
	case a == "":
		return "https://127.0.0.1:8200"
	}
	return withoutUserinfo(a)
}

// withoutUserinfo drops the user info of a URL ("" for one that does not
// parse: it is not shown).
func withoutUserinfo(a string) string {
	u, err := url.Parse(a)
	if err != nil {
		return ""
	}
	u.User = nil
	return u.String()
}

// logStart logs what the process runs with: version, Vault, auth method,
// instance id, and each client's schedule (the rotator logs each client's
// next run once it has read its record).
func logStart(log *zap.Logger, cfg *config.Config, f flags, getenv func(string) string, clients []*rotator.Client) {
	mode := "daemon"
	switch {
	case f.once:
		mode = "once"
	case f.action() != "":
		mode = f.action()
	}
	log.Info("affix-rotator starting", zap.String("version", version.Version), zap.String("go", version.GoVersion()), zap.String("mode", mode),
		zap.String("config", f.config), zap.String("vault_address", vaultAddress(cfg, getenv)), zap.String("vault_auth_method", cfg.Vault.Auth.Method),
		zap.String("kv_mount", cfg.Vault.KVMount), zap.Int("clients", len(clients)))
	for _, c := range clients {
		log.Info("client configured", zap.String("client", c.Name), zap.String("vault_path", c.VaultPath), zap.String("schedule", c.ScheduleSpec),
			zap.Duration("grace_period", c.GracePeriod), zap.Duration("jitter", c.Jitter), zap.Duration("max_age", c.MaxAge))
	}
}

// runDaemon serves the HTTP listener at once (while it waits for Vault
// too), connects to Vault, runs every client until ctx ends, and reloads
// the config on each value of env.Hangup (SIGHUP).
func runDaemon(ctx context.Context, cfg *config.Config, f flags, env Env, log *zap.Logger, auth vault.Auth, reg *prometheus.Registry, metrics *rotator.Metrics, instanceID string, clients []*rotator.Client, events func(rotator.Event), secrets *redact.Set) int {
	health := &vaultHealth{obs: metrics, address: vaultAddress(cfg, env.Getenv), method: auth.Method}
	rl := newReloader(f.config, cfg, clients, env.Getenv, reg)
	rl.secrets = secrets
	// Every configured client has its series before Vault answers.
	for _, c := range clients {
		metrics.InitClient(c.Name)
	}
	var store atomic.Pointer[vault.Store]
	defer func() { closeStore(store.Load(), log) }() // last: after the listener and the rotator
	var rot atomic.Pointer[rotator.Rotator]
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error("cannot listen", zap.String("listen", cfg.Listen), zap.Error(err))
		return ExitFailed
	}
	srv := httpapi.Serve(ln, httpapi.Handler(httpapi.Options{
		Gatherer: reg,
		Redact:   secrets.String,
		Ready:    readyCheck(&store, &rot, health, httpapi.DefaultReadyCache),
		Status: func() any {
			doc := daemonStatus{Version: version.Version, InstanceID: instanceID, Vault: health.status()}
			if r := rot.Load(); r != nil {
				doc.Clients = r.Status()
			}
			doc.Clients = withConfigured(doc.Clients, rl.names(), doc.Vault)
			return doc
		},
	}), httpapi.DefaultLimits)
	defer shutdown(srv)
	log.Info("listening", zap.String("addr", ln.Addr().String()))

	r, code := connectAndBuild(ctx, cfg, f, env, log, auth, metrics, health, instanceID, &store, events, secrets)
	if r == nil {
		if ctx.Err() != nil {
			// SIGINT/SIGTERM while still waiting for Vault: a clean stop.
			log.Info("shutting down before vault answered; nothing was done")
			return ExitOK
		}
		return code
	}
	health.setConnected()
	denied := func() bool { return r.Denied() != nil }
	health.denied.Store(&denied)
	rot.Store(r)
	log.Info("daemon started", zap.Int("clients", len(clients)))

	updates := make(chan []*rotator.Client)
	served := make(chan struct{})
	go func() { r.Serve(ctx, clients, updates); close(served) }()
	for {
		select {
		case <-ctx.Done():
			<-served
			log.Info("shutting down: every rotation in flight is recorded in Vault and resumes on restart")
			return ExitOK
		case <-env.Hangup:
			log.Info("SIGHUP: reloading the config", zap.String("config", f.config))
			next, summary, err := rl.reload()
			if err != nil {
				log.Error("config reload refused: the running config stays in force", zap.String("config", f.config), zap.Error(err))
				continue
			}
			for _, c := range next {
				metrics.InitClient(c.Name)
			}
			select {
			case updates <- next:
			case <-ctx.Done():
				continue
			}
			log.Info("config reloaded", append(summary.fields(), zap.String("config", f.config))...)
		}
	}
}

// withConfigured adds every configured client the rotator has not listed
// yet (before Vault answers) with state "unknown" and why.
func withConfigured(have []rotator.ClientStatus, names []string, v vaultStatus) []rotator.ClientStatus {
	seen := map[string]bool{}
	for _, s := range have {
		seen[s.Client] = true
	}
	out := append([]rotator.ClientStatus{}, have...)
	for _, n := range names {
		if seen[n] {
			continue
		}
		why := "waiting for vault"
		if v.LastError != "" {
			why += ": " + v.LastError
		}
		out = append(out, rotator.ClientStatus{Client: n, State: rotator.StateUnknown, StateReason: why})
	}
	return out
}
