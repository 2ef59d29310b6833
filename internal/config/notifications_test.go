package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/notify"
)

const hookKey = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestExampleNotificationsBlockIsValid: the commented notifications block
// of the example is valid once uncommented and means what it says.
func TestExampleNotificationsBlockIsValid(t *testing.T) {
	y := uncomment(t, string(readExample(t)), "# notifications:", "# ")
	c, err := Parse([]byte(y), "example+notifications")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Notifications) != 1 {
		t.Fatalf("notifications: %d", len(c.Notifications))
	}
	w := c.Notifications[0]
	if w.URL != "https://hooks.example.com/affix-rotator" || w.SecretEnv != "AFFIX_ROTATOR_WEBHOOK_SECRET" || len(w.Events) != 5 ||
		w.Timeout.D() != 10*time.Second || w.MaxElapsed.D() != 5*time.Minute || w.QueueSize != 100 {
		t.Fatalf("webhook: %+v", w)
	}
}

// TestNotificationsDefaults: keys left out take their defaults; an explicit
// max_elapsed: 0 is kept (one attempt).
func TestNotificationsDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal+"notifications:\n  - {url: \"https://h.example/x\", secret_env: HOOK}\n  - {url: \"https://h.example/y\", secret_file: /k, max_elapsed: 0}\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Notifications[0], c.Notifications[1]
	if a.Timeout.D() != DefaultWebhookTimeout || a.MaxElapsed.D() != DefaultWebhookMaxElapsed || a.QueueSize != DefaultWebhookQueueSize || a.Events != nil {
		t.Fatalf("defaults: %+v", a)
	}
	if b.MaxElapsed != 0 || b.Timeout.D() != DefaultWebhookTimeout {
		t.Fatalf("explicit 0: %+v", b)
	}
	if c2, err := Parse([]byte(minimal), "t.yaml"); err != nil || c2.Notifications != nil {
		t.Fatalf("no notifications: %v %+v", err, c2.Notifications)
	}
}

// TestBrokenNotificationsNameTheKey: every bad value is refused with its
// key path (exit 2 in the command).
func TestBrokenNotificationsNameTheKey(t *testing.T) {
	hook := func(fields string) string {
		return minimal + "notifications:\n  - {" + fields + "}\n"
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", hook(`url: "https://h/x", secret_env: H, secret: whsec_x`), "notifications[0].secret: unknown key"},
		{"not a list", minimal + "notifications: {url: x}\n", "notifications: must be a list"},
		{"no url", hook(`secret_env: H`), "notifications[0].url: required"},
		{"bad url", hook(`url: "ftp://h/x", secret_env: H`), "notifications[0].url: \"ftp://h/…\" must be an absolute http:// or https:// URL"},
		{"query", hook(`url: "https://h/x?token=abc", secret_env: H`), "notifications[0].url: must not have a query or a fragment"},
		{"credentials", hook(`url: "https://u:p@h/x", secret_env: H`), "notifications[0].url: must not hold credentials"},
		{"no secret", hook(`url: "https://h/x"`), "notifications[0].secret_env: required"},
		{"both secrets", hook(`url: "https://h/x", secret_env: H, secret_file: /k`), "notifications[0].secret_file: give secret_env or secret_file, not both"},
		{"the key itself as env name", hook(`url: "https://h/x", secret_env: "` + hookKey + `"`), "notifications[0].secret_env: is a signing key itself"},
		{"not an env name", hook(`url: "https://h/x", secret_env: "MY-KEY"`), "notifications[0].secret_env: is not an environment variable name"},
		{"unknown event", hook(`url: "https://h/x", secret_env: H, events: [rotation.done]`), `notifications[0].events[0]: "rotation.done" is not an event`},
		{"event twice", hook(`url: "https://h/x", secret_env: H, events: [operator.action, operator.action]`), `notifications[0].events[1]: "operator.action" is given twice`},
		{"no events", hook(`url: "https://h/x", secret_env: H, events: []`), "notifications[0].events: empty"},
		{"zero timeout", hook(`url: "https://h/x", secret_env: H, timeout: 0`), "notifications[0].timeout: must be positive, got 0"},
		{"negative max_elapsed", hook(`url: "https://h/x", secret_env: H, max_elapsed: -1m`), "notifications[0].max_elapsed: must not be negative, got -1m"},
		{"zero queue", hook(`url: "https://h/x", secret_env: H, queue_size: 0`), "notifications[0].queue_size: must be 1 to 100000, got 0"},
		{"bad duration", hook(`url: "https://h/x", secret_env: H, timeout: 1d`), "notifications[0].timeout: \"1d\" is not a duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "t.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q", err, tc.want)
			}
			if strings.Contains(err.Error(), strings.TrimPrefix(hookKey, "whsec_")) {
				t.Fatalf("the message quotes a key: %v", err)
			}
		})
	}
}

// TestWebhookKeys: the key is read from the environment or a file (one
// trailing newline allowed), parsed, and every problem names the key
// without quoting the value.
func TestWebhookKeys(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	_ = os.WriteFile(good, []byte(hookKey+"\n"), 0o600)
	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte("whsec_c2hvcnQ=\n"), 0o600)
	y := minimal + `notifications:
  - {url: "https://h/a", secret_env: HOOK_A}
  - {url: "https://h/b", secret_file: ` + good + `}
  - {url: "https://h/c", secret_file: ` + bad + `}
  - {url: "https://h/d", secret_env: HOOK_D}
  - {url: "https://h/e", secret_env: HOOK_E}
`
	f, err := ParseFile([]byte(y), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOOK_A": hookKey + " " + hookKey, "HOOK_D": "not-a-key-but-secret-looking"}
	getenv := func(k string) string { return env[k] }
	if k, err := f.WebhookKeys(0, getenv); err != nil || len(k) != 2 {
		t.Fatalf("env: %d keys, %v", len(k), err)
	}
	if k, err := f.WebhookKeys(1, getenv); err != nil || len(k) != 1 {
		t.Fatalf("file: %d keys, %v", len(k), err)
	}
	for i, want := range map[int]string{
		2: "notifications[2].secret_file: the signing key: the key is 5 bytes",
		3: "notifications[3].secret_env: the signing key: not a Standard Webhooks key",
		4: "notifications[4].secret_env: environment variable HOOK_E is empty",
	} {
		_, err := f.WebhookKeys(i, getenv)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret-looking") {
			t.Errorf("%d: %v, want %q", i, err, want)
		}
	}
	// -validate reports the same, as the environment's fault.
	errs := f.Environment(getenv)
	var got []string
	for _, e := range errs {
		if strings.HasPrefix(e.Key, "notifications") {
			got = append(got, e.Error())
		}
	}
	if len(got) != 3 || !strings.Contains(strings.Join(got, "\n"), "HOOK_E (the webhook signing key) is unset or empty") {
		t.Fatalf("environment: %v", got)
	}
	if _, err := notify.ParseKeys(env["HOOK_A"]); err != nil {
		t.Fatal(err)
	}
}

// TestLintWarnsOfCleartextWebhooks: http:// to another machine is a
// warning; to this one it is not.
func TestLintWarnsOfCleartextWebhooks(t *testing.T) {
	y := minimal + "vault: {address: \"https://vault:8200\"}\nnotifications:\n  - {url: \"http://hooks.example.com/x\", secret_env: H}\n  - {url: \"http://127.0.0.1:9000/x\", secret_env: H}\n"
	f, err := ParseFile([]byte(y), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	errs, warns := f.Lint(func(string) string { return "" })
	if len(errs) != 0 || len(warns) != 1 || !strings.Contains(warns[0].Error(), "notifications[0].url: http:// to hooks.example.com") {
		t.Fatalf("errors %v, warnings %v", errs, warns)
	}
}

// TestAdvWebhookURLTokenPathQuoted: docs/notifications.md (metrics) and
// notify.Endpoint say a webhook URL's path may hold a token (Slack, Teams,
// Discord and most chat webhooks: https://hooks.slack.com/services/T…/B…/
// <token>), which is why the daemon logs scheme and host only, and why a
// query is refused "not quoted: a query may carry a token". Yet a URL
// refused for its scheme or a missing host is quoted whole in the exit-2
// message, path and token included, e.g. when the scheme was left out
// (hooks.slack.com/services/…), or mistyped. The message goes to stderr,
// CI logs and `-validate` output: I5 / "bad input must exit 2 naming the
// key and never print a secret".
func TestAdvWebhookURLTokenPathQuoted(t *testing.T) {
	const token = "xq7Lr2PZkV9mW4cT8nB3jH6d"
	for _, tc := range []struct{ name, url string }{
		{"scheme left out", "hooks.slack.com/services/T0AAA/B0BBB/" + token},
		{"scheme mistyped", "htps://hooks.slack.com/services/T0AAA/B0BBB/" + token},
		{"host left out", "https:///services/T0AAA/B0BBB/" + token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := minimal + "notifications:\n  - {url: \"" + tc.url + "\", secret_env: HOOK}\n"
			_, err := Parse([]byte(y), "t.yaml")
			if err == nil {
				t.Fatalf("setup: %q accepted", tc.url)
			}
			if !strings.Contains(err.Error(), "notifications[0].url") {
				t.Errorf("the message does not name notifications[0].url: %v", err)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("the exit-2 message quotes the webhook URL's path, which holds its token: %v", err)
			}
		})
	}
}

// TestAdvPrefixlessKeyAsEnvNameQuoted: notify.ParseKey accepts a signing
// key without its "whsec_" prefix, so an operator's key may well be bare
// base64. Pasted as secret_env, a bare key of 24 bytes is 32 base64
// characters, a valid environment variable name about a third of the time
// (no '+' or '/'); validation only recognises the "whsec_" form. The
// daemon then exits 2 with "environment variable <the key> is empty", and
// `-validate` prints it as well: the signing key in stderr, against
// "a signing key pasted as secret_env refused without quoting it" (the
// commit that added the check) and I5.
func TestAdvPrefixlessKeyAsEnvNameQuoted(t *testing.T) {
	bare := strings.TrimPrefix(hookKey, "whsec_") // 24 bytes, a valid key for notify.ParseKey
	if !envRE.MatchString(bare) {
		t.Fatal("setup: the bare key is not an env name")
	}
	y := minimal + "notifications:\n  - {url: \"https://h.example/x\", secret_env: " + bare + "}\n"
	getenv := func(string) string { return "" }
	f, err := ParseFile([]byte(y), "t.yaml")
	if err != nil {
		if strings.Contains(err.Error(), bare) {
			t.Fatalf("Parse quotes the key: %v", err)
		}
		return // refused without quoting it: fine
	}
	if _, err := f.Config.WebhookKeys(0, getenv); err != nil && strings.Contains(err.Error(), bare) {
		t.Errorf("the daemon's start-up error quotes the signing key pasted as secret_env: %v", err)
	}
	for _, e := range f.Environment(getenv) {
		if strings.Contains(e.Error(), bare) {
			t.Errorf("-validate quotes the signing key pasted as secret_env: %v", e)
		}
	}
}
