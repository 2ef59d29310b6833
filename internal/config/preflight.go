package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Preflight thresholds (docs/design.md, "-validate").
const (
	// MinInterval is the shortest `@every` interval -validate accepts.
	MinInterval = time.Minute
	// ScheduleSamples is how many runs of a schedule -validate samples to
	// find the shortest interval between two of them.
	ScheduleSamples = 100
)

// scheduleEpoch is the fixed start from which schedules are sampled, so
// that -validate says the same thing every day.
var scheduleEpoch = time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC)

// Interval is what sampling a schedule found: the shortest time between two
// consecutive runs and the first pair that far apart. Never is true when
// the schedule does not fire at all.
type Interval struct {
	Min      time.Duration
	From, To time.Time
	Never    bool
}

// ScheduleInterval samples the next ScheduleSamples runs of spec from a
// fixed start and returns the shortest interval between two consecutive
// ones. spec must parse (ParseSchedule).
func ScheduleInterval(spec string) (Interval, error) {
	sched, err := ParseSchedule(spec)
	if err != nil {
		return Interval{}, err
	}
	prev := sched.Next(scheduleEpoch)
	if prev.IsZero() {
		return Interval{Never: true}, nil
	}
	var iv Interval
	for i := 1; i < ScheduleSamples; i++ {
		next := sched.Next(prev)
		if next.IsZero() {
			break
		}
		if d := next.Sub(prev); iv.Min == 0 || d < iv.Min {
			iv = Interval{Min: d, From: prev, To: next}
		}
		prev = next
	}
	return iv, nil
}

// VaultAddr returns the Vault address the process uses: vault.address,
// else the VAULT_ADDR environment variable, read with getenv and checked
// as vault.address is (an http, https or unix URL without credentials,
// query or fragment: an *Error that never quotes it). "" when neither is
// set.
func (c *Config) VaultAddr(getenv func(string) string) (string, error) {
	if c.Vault.Address != "" {
		return c.Vault.Address, nil
	}
	a := getenv("VAULT_ADDR")
	if a == "" {
		return "", nil
	}
	var p problems
	checkURL(&p, "VAULT_ADDR", a, "http", "https", "unix")
	if len(p.errs) > 0 {
		return "", p.errs[0]
	}
	return a, nil
}

// Lint returns what -validate refuses in a file that Parse accepts, and
// what it only warns about. Parse accepts these so that tests and
// development can run fast schedules; -validate, run before a deployment,
// refuses them:
//
//   - a schedule that never fires, `@every` under MinInterval (`@every 0s`
//     runs every second), a grace_period or a jitter at least as long as the
//     shortest interval between two runs;
//   - no Vault address at all: neither vault.address nor VAULT_ADDR (the
//     Vault client would silently use https://127.0.0.1:8200).
//
// Warnings: `http://` to a host that is not this machine (the API key and
// every new secret, or the Vault token, cross the network unencrypted), and
// vault.tls.insecure_skip_verify (anyone on the path can pose as Vault).
// getenv reads VAULT_ADDR.
func (f *File) Lint(getenv func(string) string) (errs, warnings []*Error) {
	c := f.Config
	_, addrErr := c.VaultAddr(getenv)
	if addrErr != nil {
		var ce *Error
		if errors.As(addrErr, &ce) {
			errs = append(errs, f.Problem(ce.Key, "%s (vault.address is not set, so it is used)", ce.Problem))
		}
	} else if c.Vault.Address == "" && getenv("VAULT_ADDR") == "" {
		errs = append(errs, f.Problem("vault.address", "not set, and VAULT_ADDR is not set either: give vault.address (e.g. https://vault.example.com:8200) or set VAULT_ADDR; without either the Vault client silently uses https://127.0.0.1:8200"))
	}
	if w := cleartext(c.Vault.Address); w != "" {
		warnings = append(warnings, f.Problem("vault.address", "%q: %s: the Vault token and every secret cross the network unencrypted; use https://", c.Vault.Address, w))
	} else if c.Vault.Address == "" && addrErr == nil {
		if a := getenv("VAULT_ADDR"); cleartext(a) != "" {
			warnings = append(warnings, f.Problem("vault.address", "VAULT_ADDR %q (vault.address is not set): %s: the Vault token and every secret cross the network unencrypted; use https://", a, cleartext(a)))
		}
	}
	if c.Vault.TLS.InsecureSkipVerify {
		warnings = append(warnings, f.Problem("vault.tls.insecure_skip_verify", "true: Vault's certificate is not verified, so anyone on the network path can pose as Vault and receive the Vault token and every secret; give vault.tls.ca_cert instead (insecure_skip_verify is for tests only)"))
	}
	if w := cleartext(c.Affix.BaseURL); w != "" {
		warnings = append(warnings, f.Problem("affix.base_url", "%q: %s: the API key and every new client_secret cross the network unencrypted; use https://", c.Affix.BaseURL, w))
	}
	for i, cl := range c.Clients {
		k := func(s string) string { return fmt.Sprintf("clients[%d].%s", i, s) }
		if w := cleartext(cl.Affix.BaseURL); w != "" {
			warnings = append(warnings, f.Problem(k("affix.base_url"), "%q: %s: the API key and every new client_secret cross the network unencrypted; use https://", cl.Affix.BaseURL, w))
		}
		errs = append(errs, f.lintSchedule(i, cl)...)
	}
	for i, w := range c.Notifications {
		if cw := cleartext(w.URL); cw != "" {
			warnings = append(warnings, f.Problem(fmt.Sprintf("notifications[%d].url", i), "%s: notifications cross the network unencrypted (they hold no secret, but name clients, Vault paths and operators); use https://", cw))
		}
	}
	return errs, warnings
}

// lintSchedule checks one client's schedule against its grace and jitter.
func (f *File) lintSchedule(i int, cl Client) []*Error {
	k := func(s string) string { return fmt.Sprintf("clients[%d].%s", i, s) }
	var errs []*Error
	spec := cl.Schedule
	if rest, ok := everyOf(spec); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		switch {
		case err == nil && d <= 0:
			return append(errs, f.Problem(k("schedule"), "%q does not wait between runs: robfig/cron runs it every second; give an interval of at least %s, e.g. \"@every 720h\"", spec, short(MinInterval)))
		case err == nil && d < MinInterval:
			errs = append(errs, f.Problem(k("schedule"), "%q runs more often than once a minute: a rotation needs the grace period between two runs; give an interval of at least %s, e.g. \"@every 720h\"", spec, short(MinInterval)))
		}
	}
	iv, err := ScheduleInterval(spec)
	if err != nil {
		return errs // Parse has reported it
	}
	if iv.Never {
		return append(errs, f.Problem(k("schedule"), "%q never fires (no matching time within five years, e.g. a day that does not exist in that month): the client would never be rotated", spec))
	}
	if iv.Min <= 0 {
		return errs
	}
	between := fmt.Sprintf("the shortest interval between two runs of schedule %q (%s, from %s to %s)", spec, short(iv.Min), iv.From.Format(time.RFC3339), iv.To.Format(time.RFC3339))
	if cl.GracePeriod > 0 && cl.GracePeriod.D() >= iv.Min {
		errs = append(errs, f.Problem(k("grace_period"), "%s is not shorter than %s: the next rotation would be due before the grace of the last one ends, so rotations run back to back for ever; shorten grace_period or space the schedule out", f.Raw(k("grace_period"), cl.GracePeriod), between))
	}
	if cl.Jitter > 0 && cl.Jitter.D() >= iv.Min {
		errs = append(errs, f.Problem(k("jitter"), "%s is not shorter than %s: a delayed run would land after the next scheduled one; give a jitter well under the interval", f.Raw(k("jitter"), cl.Jitter), between))
	}
	return errs
}

// everyOf returns the interval text of an "@every" spec (after any
// CRON_TZ= or TZ= prefix).
func everyOf(spec string) (string, bool) {
	s := strings.TrimSpace(spec)
	if strings.HasPrefix(s, "CRON_TZ=") || strings.HasPrefix(s, "TZ=") {
		if i := strings.IndexAny(s, " \t"); i >= 0 {
			s = strings.TrimSpace(s[i:])
		}
	}
	return strings.CutPrefix(s, "@every ")
}

// short formats a duration without trailing zero units: "12h", "1h30m".
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// cleartext says why raw, an http:// URL to a host other than this
// machine, is sent in clear; "" for https, unix, loopback or no URL.
func cleartext(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return ""
	}
	host := u.Hostname()
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return ""
	}
	return fmt.Sprintf("http:// to %s, which is not this machine", host)
}

// Environment checks what the file names outside itself: every
// environment variable and file that holds a secret (API keys, the Vault
// token, the AppRole secret id, the Kubernetes service account token) and
// the CA certificate. A problem here is the environment's, not the
// file's: the file names them correctly, but they are unset, missing or
// empty where this runs. Values are never quoted.
func (f *File) Environment(getenv func(string) string) []*Error {
	c := f.Config
	var errs []*Error
	seen := map[string]bool{}
	add := func(e *Error) {
		if e != nil && !seen[e.Key] {
			seen[e.Key] = true
			errs = append(errs, e)
		}
	}
	for i, cl := range c.Clients {
		a := c.AffixFor(cl)
		var key string
		switch {
		case cl.Affix.APIKeyFile != "":
			key = fmt.Sprintf("clients[%d].affix.api_key_file", i)
		case cl.Affix.APIKeyEnv != "":
			key = fmt.Sprintf("clients[%d].affix.api_key_env", i)
		case a.APIKeyFile != "":
			key = "affix.api_key_file"
		default:
			key = "affix.api_key_env"
		}
		if seen[key] {
			continue
		}
		var e *Error
		if a.APIKeyFile != "" {
			e = f.fileProblem(key, a.APIKeyFile, "the Affix API key")
		} else {
			e = f.envProblem(key, a.APIKeyEnv, "the Affix API key", getenv)
		}
		if e == nil {
			if _, err := a.APIKey(getenv); err != nil {
				if ce, ok := err.(*Error); ok {
					e = f.Problem(key, "%s", ce.Problem)
				}
			}
		}
		if e != nil && !strings.HasPrefix(key, "clients[") {
			e.Problem += fmt.Sprintf(" (used by client %q and every client that does not override it)", cl.Name)
		}
		add(e)
		seen[key] = true
	}
	a := c.Vault.Auth
	switch a.Method {
	case "token":
		if a.TokenFile != "" {
			add(f.fileProblem("vault.auth.token_file", a.TokenFile, "the Vault token"))
		} else {
			add(f.envProblem("vault.auth.token_env", a.TokenEnv, "the Vault token", getenv))
		}
	case "approle":
		if ar := a.AppRole; ar != nil {
			if ar.RoleIDFile != "" {
				add(f.fileProblem("vault.auth.approle.role_id_file", ar.RoleIDFile, "the AppRole role id"))
			}
			if ar.SecretIDFile != "" {
				add(f.fileProblem("vault.auth.approle.secret_id_file", ar.SecretIDFile, "the AppRole secret id"))
			} else {
				add(f.envProblem("vault.auth.approle.secret_id_env", ar.SecretIDEnv, "the AppRole secret id", getenv))
			}
		}
	case "kubernetes":
		if k := a.Kubernetes; k != nil {
			add(f.fileProblem("vault.auth.kubernetes.token_file", k.TokenFile, "the Kubernetes service account token"))
		}
	}
	if c.Vault.TLS.CACert != "" {
		add(f.fileProblem("vault.tls.ca_cert", c.Vault.TLS.CACert, "the CA certificate of Vault"))
	}
	for i, w := range c.Notifications {
		var e *Error
		key := fmt.Sprintf("notifications[%d].secret_env", i)
		switch {
		case w.SecretFile != "":
			key = fmt.Sprintf("notifications[%d].secret_file", i)
			e = f.fileProblem(key, w.SecretFile, "the webhook signing key")
		case w.SecretEnv != "":
			e = f.envProblem(key, w.SecretEnv, "the webhook signing key", getenv)
		default:
			continue // the file's error
		}
		if e == nil {
			if _, err := c.WebhookKeys(i, getenv); err != nil {
				if ce, ok := err.(*Error); ok {
					e = f.Problem(ce.Key, "%s", ce.Problem)
				}
			}
		}
		add(e)
	}
	return errs
}

// envProblem reports an environment variable that is unset or empty.
func (f *File) envProblem(key, name, what string, getenv func(string) string) *Error {
	if name == "" || getenv(name) != "" {
		return nil
	}
	return f.Problem(key, "environment variable %s (%s) is unset or empty where this runs: set it in the daemon's environment (e.g. a Kubernetes Secret, a systemd EnvironmentFile)", name, what)
}

// fileProblem reports a file that is missing, unreadable, a directory or
// empty.
func (f *File) fileProblem(key, path, what string) *Error {
	st, err := os.Stat(path)
	switch {
	case os.IsNotExist(err):
		return f.Problem(key, "file %s (%s) does not exist where this runs", path, what)
	case err != nil:
		return f.Problem(key, "file %s (%s) cannot be read: %v", path, what, err)
	case st.IsDir():
		return f.Problem(key, "%s (%s) is a directory, not a file", path, what)
	case st.Size() == 0:
		return f.Problem(key, "file %s (%s) is empty", path, what)
	}
	fh, err := os.Open(path)
	if err != nil {
		return f.Problem(key, "file %s (%s) cannot be read: %v", path, what, err)
	}
	fh.Close()
	return nil
}
