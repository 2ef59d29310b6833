// Package config loads, defaults and validates the affix-rotator YAML
// configuration, once, at the edge: the rest of the program receives a
// checked *Config and never re-validates it.
//
// Decoding is strict: an unknown key, a value of the wrong type, a second
// YAML document or an empty file is an error. Every problem is reported as an
// *Error whose Key is the YAML path of the key concerned
// ("clients[1].grace_period: must be positive"), and all problems of a file
// are reported at once (joined with errors.Join).
//
// Secrets never come from the YAML: there are no keys for them, only keys
// naming the environment variables or files that hold them (see
// Affix.APIKey).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/notify"
)

// Config is the whole configuration file, defaulted and validated by Parse.
type Config struct {
	// Listen is the host:port of the HTTP listener (/metrics, /healthz,
	// /readyz, /status). Default ":9464".
	Listen string `yaml:"listen"`
	// InstanceID is this process's lease identity in the Vault record.
	// Default: the hostname.
	InstanceID string `yaml:"instance_id"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Vault configures the Vault client and its authentication.
	Vault Vault `yaml:"vault"`
	// Affix configures the Affix API account, shared by every client that
	// does not override it.
	Affix Affix `yaml:"affix"`
	// Rotation tunes leases, retries and concurrency.
	Rotation Rotation `yaml:"rotation"`
	// Clients are the Affix clients under rotation; at least one.
	Clients []Client `yaml:"clients"`
	// Notifications are the webhooks told what happens to rotations
	// (docs/notifications.md). Optional.
	Notifications []Webhook `yaml:"notifications"`
}

// Webhook is one receiver of notifications: signed JSON events POSTed to
// URL, best effort (they never hold up or fail a rotation).
type Webhook struct {
	// URL receives the events: an absolute http(s) URL without user info,
	// query or fragment. Required.
	URL string `yaml:"url"`
	// Events limits what is sent (notify.EventTypes); left out: every
	// event.
	Events []string `yaml:"events"`
	// SecretEnv names the environment variable holding the signing key
	// (Standard Webhooks: "whsec_" + base64 of 24 to 64 random bytes;
	// several, separated by spaces, while changing it). Exactly one of
	// SecretEnv and SecretFile is required.
	SecretEnv string `yaml:"secret_env"`
	// SecretFile is a file holding the signing key, instead of SecretEnv.
	SecretFile string `yaml:"secret_file"`
	// Timeout bounds one delivery attempt. Default 10s, > 0.
	Timeout Duration `yaml:"timeout"`
	// MaxElapsed bounds the retries of one event: no attempt starts later
	// than this after the first. Default 5m; 0: one attempt only; >= 0.
	MaxElapsed Duration `yaml:"max_elapsed"`
	// QueueSize is how many events may wait for this webhook; more are
	// dropped (and counted). Default 100, 1 to 100000.
	QueueSize int `yaml:"queue_size"`
}

// Log configures the logger.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json or console. Default json.
	Format string `yaml:"format"`
}

// Vault configures the Vault client.
type Vault struct {
	// Address of Vault (http, https or unix URL). Empty: the vault package
	// falls back to VAULT_ADDR.
	Address string `yaml:"address"`
	// Namespace is the Vault Enterprise namespace; empty: VAULT_NAMESPACE.
	Namespace string `yaml:"namespace"`
	// KVMount is the mount path of the KV version 2 engine. Default "secret".
	KVMount string `yaml:"kv_mount"`
	// Timeout of each Vault request. Default 30s.
	Timeout Duration `yaml:"timeout"`
	// Auth selects and configures the auth method.
	Auth VaultAuth `yaml:"auth"`
	// TLS configures the TLS connection to Vault.
	TLS VaultTLS `yaml:"tls"`
}

// VaultAuth selects and configures the Vault auth method.
type VaultAuth struct {
	// Method is token (default), approle or kubernetes.
	Method string `yaml:"method"`
	// TokenEnv names the environment variable holding the token (method
	// token). Default VAULT_TOKEN unless TokenFile is set.
	TokenEnv string `yaml:"token_env"`
	// TokenFile is a file holding the token (e.g. a Vault Agent sink), as an
	// alternative to TokenEnv (method token).
	TokenFile string `yaml:"token_file"`
	// AppRole is required if and only if Method is approle.
	AppRole *AppRole `yaml:"approle"`
	// Kubernetes is required if and only if Method is kubernetes.
	Kubernetes *Kubernetes `yaml:"kubernetes"`
}

// AppRole configures Vault's AppRole auth method.
type AppRole struct {
	// Mount is the auth mount path. Default "approle".
	Mount string `yaml:"mount"`
	// RoleID is the role id (not a secret). Exactly one of RoleID and
	// RoleIDFile is required.
	RoleID string `yaml:"role_id"`
	// RoleIDFile is a file holding the role id.
	RoleIDFile string `yaml:"role_id_file"`
	// SecretIDFile is a file holding the secret id. Exactly one of
	// SecretIDFile and SecretIDEnv is required.
	SecretIDFile string `yaml:"secret_id_file"`
	// SecretIDEnv names the environment variable holding the secret id.
	SecretIDEnv string `yaml:"secret_id_env"`
}

// Kubernetes configures Vault's Kubernetes auth method.
type Kubernetes struct {
	// Mount is the auth mount path. Default "kubernetes".
	Mount string `yaml:"mount"`
	// Role is the Vault role to log in as. Required.
	Role string `yaml:"role"`
	// TokenFile is the service account token file. Default
	// /var/run/secrets/kubernetes.io/serviceaccount/token.
	TokenFile string `yaml:"token_file"`
}

// VaultTLS configures TLS to Vault.
type VaultTLS struct {
	// CACert is a PEM file of the CA that signed Vault's certificate.
	CACert string `yaml:"ca_cert"`
	// InsecureSkipVerify disables certificate verification (tests only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Affix configures an Affix API account: where to send requests and where
// the API key is read from.
type Affix struct {
	// BaseURL of the API. Default "https://api.affixapi.com"; an absolute
	// http(s) URL without query, fragment or user info.
	BaseURL string `yaml:"base_url"`
	// APIKeyEnv names the environment variable holding the API key. Default
	// AFFIX_API_KEY unless APIKeyFile is set.
	APIKeyEnv string `yaml:"api_key_env"`
	// APIKeyFile is a file holding the API key, instead of APIKeyEnv.
	APIKeyFile string `yaml:"api_key_file"`
	// Timeout of each request. Default 30s.
	Timeout Duration `yaml:"timeout"`
	// RateLimit is the number of requests per second allowed per API key;
	// 0 (the default) means unlimited.
	RateLimit float64 `yaml:"rate_limit"`
	// Burst is the number of requests allowed at once above RateLimit.
	// Default 1 when RateLimit > 0.
	Burst int `yaml:"burst"`
}

// Rotation tunes leases, retries and concurrency.
type Rotation struct {
	// LeaseDuration is how long a process holds a client while a step is
	// being tried. Default 5m, at least 30s.
	LeaseDuration Duration `yaml:"lease_duration"`
	// RetryInitial is the first backoff delay after a transient failure.
	// Default 1s, > 0.
	RetryInitial Duration `yaml:"retry_initial"`
	// RetryMax caps the exponential backoff. Default 5m, >= RetryInitial.
	RetryMax Duration `yaml:"retry_max"`
	// MaxConcurrent is the number of rotations driven at once. Default 10,
	// at least 1.
	MaxConcurrent int `yaml:"max_concurrent"`
	// ReconcileInterval is how often the daemon re-asserts, for every
	// client, the set of secrets Affix must accept as the Vault record
	// implies it (the repair of a stale request or an out-of-band edit).
	// Default 1h; 0 disables it; >= 0.
	ReconcileInterval Duration `yaml:"reconcile_interval"`
	// RereadInterval is how often, at least, a process waiting out a grace
	// period re-reads the record, so an operator's change to it is seen
	// within this. Default 30s, > 0.
	RereadInterval Duration `yaml:"reread_interval"`
	// ClockSkewMargin is added to grace_until by a process that drops the
	// old secret of an overlap it did not start (its clock may run ahead of
	// the one that wrote grace_until). Default 30s, >= 0.
	ClockSkewMargin Duration `yaml:"clock_skew_margin"`
}

// Client is one Affix client under rotation.
type Client struct {
	// Name labels the client in metrics, logs and -client. Required,
	// unique, [a-zA-Z0-9_.-]{1,64}.
	Name string `yaml:"name"`
	// VaultPath is the client's record, relative to the KV mount
	// (e.g. affix/prod). Required and unique.
	VaultPath string `yaml:"vault_path"`
	// Schedule is a robfig/cron/v3 spec, as accepted by ParseSchedule.
	// Required.
	Schedule string `yaml:"schedule"`
	// GracePeriod is how long both secrets stay valid. Required, > 0.
	GracePeriod Duration `yaml:"grace_period"`
	// Jitter is a random delay of up to this after each scheduled time.
	// Optional, >= 0.
	Jitter Duration `yaml:"jitter"`
	// MaxAge makes the daemon rotate at once, on start, a client whose last
	// rotation is older than this. 0 (the default) disables it; when set it
	// must exceed GracePeriod.
	MaxAge Duration `yaml:"max_age"`
	// Bootstrap allows a missing record: the first rotation posts the new
	// secret alone.
	Bootstrap bool `yaml:"bootstrap"`
	// Affix overrides the top-level affix block for this client; see
	// Config.AffixFor.
	Affix AffixOverride `yaml:"affix"`
	// App holds optional fields sent with every update.
	App App `yaml:"app"`
	// Consumers describes the applications that read the client's secret
	// from Vault, so that the grace period can be checked against them.
	Consumers Consumers `yaml:"consumers"`
}

// Consumers describes the applications that read a client's secret from
// Vault (Vault Agent, External Secrets Operator, the application itself).
type Consumers struct {
	// MaxRefresh is the slowest consumer's refresh interval plus its
	// restart time: how long after the new secret becomes current in Vault
	// the last consumer may still use the old one. When set, GracePeriod
	// must exceed it. 0 (the default) states nothing; >= 0.
	MaxRefresh Duration `yaml:"max_refresh"`
}

// AffixOverride overrides fields of the top-level affix block for one
// client. Empty (zero) fields are inherited.
type AffixOverride struct {
	// BaseURL replaces affix.base_url.
	BaseURL string `yaml:"base_url"`
	// APIKeyEnv replaces affix.api_key_env and clears affix.api_key_file.
	APIKeyEnv string `yaml:"api_key_env"`
	// APIKeyFile replaces affix.api_key_file and clears affix.api_key_env.
	APIKeyFile string `yaml:"api_key_file"`
	// Timeout replaces affix.timeout.
	Timeout Duration `yaml:"timeout"`
}

// App holds the optional fields sent with every update of a client. Only
// the fields the config sets are sent.
type App struct {
	// Name is sent only when set.
	Name *string `yaml:"name"`
	// RedirectURIs is sent only when set (non-nil; `redirect_uris: []` sends
	// an empty list).
	RedirectURIs []string `yaml:"redirect_uris"`
	// WebhookURI is not sent when unset, sent as JSON null for
	// `webhook_uri: null`, and sent as a string otherwise.
	WebhookURI OptionalString `yaml:"webhook_uri"`
}

// UnmarshalYAML implements yaml.Unmarshaler. It exists because yaml.v3 does
// not call an Unmarshaler for an explicit null (it zeroes the field
// instead), so OptionalString alone cannot tell `webhook_uri: null` from an
// absent key; here the webhook_uri node is captured raw and classified.
func (a *App) UnmarshalYAML(n *yaml.Node) error {
	var raw struct {
		Name         *string   `yaml:"name"`
		RedirectURIs []string  `yaml:"redirect_uris"`
		WebhookURI   yaml.Node `yaml:"webhook_uri"`
	}
	if err := n.Decode(&raw); err != nil {
		return err
	}
	var w OptionalString
	if wn := resolveAlias(&raw.WebhookURI); wn.Kind != 0 {
		if err := w.UnmarshalYAML(wn); err != nil {
			return err
		}
	}
	*a = App{Name: raw.Name, RedirectURIs: raw.RedirectURIs, WebhookURI: w}
	return nil
}

// OptionalString is a string that distinguishes an absent key (Set false),
// an explicit null (Set and Null) and a string value (Set, Value).
type OptionalString struct {
	Set, Null bool
	Value     string
}

// UnmarshalYAML implements yaml.Unmarshaler: a null marks the value Set and
// Null, a string marks it Set; anything else is an error. yaml.v3 only calls
// it for non-null values; App.UnmarshalYAML handles null.
func (o *OptionalString) UnmarshalYAML(n *yaml.Node) error {
	n = resolveAlias(n)
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
		*o = OptionalString{Set: true, Null: true}
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str":
		*o = OptionalString{Set: true, Value: n.Value}
	default:
		return typeError(n, "must be a string or null")
	}
	return nil
}

// Duration is a time.Duration read from YAML strings such as "30s", "15m"
// or "720h" (any time.ParseDuration string); "0" is also accepted.
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration as time.Duration does ("720h0m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML implements yaml.Marshaler, so a Config can be written back.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, problem := parseDuration(resolveAlias(n))
	if problem != "" {
		return typeError(n, problem)
	}
	*d = v
	return nil
}

// parseDuration parses a duration node; problem is empty on success.
func parseDuration(n *yaml.Node) (d Duration, problem string) {
	if n.Kind != yaml.ScalarNode {
		return 0, "must be a duration such as 30s, 15m or 720h"
	}
	s := strings.TrimSpace(n.Value)
	if s == "0" {
		return 0, ""
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if strings.HasSuffix(s, "d") || strings.HasSuffix(s, "w") {
			return 0, fmt.Sprintf("%q is not a duration: days and weeks are not units, write 24h for a day, 168h for a week", n.Value)
		}
		return 0, fmt.Sprintf("%q is not a duration such as 30s, 15m or 720h", n.Value)
	}
	return Duration(v), ""
}

func typeError(n *yaml.Node, problem string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, problem)}}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// Error is one problem with one key of the configuration. Key is the YAML
// path of the key ("vault.auth.method", "clients[0].grace_period"), or the
// source name for problems with the file as a whole. Client is the name of
// the client a clients[i] key belongs to, when it has one; Line is the
// line of the file the key is on (or, for a key left out, the line of the
// nearest enclosing key), 0 when unknown or already said in Problem.
type Error struct {
	Key, Problem string
	Client       string
	Line         int
}

// Error renders the one format every message about a key uses:
//
//	<key>[ (client "<name>")]: <problem>[ (line N)]
//
// e.g. `clients[0].grace_period (client "prod"): must be positive, got -1h (line 14)`.
func (e *Error) Error() string {
	s := e.KeyPath() + ": " + e.Problem
	if e.Line > 0 && !strings.Contains(e.Problem, "(line ") {
		s += fmt.Sprintf(" (line %d)", e.Line)
	}
	return s
}

// KeyPath is the key and, for a key of a named client, the client's name:
// `clients[0].affix.api_key_env (client "prod")`.
func (e *Error) KeyPath() string {
	if e.Client != "" {
		return fmt.Sprintf("%s (client %q)", e.Key, e.Client)
	}
	return e.Key
}

// clientIndexRE matches the clients[i] prefix of a key path.
var clientIndexRE = regexp.MustCompile(`^clients\[(\d+)\]`)

// File is a checked configuration together with what is known of the file
// it came from: where each key is and how each duration was written. It is
// what -validate reports against.
type File struct {
	*Config
	// Source names the file in messages.
	Source string
	src    *srcInfo
}

// srcInfo is where the keys of a file are and how its durations were
// written, from the walker.
type srcInfo struct {
	keyLine map[string]int    // key path -> line
	raw     map[string]string // duration key path -> its text as written
}

// lineOf returns the line a key path is given on or, for a key left out,
// the line of the nearest enclosing key that is given; 0 when none is.
func (s *srcInfo) lineOf(key string) int {
	for s != nil && key != "" {
		if l, ok := s.keyLine[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return 0
		}
		key = key[:i]
	}
	return 0
}

// rawOf returns a duration key's value as the file wrote it ("-1h"), or d
// as time.Duration formats it when the key was not given.
func (s *srcInfo) rawOf(key string, d Duration) string {
	if s != nil {
		if v, ok := s.raw[key]; ok {
			return v
		}
	}
	return d.String()
}

// annotate fills e's Client and Line where they are known and not set.
func annotate(e *Error, c *Config, src *srcInfo) {
	if m := clientIndexRE.FindStringSubmatch(e.Key); m != nil && e.Client == "" && c != nil {
		if i, err := strconv.Atoi(m[1]); err == nil && i < len(c.Clients) {
			e.Client = c.Clients[i].Name
		}
	}
	if e.Line == 0 && !strings.Contains(e.Problem, "(line ") {
		e.Line = src.lineOf(e.Key)
	}
}

// Problem returns an *Error about key, with the client's name and the line
// filled in from the file, so that every message names keys in the one
// format.
func (f *File) Problem(key, format string, args ...any) *Error {
	e := &Error{Key: key, Problem: fmt.Sprintf(format, args...)}
	annotate(e, f.Config, f.src)
	return e
}

// LineOf returns the line of the file a key path is on (or, for a key left
// out, that of the nearest enclosing key given); 0 when unknown.
func (f *File) LineOf(key string) int { return f.src.lineOf(key) }

// Raw returns a duration key's value as the file wrote it ("-1h", not
// "-1h0m0s"), or d formatted by time.Duration when the key was not given.
func (f *File) Raw(key string, d Duration) string { return f.src.rawOf(key, d) }

// Load reads the file at path and Parses it.
func Load(path string) (*Config, error) {
	f, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	return f.Config, nil
}

// LoadFile reads the file at path and parses it as ParseFile does (a File
// may come with an error: see ParseFile).
func LoadFile(path string) (*File, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return ParseFile(data, path)
}

// Parse decodes data strictly (unknown keys, wrong types, several documents
// and an empty file are errors), fills in defaults and validates. source
// names the data in messages about the file as a whole. On failure the
// error is an *Error or several joined with errors.Join, one per problem.
func Parse(data []byte, source string) (*Config, error) {
	f, err := ParseFile(data, source)
	if err != nil {
		return nil, err
	}
	return f.Config, nil
}

// ParseFile is Parse, keeping what is known of the file (File). When the
// file is YAML of the right shape but some keys are wrong, it returns the
// errors together with a File holding what could be decoded and defaulted,
// so that -validate can report further problems at once; that File must
// not be run.
func ParseFile(data []byte, source string) (*File, error) {
	if source == "" {
		source = "config"
	}
	root, err := parseDocument(data, source)
	if err != nil {
		return nil, err
	}
	w := newWalker()
	w.check(root, configType, "")
	var c Config
	structural := w.errs
	if len(structural) == 0 {
		// The walker found nothing: decode the file itself, strictly, as a
		// second line of defence (its messages are then translated).
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil {
			structural = w.translate(err, source)
		}
	} else if err := root.Decode(&c); err != nil {
		// The walker removed or nulled every value it reported, so the
		// rest of the tree should decode; if not, say so too.
		structural = append(structural, w.translate(err, source)...)
	}
	src := &srcInfo{keyLine: w.keyLine, raw: w.raw}
	c.defaults(w.present)
	errs := append([]error(nil), structural...)
	for _, e := range c.validate(w.present, src) {
		if !coveredBy(e, structural) {
			errs = append(errs, e)
		}
	}
	for _, e := range errs {
		var ce *Error
		if errors.As(e, &ce) && ce.Key != source {
			annotate(ce, &c, src)
		}
	}
	if len(errs) > 0 {
		// What could be decoded, for -validate to check further.
		return &File{Config: &c, Source: source, src: src}, errors.Join(errs...)
	}
	return &File{Config: &c, Source: source, src: src}, nil
}

// parseDocument returns the single YAML document in data.
func parseDocument(data []byte, source string) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Key: source, Problem: "the file is empty"}
		}
		return nil, &Error{Key: source, Problem: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, &Error{Key: source, Problem: fmt.Sprintf("holds more than one YAML document (a second starts at line %d); give one", max(extra.Line, 1))}
	case !errors.Is(err, io.EOF):
		return nil, &Error{Key: source, Problem: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 {
		return nil, &Error{Key: source, Problem: "the file is empty"}
	}
	root := resolveAlias(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, &Error{Key: source, Problem: "the file is empty (no keys)"}
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{Key: source, Problem: fmt.Sprintf("must be a mapping of keys such as `clients:` (line %d)", root.Line)}
	}
	return doc.Content[0], nil
}

// coveredBy reports whether e concerns a key that already has a structural
// error (the key itself or one under it): its value was not decoded, so a
// further complaint about it would only repeat the first.
func coveredBy(e error, structural []error) bool {
	var ce *Error
	if !errors.As(e, &ce) {
		return false
	}
	for _, s := range structural {
		var se *Error
		if !errors.As(s, &se) || strings.HasPrefix(se.Problem, unknownKey) {
			continue // an unknown key hides nothing: its neighbours were decoded
		}
		if ce.Key == se.Key || strings.HasPrefix(ce.Key, se.Key+".") || strings.HasPrefix(ce.Key, se.Key+"[") {
			return true
		}
	}
	return false
}

// ParseSchedule parses a robfig/cron/v3 spec exactly as the scheduler does:
// five fields ("0 3 * * 1"), descriptors ("@daily", "@every 720h") and an
// optional "CRON_TZ=Europe/Paris " (or "TZ=") prefix.
func ParseSchedule(spec string) (cron.Schedule, error) {
	return cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor).Parse(spec)
}

// AffixFor returns the top-level affix block merged with cl's overrides:
// fields set in the override win; an override's api_key_file clears an
// inherited api_key_env, and an override's api_key_env clears an inherited
// api_key_file.
func (c *Config) AffixFor(cl Client) Affix {
	a := c.Affix
	o := cl.Affix
	if o.BaseURL != "" {
		a.BaseURL = o.BaseURL
	}
	switch {
	case o.APIKeyFile != "":
		a.APIKeyFile, a.APIKeyEnv = o.APIKeyFile, ""
	case o.APIKeyEnv != "":
		a.APIKeyEnv, a.APIKeyFile = o.APIKeyEnv, ""
	}
	if o.Timeout != 0 {
		a.Timeout = o.Timeout
	}
	return a
}

// maxKeyFileSize bounds what APIKey reads from a file.
const maxKeyFileSize = 64 << 10

// APIKey reads the API key from APIKeyFile (without one trailing "\n" or
// "\r\n") if set, otherwise from the environment variable APIKeyEnv, looked
// up with getenv. Errors name the key (affix.api_key_file,
// affix.api_key_env) and never the value. A value that is empty, holds a
// control character (such as a second line) or is surrounded by spaces is
// rejected: it could not be sent verbatim in the Authorization header.
func (a Affix) APIKey(getenv func(string) string) (secret.Value, error) {
	var key, v string
	switch {
	case a.APIKeyFile != "":
		key = "affix.api_key_file"
		b, err := readSmall(a.APIKeyFile, maxKeyFileSize)
		if err != nil {
			return secret.Value{}, &Error{Key: key, Problem: err.Error()}
		}
		v = string(b)
		if s, ok := strings.CutSuffix(v, "\r\n"); ok {
			v = s
		} else {
			v = strings.TrimSuffix(v, "\n")
		}
		if v == "" {
			return secret.Value{}, &Error{Key: key, Problem: fmt.Sprintf("file %s is empty", a.APIKeyFile)}
		}
	case a.APIKeyEnv != "":
		key = "affix.api_key_env"
		if getenv == nil {
			getenv = os.Getenv
		}
		v = getenv(a.APIKeyEnv)
		if v == "" {
			return secret.Value{}, &Error{Key: key, Problem: fmt.Sprintf("environment variable %s is empty", a.APIKeyEnv)}
		}
	default:
		return secret.Value{}, &Error{Key: "affix.api_key_env", Problem: "neither api_key_env nor api_key_file is set"}
	}
	where := "the API key in environment variable " + a.APIKeyEnv
	if a.APIKeyFile != "" {
		where = "the API key in file " + a.APIKeyFile
	}
	if !utf8.ValidString(v) {
		return secret.Value{}, &Error{Key: key, Problem: where + " is not valid UTF-8"}
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return secret.Value{}, &Error{Key: key, Problem: where + " holds a control character (a line break?): it must be one line"}
		}
	}
	if strings.TrimSpace(v) != v {
		return secret.Value{}, &Error{Key: key, Problem: where + " has leading or trailing spaces"}
	}
	return secret.New(v), nil
}

// WebhookKeys reads the signing key(s) of notifications[i] from its
// secret_file (without one trailing "\n" or "\r\n") or secret_env, and
// parses them. Errors name the key (notifications[i].secret_env) and never
// the value.
func (c *Config) WebhookKeys(i int, getenv func(string) string) ([]notify.Key, error) {
	w := c.Notifications[i]
	var key, v string
	switch {
	case w.SecretFile != "":
		key = fmt.Sprintf("notifications[%d].secret_file", i)
		b, err := readSmall(w.SecretFile, maxKeyFileSize)
		if err != nil {
			return nil, &Error{Key: key, Problem: err.Error()}
		}
		v = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return nil, &Error{Key: key, Problem: fmt.Sprintf("file %s is empty", w.SecretFile)}
		}
	case w.SecretEnv != "":
		key = fmt.Sprintf("notifications[%d].secret_env", i)
		if getenv == nil {
			getenv = os.Getenv
		}
		v = getenv(w.SecretEnv)
		if v == "" {
			return nil, &Error{Key: key, Problem: fmt.Sprintf("environment variable %s is empty", w.SecretEnv)}
		}
	default:
		return nil, &Error{Key: fmt.Sprintf("notifications[%d].secret_env", i), Problem: "neither secret_env nor secret_file is set"}
	}
	keys, err := notify.ParseKeys(v)
	if err != nil {
		return nil, &Error{Key: key, Problem: "the signing key: " + err.Error()}
	}
	return keys, nil
}

// readSmall reads at most limit bytes of the file, failing if it is longer.
func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("file %s is larger than %d bytes", path, limit)
	}
	return b, nil
}
