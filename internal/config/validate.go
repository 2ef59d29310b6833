package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/affix-rotator/affix-rotator/notify"
)

// Defaults applied by Parse to keys the file leaves out (docs/design.md,
// "Configuration").
const (
	DefaultListen        = ":9464"
	DefaultLogLevel      = "info"
	DefaultLogFormat     = "json"
	DefaultKVMount       = "secret"
	DefaultVaultTimeout  = 30 * time.Second
	DefaultAuthMethod    = "token"
	DefaultTokenEnv      = "VAULT_TOKEN"
	DefaultAppRoleMount  = "approle"
	DefaultKubeMount     = "kubernetes"
	DefaultKubeTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultBaseURL       = "https://api.affixapi.com"
	DefaultAPIKeyEnv     = "AFFIX_API_KEY"
	DefaultAffixTimeout  = 30 * time.Second
	DefaultBurst         = 1
	DefaultLeaseDuration = 5 * time.Minute
	DefaultRetryInitial  = time.Second
	DefaultRetryMax      = 5 * time.Minute
	DefaultMaxConcurrent = 10

	DefaultReconcileInterval = time.Hour
	DefaultRereadInterval    = 30 * time.Second
	DefaultClockSkewMargin   = 30 * time.Second

	DefaultWebhookTimeout    = notify.DefaultTimeout
	DefaultWebhookMaxElapsed = notify.DefaultMaxElapsed
	DefaultWebhookQueueSize  = notify.DefaultQueueSize
)

// maxWebhookQueue bounds notifications[i].queue_size.
const maxWebhookQueue = 100_000

// MinLeaseDuration is the shortest rotation.lease_duration accepted.
const MinLeaseDuration = 30 * time.Second

const (
	maxInstanceIDLength = 128
	maxVaultPathLength  = 512
	maxURILength        = 2048
)

// defaults fills what the file leaves out. present holds the key paths the
// file gives a value: an empty string counts as absent, but an explicit 0
// for a number or a duration is kept (and then validated as written).
func (c *Config) defaults(present map[string]bool) {
	str := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	dur := func(key string, d *Duration, v time.Duration) {
		if !present[key] {
			*d = Duration(v)
		}
	}
	str(&c.Listen, DefaultListen)
	if c.InstanceID == "" {
		if h, err := os.Hostname(); err == nil {
			c.InstanceID = h
		}
	}
	str(&c.Log.Level, DefaultLogLevel)
	str(&c.Log.Format, DefaultLogFormat)
	str(&c.Vault.KVMount, DefaultKVMount)
	dur("vault.timeout", &c.Vault.Timeout, DefaultVaultTimeout)
	str(&c.Vault.Auth.Method, DefaultAuthMethod)
	if c.Vault.Auth.Method == "token" && c.Vault.Auth.TokenFile == "" {
		str(&c.Vault.Auth.TokenEnv, DefaultTokenEnv)
	}
	if a := c.Vault.Auth.AppRole; a != nil {
		str(&a.Mount, DefaultAppRoleMount)
	}
	if k := c.Vault.Auth.Kubernetes; k != nil {
		str(&k.Mount, DefaultKubeMount)
		str(&k.TokenFile, DefaultKubeTokenFile)
	}
	str(&c.Affix.BaseURL, DefaultBaseURL)
	if c.Affix.APIKeyFile == "" {
		str(&c.Affix.APIKeyEnv, DefaultAPIKeyEnv)
	}
	dur("affix.timeout", &c.Affix.Timeout, DefaultAffixTimeout)
	if c.Affix.RateLimit > 0 && !present["affix.burst"] {
		c.Affix.Burst = DefaultBurst
	}
	dur("rotation.lease_duration", &c.Rotation.LeaseDuration, DefaultLeaseDuration)
	dur("rotation.retry_initial", &c.Rotation.RetryInitial, DefaultRetryInitial)
	dur("rotation.retry_max", &c.Rotation.RetryMax, DefaultRetryMax)
	if !present["rotation.max_concurrent"] {
		c.Rotation.MaxConcurrent = DefaultMaxConcurrent
	}
	dur("rotation.reconcile_interval", &c.Rotation.ReconcileInterval, DefaultReconcileInterval)
	dur("rotation.reread_interval", &c.Rotation.RereadInterval, DefaultRereadInterval)
	dur("rotation.clock_skew_margin", &c.Rotation.ClockSkewMargin, DefaultClockSkewMargin)
	for i := range c.Notifications {
		w := &c.Notifications[i]
		k := func(f string) string { return fmt.Sprintf("notifications[%d].%s", i, f) }
		dur(k("timeout"), &w.Timeout, DefaultWebhookTimeout)
		dur(k("max_elapsed"), &w.MaxElapsed, DefaultWebhookMaxElapsed)
		if !present[k("queue_size")] {
			w.QueueSize = DefaultWebhookQueueSize
		}
	}
}

var (
	nameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,64}$`)
	envRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// problems collects validation errors.
type problems struct {
	errs []error
	src  *srcInfo // how durations were written, for messages
}

func (p *problems) add(key, format string, args ...any) {
	p.errs = append(p.errs, &Error{Key: key, Problem: fmt.Sprintf(format, args...)})
}

// raw returns a duration key's value as written in the file.
func (p *problems) raw(key string, d Duration) string { return p.src.rawOf(key, d) }

// validate returns every problem of the defaulted config.
func (c *Config) validate(present map[string]bool, src *srcInfo) []error {
	p := problems{src: src}
	c.validateTop(&p)
	c.validateVault(&p)
	validateAffix(&p, "affix", c.Affix.BaseURL, c.Affix.APIKeyEnv, c.Affix.APIKeyFile)
	if c.Affix.Timeout <= 0 {
		p.add("affix.timeout", "must be positive, got %s", p.raw("affix.timeout", c.Affix.Timeout))
	}
	if r := c.Affix.RateLimit; r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		p.add("affix.rate_limit", "must be a number of requests per second, 0 or more (0: no limit)")
	}
	if c.Affix.Burst < 0 {
		p.add("affix.burst", "must not be negative, got %d", c.Affix.Burst)
	} else if c.Affix.RateLimit > 0 && c.Affix.Burst < 1 {
		p.add("affix.burst", "must be at least 1 when rate_limit is set")
	}
	c.validateRotation(&p)
	c.validateClients(&p, present)
	c.validateNotifications(&p, present)
	return p.errs
}

func (c *Config) validateTop(p *problems) {
	if host, port, err := net.SplitHostPort(c.Listen); err != nil || hasSpaceOrControl(host) || strings.Contains(host, "/") {
		p.add("listen", "%q is not host:port (e.g. \":9464\" or \"127.0.0.1:9464\")", c.Listen)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		p.add("listen", "%q: the port must be a number from 0 to 65535", c.Listen)
	}
	switch id := c.InstanceID; {
	case id == "":
		p.add("instance_id", "empty, and the hostname is unknown: set it")
	case len(id) > maxInstanceIDLength:
		p.add("instance_id", "longer than %d bytes", maxInstanceIDLength)
	case strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		p.add("instance_id", "%q must not hold spaces or control characters", id)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		p.add("log.format", "%q is not one of json, console", c.Log.Format)
	}
}

func (c *Config) validateVault(p *problems) {
	v := c.Vault
	if v.Address != "" {
		checkURL(p, "vault.address", v.Address, "http", "https", "unix")
	}
	if m := v.KVMount; m != strings.Trim(m, "/") || hasSpaceOrControl(m) || hasDotSegment(m) || strings.Contains(m, "//") {
		p.add("vault.kv_mount", "%q must be a mount path such as \"secret\" (no leading or trailing '/', no whitespace, no '.' or '..')", m)
	}
	if v.Timeout <= 0 {
		p.add("vault.timeout", "must be positive, got %s", p.raw("vault.timeout", v.Timeout))
	}
	a := v.Auth
	switch a.Method {
	case "token":
		if a.TokenEnv != "" && a.TokenFile != "" {
			p.add("vault.auth.token_file", "give token_env or token_file, not both")
		}
		checkEnv(p, "vault.auth.token_env", a.TokenEnv)
		checkFile(p, "vault.auth.token_file", a.TokenFile)
	case "approle":
		ar := a.AppRole
		if ar == nil {
			p.add("vault.auth.approle", "required with method approle (role_id or role_id_file, and secret_id_file or secret_id_env)")
			break
		}
		checkMount(p, "vault.auth.approle.mount", ar.Mount)
		switch {
		case ar.RoleID == "" && ar.RoleIDFile == "":
			p.add("vault.auth.approle.role_id", "required: give role_id or role_id_file")
		case ar.RoleID != "" && ar.RoleIDFile != "":
			p.add("vault.auth.approle.role_id_file", "give role_id or role_id_file, not both")
		}
		if hasSpaceOrControl(ar.RoleID) {
			p.add("vault.auth.approle.role_id", "must not hold spaces or control characters")
		}
		checkFile(p, "vault.auth.approle.role_id_file", ar.RoleIDFile)
		switch {
		case ar.SecretIDFile == "" && ar.SecretIDEnv == "":
			p.add("vault.auth.approle.secret_id_file", "required: give secret_id_file or secret_id_env (the secret id never goes in this file)")
		case ar.SecretIDFile != "" && ar.SecretIDEnv != "":
			p.add("vault.auth.approle.secret_id_env", "give secret_id_file or secret_id_env, not both")
		}
		checkFile(p, "vault.auth.approle.secret_id_file", ar.SecretIDFile)
		checkEnv(p, "vault.auth.approle.secret_id_env", ar.SecretIDEnv)
	case "kubernetes":
		k := a.Kubernetes
		if k == nil {
			p.add("vault.auth.kubernetes", "required with method kubernetes (at least role)")
			break
		}
		checkMount(p, "vault.auth.kubernetes.mount", k.Mount)
		if k.Role == "" {
			p.add("vault.auth.kubernetes.role", "required with method kubernetes")
		} else if hasSpaceOrControl(k.Role) {
			p.add("vault.auth.kubernetes.role", "%q must not hold spaces or control characters", k.Role)
		}
		checkFile(p, "vault.auth.kubernetes.token_file", k.TokenFile)
	default:
		p.add("vault.auth.method", "%q is not one of token, approle, kubernetes", a.Method)
	}
	if a.Method != "approle" && a.AppRole != nil {
		p.add("vault.auth.approle", "given, but method is %q: set method: approle or remove the block", a.Method)
	}
	if a.Method != "kubernetes" && a.Kubernetes != nil {
		p.add("vault.auth.kubernetes", "given, but method is %q: set method: kubernetes or remove the block", a.Method)
	}
	if a.Method != "token" {
		if a.TokenEnv != "" {
			p.add("vault.auth.token_env", "only for method token, but method is %q: remove it", a.Method)
		}
		if a.TokenFile != "" {
			p.add("vault.auth.token_file", "only for method token, but method is %q: remove it", a.Method)
		}
	}
	checkFile(p, "vault.tls.ca_cert", v.TLS.CACert)
}

func (c *Config) validateRotation(p *problems) {
	r := c.Rotation
	if r.LeaseDuration < Duration(MinLeaseDuration) {
		p.add("rotation.lease_duration", "must be at least %s, got %s", MinLeaseDuration, p.raw("rotation.lease_duration", r.LeaseDuration))
	}
	if r.RetryInitial <= 0 {
		p.add("rotation.retry_initial", "must be positive, got %s", p.raw("rotation.retry_initial", r.RetryInitial))
	}
	if r.RetryMax < r.RetryInitial {
		p.add("rotation.retry_max", "must be at least retry_initial (%s), got %s", p.raw("rotation.retry_initial", r.RetryInitial), p.raw("rotation.retry_max", r.RetryMax))
	}
	if r.MaxConcurrent < 1 {
		p.add("rotation.max_concurrent", "must be at least 1, got %d", r.MaxConcurrent)
	}
	if r.ReconcileInterval < 0 {
		p.add("rotation.reconcile_interval", "must not be negative, got %s (0 disables it)", p.raw("rotation.reconcile_interval", r.ReconcileInterval))
	}
	if r.RereadInterval <= 0 {
		p.add("rotation.reread_interval", "must be positive, got %s", p.raw("rotation.reread_interval", r.RereadInterval))
	}
	if r.ClockSkewMargin < 0 {
		p.add("rotation.clock_skew_margin", "must not be negative, got %s", p.raw("rotation.clock_skew_margin", r.ClockSkewMargin))
	}
}

func (c *Config) validateClients(p *problems, present map[string]bool) {
	if len(c.Clients) == 0 {
		p.add("clients", "at least one client is required")
	}
	names, paths, keys := map[string]int{}, map[string]int{}, map[string]int{}
	for i, cl := range c.Clients {
		k := func(f string) string { return fmt.Sprintf("clients[%d].%s", i, f) }
		switch {
		case cl.Name == "":
			p.add(k("name"), "required")
		case !nameRE.MatchString(cl.Name):
			p.add(k("name"), "%q must be 1 to 64 letters, digits, '_', '.' or '-'", cl.Name)
		default:
			if j, dup := names[cl.Name]; dup {
				p.add(k("name"), "duplicate %q (also clients[%d])", cl.Name, j)
			} else {
				names[cl.Name] = i
			}
		}
		vp := cl.VaultPath
		paste := apiPathPaste(vp, c.Vault.KVMount)
		switch {
		case vp == "":
			p.add(k("vault_path"), "required: the KV path of the client's record, relative to kv_mount (e.g. affix/prod)")
		case strings.HasPrefix(vp, "/"), strings.HasSuffix(vp, "/"), strings.Contains(vp, "//"):
			p.add(k("vault_path"), "%q must be relative to kv_mount, without leading, trailing or double '/' (e.g. affix/prod)", vp)
		case hasDotSegment(vp):
			p.add(k("vault_path"), "%q must not hold '.' or '..' segments", vp)
		case hasSpaceOrControl(vp):
			p.add(k("vault_path"), "%q must not hold whitespace or control characters", vp)
		case paste != "":
			p.add(k("vault_path"), "%s", paste)
		case len(vp) > maxVaultPathLength:
			p.add(k("vault_path"), "longer than %d bytes", maxVaultPathLength)
		default:
			if j, dup := paths[vp]; dup {
				p.add(k("vault_path"), "duplicate %q (also clients[%d]): two clients cannot share one record", vp, j)
			} else {
				paths[vp] = i
			}
		}
		if cl.Schedule == "" {
			p.add(k("schedule"), "required: a robfig/cron/v3 spec such as \"@every 720h\" or \"0 3 1 * *\"")
		} else if _, err := ParseSchedule(cl.Schedule); err != nil {
			p.add(k("schedule"), "invalid cron spec %q: %v", cl.Schedule, err)
		}
		switch {
		case !present[k("grace_period")]:
			p.add(k("grace_period"), "required: how long both secrets stay valid (e.g. 24h); it must exceed every consumer's refresh interval")
		case cl.GracePeriod <= 0:
			p.add(k("grace_period"), "must be positive, got %s", p.raw(k("grace_period"), cl.GracePeriod))
		}
		if mr := cl.Consumers.MaxRefresh; mr < 0 {
			p.add(k("consumers.max_refresh"), "must not be negative, got %s (0 or leaving it out states nothing)", p.raw(k("consumers.max_refresh"), mr))
		} else if mr > 0 && cl.GracePeriod > 0 && cl.GracePeriod <= mr {
			p.add(k("grace_period"), "%s does not exceed consumers.max_refresh (%s): grace_period must exceed the slowest consumer's refresh interval plus its restart time, or a consumer still holding the old secret when the grace ends fails to authenticate; lengthen grace_period (a few times max_refresh leaves room for a missed refresh) or make the consumers refresh sooner",
				p.raw(k("grace_period"), cl.GracePeriod), p.raw(k("consumers.max_refresh"), mr))
		}
		if cl.Jitter < 0 {
			p.add(k("jitter"), "must not be negative, got %s", p.raw(k("jitter"), cl.Jitter))
		}
		if cl.MaxAge < 0 {
			p.add(k("max_age"), "must not be negative, got %s (0 disables it)", p.raw(k("max_age"), cl.MaxAge))
		} else if cl.MaxAge > 0 && cl.GracePeriod > 0 && cl.MaxAge <= cl.GracePeriod {
			p.add(k("max_age"), "%s must be longer than grace_period (%s), or 0 to disable", p.raw(k("max_age"), cl.MaxAge), p.raw(k("grace_period"), cl.GracePeriod))
		}
		o := cl.Affix
		validateAffix(p, k("affix"), o.BaseURL, o.APIKeyEnv, o.APIKeyFile)
		if o.Timeout < 0 {
			p.add(k("affix.timeout"), "must be positive, got %s (or leave it out to inherit affix.timeout)", p.raw(k("affix.timeout"), o.Timeout))
		}
		if n := cl.App.Name; n != nil && strings.TrimSpace(*n) == "" {
			p.add(k("app.name"), "must not be empty (leave the key out to not send it)")
		}
		for j, u := range cl.App.RedirectURIs {
			checkRedirectURI(p, k(fmt.Sprintf("app.redirect_uris[%d]", j)), u)
		}
		if w := cl.App.WebhookURI; w.Set && !w.Null {
			checkURL(p, k("app.webhook_uri"), w.Value, "http", "https")
		}
		// The request names no client: the API key selects it. Two clients
		// reading their key from the same place would rotate one
		// client_secret and drop each other's. (Keys from different places
		// with the same value are refused when they are read.)
		a := c.AffixFor(cl)
		if a.APIKeyEnv != "" || a.APIKeyFile != "" {
			src := strings.TrimSuffix(a.BaseURL, "/") + "\x00" + a.APIKeyEnv + "\x00" + a.APIKeyFile
			if j, dup := keys[src]; dup {
				p.add(k("affix"), "same base_url and API key (%s) as clients[%d]: the API key selects the Affix client, so both would rotate one client_secret and lock each other out; give each client its own affix.api_key_env or affix.api_key_file", keySource(a), j)
			} else {
				keys[src] = i
			}
		}
	}
}

func (c *Config) validateNotifications(p *problems, present map[string]bool) {
	known := map[string]bool{}
	for _, e := range notify.EventTypes {
		known[e] = true
	}
	for i, w := range c.Notifications {
		k := func(f string) string { return fmt.Sprintf("notifications[%d].%s", i, f) }
		if w.URL == "" {
			p.add(k("url"), "required: the webhook receiver's http(s) URL")
		} else {
			checkURL(p, k("url"), w.URL, "http", "https")
		}
		if present[k("events")] && len(w.Events) == 0 {
			p.add(k("events"), "empty: list the events to send, or leave the key out to send every event")
		}
		seen := map[string]bool{}
		for j, e := range w.Events {
			switch {
			case !known[e]:
				p.add(fmt.Sprintf("%s[%d]", k("events"), j), "%q is not an event; events are %s", e, strings.Join(notify.EventTypes, ", "))
			case seen[e]:
				p.add(fmt.Sprintf("%s[%d]", k("events"), j), "%q is given twice", e)
			}
			seen[e] = true
		}
		switch {
		case w.SecretEnv == "" && w.SecretFile == "":
			p.add(k("secret_env"), "required: give secret_env or secret_file, naming where the signing key (whsec_…) is; the key never goes in this file")
		case w.SecretEnv != "" && w.SecretFile != "":
			p.add(k("secret_file"), "give secret_env or secret_file, not both")
		}
		if looksLikeKey(w.SecretEnv) {
			// A key is letters, digits and '_' too: never quote it.
			p.add(k("secret_env"), "is a signing key itself (%s…), not the name of the environment variable that holds it: the key never goes in this file", notify.KeyPrefix)
		} else {
			checkEnv(p, k("secret_env"), w.SecretEnv)
		}
		checkFile(p, k("secret_file"), w.SecretFile)
		if w.Timeout <= 0 {
			p.add(k("timeout"), "must be positive, got %s", p.raw(k("timeout"), w.Timeout))
		}
		if w.MaxElapsed < 0 {
			p.add(k("max_elapsed"), "must not be negative, got %s (0: one attempt, no retry)", p.raw(k("max_elapsed"), w.MaxElapsed))
		}
		if w.QueueSize < 1 || w.QueueSize > maxWebhookQueue {
			p.add(k("queue_size"), "must be 1 to %d, got %d", maxWebhookQueue, w.QueueSize)
		}
	}
}

// apiPathPaste explains why vp, a vault_path, looks like a path pasted from
// Vault's KV v2 HTTP API (or its UI, or a -output-curl-string) rather than
// the record's path relative to the mount: it starts with the mount and "/",
// or it holds a data/ or metadata/ segment. It returns "" for a path that
// does neither. The message says what to write instead.
func apiPathPaste(vp, mount string) string {
	rest := vp
	withMount := mount != "" && strings.HasPrefix(vp, mount+"/")
	if withMount {
		rest = vp[len(mount)+1:]
	}
	segs := strings.Split(rest, "/")
	api := -1
	for i, s := range segs[:len(segs)-1] {
		if s == "data" || s == "metadata" {
			api = i
			break
		}
	}
	const why = "the KV v2 HTTP API spells a record <mount>/data/<path> (its value) or <mount>/metadata/<path> (its versions), and so do policies and `vault kv get -output-curl-string`, but vault_path is the record's own path, relative to vault.kv_mount"
	switch {
	case api < 0 && !withMount:
		return ""
	case api < 0:
		return fmt.Sprintf("%q starts with the KV mount %q: vault_path is relative to vault.kv_mount (the record is <kv_mount>/<vault_path>): write %q", vp, mount+"/", rest)
	case api == 0:
		return fmt.Sprintf("%q holds a %s/ segment, as a KV v2 API path does: %s (%q): write %q", vp, segs[api], why, mount, strings.Join(segs[1:], "/"))
	default:
		// Something precedes data/: most likely a mount other than kv_mount.
		other := strings.Join(segs[:api], "/")
		return fmt.Sprintf("%q holds a %s/ segment, as a KV v2 API path does: %s (%q): write %q, and if %q is your KV mount, set vault.kv_mount: %q", vp, segs[api], why, mount, strings.Join(segs[api+1:], "/"), other, other)
	}
}

func keySource(a Affix) string {
	if a.APIKeyFile != "" {
		return "api_key_file " + a.APIKeyFile
	}
	return "api_key_env " + a.APIKeyEnv
}

// validateAffix checks the fields shared by the affix block and its
// per-client overrides.
func validateAffix(p *problems, prefix, baseURL, keyEnv, keyFile string) {
	if baseURL != "" {
		checkURL(p, prefix+".base_url", baseURL, "http", "https")
	}
	checkEnv(p, prefix+".api_key_env", keyEnv)
	checkFile(p, prefix+".api_key_file", keyFile)
	if keyEnv != "" && keyFile != "" {
		p.add(prefix+".api_key_file", "give api_key_env or api_key_file, not both")
	}
}

func checkEnv(p *problems, key, name string) {
	if name != "" && !envRE.MatchString(name) {
		// The value is not quoted: a mistake here is often the key itself.
		p.add(key, "is not an environment variable name (letters, digits and '_'): it names the variable that holds the secret, never the secret itself")
	}
}

func checkFile(p *problems, key, path string) {
	if path != "" && strings.IndexFunc(path, unicode.IsControl) >= 0 {
		p.add(key, "the file name holds a control character")
	}
}

func checkMount(p *problems, key, m string) {
	if m != strings.Trim(m, "/") || hasSpaceOrControl(m) || hasDotSegment(m) {
		p.add(key, "%q must be a mount path without leading or trailing '/', whitespace, '.' or '..'", m)
	}
}

// checkURL checks an absolute URL with one of schemes and a host (a path
// for unix), without user info, query or fragment. The URL is quoted in
// messages only when it cannot hold a credential (no user info, no query).
func checkURL(p *problems, key, raw string, schemes ...string) {
	u, err := url.Parse(raw)
	if err != nil {
		p.add(key, "not a valid URL")
		return
	}
	if u.User != nil {
		p.add(key, "must not hold credentials (user:password@)")
		return
	}
	ok := false
	for _, s := range schemes {
		ok = ok || u.Scheme == s
	}
	switch {
	case !ok:
		p.add(key, "%s must be an absolute %s URL", shownURL(u), strings.Join(schemes, ":// or ")+"://")
	case u.Scheme == "unix" && u.Path == "":
		p.add(key, "%s has no socket path (unix:///path/to/socket)", shownURL(u))
	case u.Scheme != "unix" && u.Host == "":
		p.add(key, "%s has no host", shownURL(u))
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#"):
		// Not quoted: a query may carry a token.
		p.add(key, "must not have a query or a fragment")
	}
}

// shownURL is what a refused URL's message may quote: its scheme and host,
// never its path (a webhook's path often holds its token) nor more.
func shownURL(u *url.URL) string {
	if u.Scheme == "" || (u.Host == "" && u.Scheme != "unix") {
		return "the URL (not shown: its path may hold a token)"
	}
	s := fmt.Sprintf("%q", u.Scheme+"://"+u.Host)
	if u.Path != "" || u.Opaque != "" {
		s = fmt.Sprintf("%q", u.Scheme+"://"+u.Host+"/…")
	}
	return s
}

// looksLikeKey reports whether the value of a secret_env is a signing key
// itself rather than a variable's name: the "whsec_" form, or bare base64
// of a key's length in mixed case (variable names are upper case by
// convention; a key is never quoted).
func looksLikeKey(s string) bool {
	if strings.HasPrefix(s, notify.KeyPrefix) {
		return true
	}
	_, err := notify.ParseKey(s)
	return err == nil && strings.ToUpper(s) != s
}

// checkRedirectURI checks an OAuth redirect URI: absolute, no fragment
// (RFC 6749 §3.1.2); http(s) URIs need a host, and custom schemes (native
// apps, RFC 8252) are allowed.
func checkRedirectURI(p *problems, key, raw string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs():
		p.add(key, "%q is not an absolute URL", raw)
	case u.User != nil:
		p.add(key, "must not hold credentials (user:password@)")
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host == "":
		p.add(key, "%q has no host", raw)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		p.add(key, "must not have a fragment")
	case len(raw) > maxURILength:
		p.add(key, "longer than %d bytes", maxURILength)
	}
}

func hasSpaceOrControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
}

func hasDotSegment(p string) bool {
	for _, s := range strings.Split(p, "/") {
		if s == "." || s == ".." {
			return true
		}
	}
	return false
}
