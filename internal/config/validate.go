package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// Defaults (DESIGN.md §6).
const (
	DefaultListen        = ":9464"
	DefaultBaseURL       = "https://api.affixapi.com"
	DefaultAPIKeyEnv     = "AFFIX_API_KEY"
	DefaultTokenEnv      = "VAULT_TOKEN"
	DefaultKubeTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

func (c *Config) defaults() error {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defD := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&c.Listen, DefaultListen)
	if c.InstanceID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return &Error{Key: "instance_id", Problem: "empty, and the hostname is unknown: set it"}
		}
		c.InstanceID = h
	}
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "json")
	def(&c.Vault.KVMount, "secret")
	defD(&c.Vault.Timeout, 30*time.Second)
	def(&c.Vault.Auth.Method, "token")
	if c.Vault.Auth.Method == "token" && c.Vault.Auth.TokenFile == "" {
		def(&c.Vault.Auth.TokenEnv, DefaultTokenEnv)
	}
	if a := c.Vault.Auth.AppRole; a != nil {
		def(&a.Mount, "approle")
	}
	if k := c.Vault.Auth.Kubernetes; k != nil {
		def(&k.Mount, "kubernetes")
		def(&k.TokenFile, DefaultKubeTokenFile)
	}
	def(&c.Affix.BaseURL, DefaultBaseURL)
	if c.Affix.APIKeyFile == "" {
		def(&c.Affix.APIKeyEnv, DefaultAPIKeyEnv)
	}
	defD(&c.Affix.Timeout, 30*time.Second)
	if c.Affix.RateLimit > 0 && c.Affix.Burst == 0 {
		c.Affix.Burst = 1
	}
	defD(&c.Rotation.LeaseDuration, 5*time.Minute)
	defD(&c.Rotation.RetryInitial, time.Second)
	defD(&c.Rotation.RetryMax, 5*time.Minute)
	if c.Rotation.MaxConcurrent == 0 {
		c.Rotation.MaxConcurrent = 10
	}
	return nil
}

var (
	nameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,64}$`)
	envRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func (c *Config) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Problem: fmt.Sprintf(format, args...)})
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		bad("listen", "%q is not host:port (e.g. \":9464\")", c.Listen)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "%q is not one of json, console", c.Log.Format)
	}
	if c.Vault.Address != "" {
		checkURL(bad, "vault.address", c.Vault.Address)
	}
	if m := c.Vault.KVMount; strings.Trim(m, "/") != m || m == "" {
		bad("vault.kv_mount", "%q must be a mount name without leading or trailing slashes", m)
	}
	if c.Vault.Timeout <= 0 {
		bad("vault.timeout", "must be positive")
	}
	a := c.Vault.Auth
	switch a.Method {
	case "token":
		if a.TokenEnv != "" && a.TokenFile != "" {
			bad("vault.auth.token_file", "give token_env or token_file, not both")
		}
		if a.TokenEnv != "" && !envRE.MatchString(a.TokenEnv) {
			bad("vault.auth.token_env", "%q is not an environment variable name", a.TokenEnv)
		}
	case "approle":
		switch {
		case a.AppRole == nil:
			bad("vault.auth.approle", "required with method approle")
		default:
			if (a.AppRole.RoleID == "") == (a.AppRole.RoleIDFile == "") {
				bad("vault.auth.approle.role_id", "give exactly one of role_id or role_id_file")
			}
			if (a.AppRole.SecretIDFile == "") == (a.AppRole.SecretIDEnv == "") {
				bad("vault.auth.approle.secret_id_file", "give exactly one of secret_id_file or secret_id_env")
			}
		}
	case "kubernetes":
		if a.Kubernetes == nil || a.Kubernetes.Role == "" {
			bad("vault.auth.kubernetes.role", "required with method kubernetes")
		}
	default:
		bad("vault.auth.method", "%q is not one of token, approle, kubernetes", a.Method)
	}
	if a.Method != "approle" && a.AppRole != nil {
		bad("vault.auth.approle", "given, but method is %s", a.Method)
	}
	if a.Method != "kubernetes" && a.Kubernetes != nil {
		bad("vault.auth.kubernetes", "given, but method is %s", a.Method)
	}
	if a.Method != "token" && (a.TokenEnv != "" || a.TokenFile != "") {
		bad("vault.auth.token_env", "given, but method is %s", a.Method)
	}
	checkAffix(bad, "affix", c.Affix.BaseURL, c.Affix.APIKeyEnv, c.Affix.APIKeyFile, c.Affix.Timeout, true)
	if c.Affix.RateLimit < 0 {
		bad("affix.rate_limit", "must not be negative")
	}
	if c.Affix.Burst < 0 {
		bad("affix.burst", "must not be negative")
	}
	r := c.Rotation
	if r.LeaseDuration < Duration(30*time.Second) {
		bad("rotation.lease_duration", "must be at least 30s")
	}
	if r.RetryInitial <= 0 {
		bad("rotation.retry_initial", "must be positive")
	}
	if r.RetryMax < r.RetryInitial {
		bad("rotation.retry_max", "must be at least retry_initial")
	}
	if r.MaxConcurrent < 1 {
		bad("rotation.max_concurrent", "must be at least 1")
	}
	if len(c.Clients) == 0 {
		bad("clients", "at least one client is required")
	}
	names, paths := map[string]int{}, map[string]int{}
	for i, cl := range c.Clients {
		k := func(f string) string { return fmt.Sprintf("clients[%d].%s", i, f) }
		switch {
		case cl.Name == "":
			bad(k("name"), "required")
		case !nameRE.MatchString(cl.Name):
			bad(k("name"), "%q must be 1-64 letters, digits, '_', '.' or '-'", cl.Name)
		default:
			if j, dup := names[cl.Name]; dup {
				bad(k("name"), "duplicate %q (also clients[%d])", cl.Name, j)
			} else {
				names[cl.Name] = i
			}
		}
		p := cl.VaultPath
		switch {
		case p == "":
			bad(k("vault_path"), "required (the KV path of the client's record, e.g. affix/prod)")
		case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") || strings.ContainsAny(p, " \t\r\n") ||
			strings.HasPrefix(p, "data/") || strings.HasPrefix(p, "metadata/") || containsDotDot(p):
			bad(k("vault_path"), "%q must be a relative KV path such as affix/prod (no leading or trailing '/', no '..', no whitespace, not under data/ or metadata/)", p)
		default:
			if j, dup := paths[p]; dup {
				bad(k("vault_path"), "duplicate %q (also clients[%d]): two clients cannot share one record", p, j)
			} else {
				paths[p] = i
			}
		}
		if cl.Schedule == "" {
			bad(k("schedule"), "required (a robfig/cron/v3 spec such as \"@every 720h\")")
		} else if _, err := ParseSchedule(cl.Schedule); err != nil {
			bad(k("schedule"), "invalid cron spec %q: %v", cl.Schedule, err)
		}
		if cl.GracePeriod <= 0 {
			bad(k("grace_period"), "must be positive (it must exceed every consumer's refresh interval)")
		}
		if cl.Jitter < 0 {
			bad(k("jitter"), "must not be negative")
		}
		if cl.MaxAge < 0 {
			bad(k("max_age"), "must not be negative")
		} else if cl.MaxAge > 0 && cl.MaxAge <= cl.GracePeriod {
			bad(k("max_age"), "must be longer than grace_period")
		}
		o := cl.Affix
		if o.APIKeyEnv != "" && o.APIKeyFile != "" {
			bad(k("affix.api_key_file"), "give api_key_env or api_key_file, not both")
		}
		checkAffix(bad, k("affix"), o.BaseURL, o.APIKeyEnv, "", o.Timeout, false)
		for j, u := range cl.App.RedirectURIs {
			if pu, err := url.Parse(u); err != nil || !pu.IsAbs() || pu.Host == "" {
				bad(k(fmt.Sprintf("app.redirect_uris[%d]", j)), "%q is not an absolute URL", u)
			}
		}
		if w := cl.App.WebhookURI; w.Set && !w.Null {
			if pu, err := url.Parse(w.Value); err != nil || !pu.IsAbs() || pu.Host == "" {
				bad(k("app.webhook_uri"), "%q is not an absolute URL (or null)", w.Value)
			}
		}
	}
	return errs
}

func checkAffix(bad func(string, string, ...any), prefix, baseURL, keyEnv, keyFile string, timeout Duration, top bool) {
	if baseURL != "" {
		checkURL(bad, prefix+".base_url", baseURL)
	}
	if keyEnv != "" && !envRE.MatchString(keyEnv) {
		bad(prefix+".api_key_env", "%q is not an environment variable name", keyEnv)
	}
	if top && keyEnv != "" && keyFile != "" {
		bad(prefix+".api_key_file", "give api_key_env or api_key_file, not both")
	}
	if timeout < 0 || (top && timeout == 0) {
		bad(prefix+".timeout", "must be positive")
	}
}

func checkURL(bad func(string, string, ...any), key, raw string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		bad(key, "not a URL")
	case u.User != nil:
		bad(key, "must not hold credentials (user:password@)")
	case u.Scheme != "http" && u.Scheme != "https":
		bad(key, "%q must be an http:// or https:// URL", raw)
	case u.Host == "":
		bad(key, "%q has no host", raw)
	case u.RawQuery != "" || u.Fragment != "":
		bad(key, "%q must not have a query or fragment", raw)
	}
}

func containsDotDot(p string) bool {
	for _, s := range strings.Split(p, "/") {
		if s == ".." || s == "." {
			return true
		}
	}
	return false
}
