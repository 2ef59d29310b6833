package cli

import (
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpproxy"

	"github.com/affix-rotator/affix-rotator/internal/config"
)

// proxyFor says which proxy an outbound client uses for target, as its
// scheme and host only (a proxy URL may hold credentials), and which
// environment variable chose it; "" for none (a direct connection). The
// Vault client (vault true) uses VAULT_PROXY_ADDR, else VAULT_HTTP_PROXY,
// for every request (NO_PROXY does not apply to them), else the standard
// variables as every other client does: HTTPS_PROXY for https:// targets,
// HTTP_PROXY for http:// ones (or their lower-case forms), except for
// hosts in NO_PROXY and for localhost.
func proxyFor(target string, vault bool, getenv func(string) string) (proxy, source string) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme == "unix" || u.Host == "" {
		return "", ""
	}
	if vault {
		for _, v := range []string{"VAULT_PROXY_ADDR", "VAULT_HTTP_PROXY"} {
			if p := getenv(v); p != "" {
				return schemeHost(p), v
			}
		}
	}
	env := func(k string) (string, string) {
		if v := getenv(k); v != "" {
			return v, k
		}
		return getenv(strings.ToLower(k)), strings.ToLower(k)
	}
	hp, hpVar := env("HTTP_PROXY")
	hsp, hspVar := env("HTTPS_PROXY")
	np, _ := env("NO_PROXY")
	p, err := (&httpproxy.Config{HTTPProxy: hp, HTTPSProxy: hsp, NoProxy: np}).ProxyFunc()(u)
	if err != nil || p == nil {
		return "", ""
	}
	if u.Scheme == "https" {
		return schemeHost(p.String()), hspVar
	}
	return schemeHost(p.String()), hpVar
}

// schemeHost renders a proxy URL as scheme://host ("http://" when it has
// no scheme, as net/http reads it).
func schemeHost(p string) string {
	u, err := url.Parse(p)
	if err != nil || u.Host == "" {
		u, err = url.Parse("http://" + p)
		if err != nil {
			return "(unparsable proxy URL, not shown)"
		}
	}
	return u.Scheme + "://" + u.Host
}

// logProxies logs, at start, the proxy each outbound client uses for each
// of its hosts: Vault, each Affix base URL, each webhook.
func logProxies(log *zap.Logger, cfg *config.Config, vaultAddr string, getenv func(string) string) {
	one := func(client, target string, vault bool) {
		p, src := proxyFor(target, vault, getenv)
		fields := []zap.Field{zap.String("client", client), zap.String("host", schemeHost(target))}
		if strings.HasPrefix(target, "unix://") {
			fields[1] = zap.String("host", "unix socket")
		}
		if p == "" {
			log.Info("outbound connection: direct, no proxy", fields...)
			return
		}
		log.Info("outbound connection through a proxy", append(fields, zap.String("proxy", p), zap.String("proxy_from", src))...)
	}
	one("vault", vaultAddr, true)
	seen := map[string]bool{}
	for _, c := range cfg.Clients {
		if b := cfg.AffixFor(c).BaseURL; !seen[b] {
			seen[b] = true
			one("affix", b, false)
		}
	}
	for i, w := range cfg.Notifications {
		one("webhook notifications["+strconv.Itoa(i)+"]", w.URL, false)
	}
}
