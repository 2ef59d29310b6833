package cli

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/redact"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// reloader applies a new config on SIGHUP (docs/design.md, Running it):
// clients added, removed or changed take effect at once; a config that
// fails validation (or whose environment lacks an API key) is refused and
// the old one keeps running; so is one that changes a setting that needs
// a restart (listen, instance_id, log, vault, rotation, notifications). The outcome is
// exported as Prometheus exports its own:
// affix_rotator_config_last_reload_successful and
// affix_rotator_config_last_reload_success_timestamp_seconds.
type reloader struct {
	path   string
	getenv func(string) string
	ok, at prometheus.Gauge
	// secrets is told the API keys of every config loaded (nil: none).
	secrets *redact.Set

	mu    sync.Mutex
	cur   *config.Config
	known map[string]knownClient
	order []string
}

// knownClient is what a running client was built from: the same inputs
// keep its *rotator.Client (its loop goes on), others restart it.
type knownClient struct {
	cc    config.Client
	affix config.Affix
	key   [32]byte // digest of the API key, never the key
	c     *rotator.Client
}

// ReloadGauges creates and registers on reg the daemon's reload metrics:
// affix_rotator_config_last_reload_successful and
// affix_rotator_config_last_reload_success_timestamp_seconds.
func ReloadGauges(reg prometheus.Registerer) (ok, at prometheus.Gauge) {
	ok = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "affix_rotator", Name: "config_last_reload_successful",
		Help: "Whether the last configuration reload attempt (start or SIGHUP) succeeded (1) or was refused (0)."})
	at = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "affix_rotator", Name: "config_last_reload_success_timestamp_seconds",
		Help: "Time of the last successful configuration load (start or SIGHUP)."})
	reg.MustRegister(ok, at)
	return ok, at
}

func newReloader(path string, cfg *config.Config, clients []*rotator.Client, getenv func(string) string, reg prometheus.Registerer) *reloader {
	rl := &reloader{path: path, getenv: getenv, cur: cfg}
	rl.ok, rl.at = ReloadGauges(reg)
	rl.ok.Set(1)
	rl.at.SetToCurrentTime()
	rl.known, rl.order = rl.index(cfg, clients)
	return rl
}

func (rl *reloader) index(cfg *config.Config, clients []*rotator.Client) (map[string]knownClient, []string) {
	known := map[string]knownClient{}
	var order []string
	for i, c := range clients {
		cc := cfg.Clients[i]
		ac := cfg.AffixFor(cc)
		k := knownClient{cc: cc, affix: ac, c: c}
		if key, err := ac.APIKey(rl.getenv); err == nil {
			k.key = sha256.Sum256([]byte(key.Reveal()))
		}
		known[c.Name] = k
		order = append(order, c.Name)
	}
	return known, order
}

// names lists the configured clients, in config order.
func (rl *reloader) names() []string {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return append([]string(nil), rl.order...)
}

// reloadSummary says what a reload changed, for its log line.
type reloadSummary struct{ added, removed, changed, unchanged []string }

func (s reloadSummary) fields() []zap.Field {
	return []zap.Field{zap.Strings("added", s.added), zap.Strings("removed", s.removed), zap.Strings("changed", s.changed), zap.Int("unchanged", len(s.unchanged))}
}

// reload reads and checks the config file again and returns the new client
// set, each unchanged client as the same *rotator.Client as before.
func (rl *reloader) reload() ([]*rotator.Client, reloadSummary, error) {
	clients, sum, err := rl.load()
	if err != nil {
		rl.ok.Set(0)
		return nil, sum, err
	}
	rl.ok.Set(1)
	rl.at.SetToCurrentTime()
	return clients, sum, nil
}

func (rl *reloader) load() ([]*rotator.Client, reloadSummary, error) {
	var sum reloadSummary
	cfg, err := config.Load(rl.path)
	if err != nil {
		return nil, sum, fmt.Errorf("invalid config %s:\n%w", rl.path, err)
	}
	addAPIKeys(rl.secrets, cfg, rl.getenv)
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if changed := restartOnly(rl.cur, cfg); len(changed) > 0 {
		return nil, sum, fmt.Errorf("%s changed: these settings need a restart (clients and affix are reloaded; everything else is read at start): restart the daemon to apply them, or put them back", strings.Join(changed, ", "))
	}
	built, err := buildClients(cfg, cfg.Clients, rl.getenv)
	if err != nil {
		return nil, sum, fmt.Errorf("invalid config %s:\n%w", rl.path, err)
	}
	if len(built) != len(cfg.Clients) {
		return nil, sum, errors.New("internal error: a client was not built")
	}
	known, order := rl.index(cfg, built)
	out := make([]*rotator.Client, 0, len(built))
	for _, name := range order {
		k := known[name]
		old, ok := rl.known[name]
		switch {
		case !ok:
			sum.added = append(sum.added, name)
		case reflect.DeepEqual(old.cc, k.cc) && reflect.DeepEqual(old.affix, k.affix) && old.key == k.key:
			k.c = old.c // unchanged: its loop goes on
			known[name] = k
			sum.unchanged = append(sum.unchanged, name)
		default:
			sum.changed = append(sum.changed, name)
		}
		out = append(out, k.c)
	}
	for name := range rl.known {
		if _, ok := known[name]; !ok {
			sum.removed = append(sum.removed, name)
		}
	}
	sort.Strings(sum.removed)
	rl.cur, rl.known, rl.order = cfg, known, order
	return out, sum, nil
}

// restartOnly names the settings that differ between the running config
// and a new one but are only read at start.
func restartOnly(old, next *config.Config) []string {
	var out []string
	if old.Listen != next.Listen {
		out = append(out, fmt.Sprintf("listen (%q → %q)", old.Listen, next.Listen))
	}
	if old.InstanceID != next.InstanceID {
		out = append(out, fmt.Sprintf("instance_id (%q → %q)", old.InstanceID, next.InstanceID))
	}
	if !reflect.DeepEqual(old.Vault, next.Vault) {
		out = append(out, "vault (address, auth, namespace, kv_mount, tls or timeout)")
	}
	if !reflect.DeepEqual(old.Rotation, next.Rotation) {
		out = append(out, "rotation")
	}
	if !reflect.DeepEqual(old.Log, next.Log) {
		out = append(out, "log")
	}
	if !reflect.DeepEqual(old.Notifications, next.Notifications) {
		out = append(out, "notifications")
	}
	return out
}
