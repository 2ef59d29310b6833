// Package config loads, defaults and validates the affix-rotator YAML
// configuration, once, at the edge: the rest of the program receives a
// checked struct. Every problem is reported with the YAML path of the key it
// concerns ("clients[1].grace_period: must be positive"), all at once.
// Secrets never come from the YAML: there are no keys for them, only for
// the environment variables or files that hold them.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// Config is the whole file.
type Config struct {
	Listen     string   `yaml:"listen"`
	InstanceID string   `yaml:"instance_id"`
	Log        Log      `yaml:"log"`
	Vault      Vault    `yaml:"vault"`
	Affix      Affix    `yaml:"affix"`
	Rotation   Rotation `yaml:"rotation"`
	Clients    []Client `yaml:"clients"`
}

// Log configures zap.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | console
}

// Vault configures the Vault client.
type Vault struct {
	Address   string    `yaml:"address"`
	Namespace string    `yaml:"namespace"`
	KVMount   string    `yaml:"kv_mount"`
	Timeout   Duration  `yaml:"timeout"`
	Auth      VaultAuth `yaml:"auth"`
	TLS       VaultTLS  `yaml:"tls"`
}

// VaultAuth selects and configures the auth method.
type VaultAuth struct {
	Method     string      `yaml:"method"`
	TokenEnv   string      `yaml:"token_env"`
	TokenFile  string      `yaml:"token_file"`
	AppRole    *AppRole    `yaml:"approle"`
	Kubernetes *Kubernetes `yaml:"kubernetes"`
}

// AppRole configures Vault's AppRole auth method.
type AppRole struct {
	Mount        string `yaml:"mount"`
	RoleID       string `yaml:"role_id"`
	RoleIDFile   string `yaml:"role_id_file"`
	SecretIDFile string `yaml:"secret_id_file"`
	SecretIDEnv  string `yaml:"secret_id_env"`
}

// Kubernetes configures Vault's Kubernetes auth method.
type Kubernetes struct {
	Mount     string `yaml:"mount"`
	Role      string `yaml:"role"`
	TokenFile string `yaml:"token_file"`
}

// VaultTLS configures TLS to Vault.
type VaultTLS struct {
	CACert             string `yaml:"ca_cert"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Affix configures the Affix API account.
type Affix struct {
	BaseURL    string   `yaml:"base_url"`
	APIKeyEnv  string   `yaml:"api_key_env"`
	APIKeyFile string   `yaml:"api_key_file"`
	Timeout    Duration `yaml:"timeout"`
	RateLimit  float64  `yaml:"rate_limit"`
	Burst      int      `yaml:"burst"`
}

// Rotation tunes leases, retries and concurrency.
type Rotation struct {
	LeaseDuration Duration `yaml:"lease_duration"`
	RetryInitial  Duration `yaml:"retry_initial"`
	RetryMax      Duration `yaml:"retry_max"`
	MaxConcurrent int      `yaml:"max_concurrent"`
}

// Client is one Affix client under rotation.
type Client struct {
	Name        string        `yaml:"name"`
	VaultPath   string        `yaml:"vault_path"`
	Schedule    string        `yaml:"schedule"`
	GracePeriod Duration      `yaml:"grace_period"`
	Jitter      Duration      `yaml:"jitter"`
	MaxAge      Duration      `yaml:"max_age"`
	Bootstrap   bool          `yaml:"bootstrap"`
	Affix       AffixOverride `yaml:"affix"`
	App         App           `yaml:"app"`
}

// AffixOverride overrides the top-level affix block for one client.
type AffixOverride struct {
	BaseURL    string   `yaml:"base_url"`
	APIKeyEnv  string   `yaml:"api_key_env"`
	APIKeyFile string   `yaml:"api_key_file"`
	Timeout    Duration `yaml:"timeout"`
}

// App holds the optional fields sent with every update of a client.
type App struct {
	Name         *string        `yaml:"name"`
	RedirectURIs []string       `yaml:"redirect_uris"`
	WebhookURI   OptionalString `yaml:"webhook_uri"`
}

// OptionalString distinguishes an absent key, an explicit null and a string.
type OptionalString struct {
	Set, Null bool
	Value     string
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (o *OptionalString) UnmarshalYAML(n *yaml.Node) error {
	o.Set = true
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		o.Null = true
		return nil
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf("line %d: must be a string or null", n.Line)
	}
	o.Value = n.Value
	return nil
}

// Duration is a time.Duration written as "30s", "720h" or 0.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: must be a duration such as 30s or 720h", n.Line)
	}
	if n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use units: 30s, 15m, 720h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Error is one problem with one key.
type Error struct{ Key, Problem string }

func (e *Error) Error() string { return e.Key + ": " + e.Problem }

// Load reads and checks the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes data strictly (unknown keys are errors), fills defaults and
// validates. source names the data in messages.
func Parse(data []byte, source string) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Key: "(file)", Problem: source + " is empty"}
		}
		return nil, &Error{Key: "(file)", Problem: "not valid YAML: " + err.Error()}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{Key: "(file)", Problem: "holds more than one YAML document"}
	}
	if errs := checkKeys(&root, reflectType(Config{}), ""); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var c Config
	if err := root.Decode(&c); err != nil {
		return nil, typeErrors(err)
	}
	markNullWebhooks(&root, &c)
	if err := c.defaults(); err != nil {
		return nil, err
	}
	if errs := c.validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &c, nil
}

// ParseSchedule parses a robfig/cron/v3 spec as the scheduler does: five
// fields, descriptors (@daily, @every 720h) and a CRON_TZ= prefix.
func ParseSchedule(spec string) (cron.Schedule, error) {
	return cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor).Parse(spec)
}

// AffixFor returns the top-level affix block merged with cl's overrides.
func (c *Config) AffixFor(cl Client) Affix {
	a := c.Affix
	o := cl.Affix
	if o.BaseURL != "" {
		a.BaseURL = o.BaseURL
	}
	if o.APIKeyEnv != "" {
		a.APIKeyEnv, a.APIKeyFile = o.APIKeyEnv, ""
	}
	if o.APIKeyFile != "" {
		a.APIKeyFile, a.APIKeyEnv = o.APIKeyFile, ""
	}
	if o.Timeout != 0 {
		a.Timeout = o.Timeout
	}
	return a
}

// APIKey reads the API key from the file or environment variable the block
// names. Errors name the key, never the value.
func (a Affix) APIKey(getenv func(string) string) (secret.Value, error) {
	var v, key string
	if a.APIKeyFile != "" {
		key = "affix.api_key_file"
		b, err := os.ReadFile(a.APIKeyFile)
		if err != nil {
			return secret.Value{}, &Error{Key: key, Problem: err.Error()}
		}
		v = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	} else {
		key = "affix.api_key_env"
		v = getenv(a.APIKeyEnv)
		if v == "" {
			return secret.Value{}, &Error{Key: key, Problem: fmt.Sprintf("environment variable %s is empty or unset", a.APIKeyEnv)}
		}
	}
	if v == "" {
		return secret.Value{}, &Error{Key: key, Problem: "the API key is empty"}
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return secret.Value{}, &Error{Key: key, Problem: "the API key holds a control character (a newline?); it cannot be sent in a header"}
		}
	}
	return secret.New(v), nil
}

// markNullWebhooks records `webhook_uri: null`, which yaml.v3 decodes
// without calling UnmarshalYAML.
func markNullWebhooks(root *yaml.Node, c *Config) {
	clients := child(root.Content[0], "clients")
	if clients == nil || clients.Kind != yaml.SequenceNode {
		return
	}
	for i, cl := range clients.Content {
		if w := child(child(cl, "app"), "webhook_uri"); w != nil && w.Kind == yaml.ScalarNode && w.Tag == "!!null" && i < len(c.Clients) {
			c.Clients[i].App.WebhookURI = OptionalString{Set: true, Null: true}
		}
	}
}

// child returns the value of key in a mapping node, or nil.
func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
