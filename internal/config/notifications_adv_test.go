package config

// Adversarial tests of the notifications block's validation (adversary2).
// Each fails on the code as it stands.

import (
	"strings"
	"testing"
)

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
