package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProxyFor: which proxy each client uses, by environment.
func TestProxyFor(t *testing.T) {
	for _, tc := range []struct {
		name, target string
		vault        bool
		env          map[string]string
		proxy, from  string
	}{
		{"none", "https://api.affixapi.com", false, nil, "", ""},
		{"HTTPS_PROXY, credentials dropped", "https://api.affixapi.com", false, map[string]string{"HTTPS_PROXY": "http://u:pw@proxy.corp:3128"}, "http://proxy.corp:3128", "HTTPS_PROXY"},
		{"lower case", "https://api.affixapi.com", false, map[string]string{"https_proxy": "proxy.corp:3128"}, "http://proxy.corp:3128", "https_proxy"},
		{"HTTP_PROXY for http", "http://affix.internal", false, map[string]string{"HTTP_PROXY": "http://p:8080", "HTTPS_PROXY": "http://q:8080"}, "http://p:8080", "HTTP_PROXY"},
		{"NO_PROXY", "https://vault.corp:8200", true, map[string]string{"HTTPS_PROXY": "http://p:8080", "NO_PROXY": ".corp"}, "", ""},
		{"localhost never", "http://127.0.0.1:8200", true, map[string]string{"HTTP_PROXY": "http://p:8080"}, "", ""},
		{"VAULT_HTTP_PROXY over NO_PROXY", "https://vault.corp:8200", true, map[string]string{"VAULT_HTTP_PROXY": "http://vp:3128", "NO_PROXY": ".corp"}, "http://vp:3128", "VAULT_HTTP_PROXY"},
		{"VAULT_PROXY_ADDR first", "https://vault.corp:8200", true, map[string]string{"VAULT_HTTP_PROXY": "http://vp:3128", "VAULT_PROXY_ADDR": "https://pa:8100"}, "https://pa:8100", "VAULT_PROXY_ADDR"},
		{"VAULT_HTTP_PROXY not for affix", "https://api.affixapi.com", false, map[string]string{"VAULT_HTTP_PROXY": "http://vp:3128"}, "", ""},
		{"unix socket", "unix:///run/agent.sock", true, map[string]string{"VAULT_HTTP_PROXY": "http://vp:3128"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, from := proxyFor(tc.target, tc.vault, func(k string) string { return tc.env[k] })
			if p != tc.proxy || from != tc.from {
				t.Fatalf("got %q from %q, want %q from %q", p, from, tc.proxy, tc.from)
			}
		})
	}
}

// TestStartLogsProxies: the start log says which proxy each outbound
// client uses, scheme and host only (never the proxy's credentials).
func TestStartLogsProxies(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	y := "vault: {address: \"https://vault.corp:8200\"}\n" + notifyBase + "notifications:\n  - {url: \"https://hooks.example/T0KEN/x\", secret_env: HOOK}\n"
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VAULT_TOKEN": "hvs.x", "AFFIX_API_KEY": "k", "HOOK": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"HTTPS_PROXY": "http://user:pr0xypass@proxy.corp:3128", "NO_PROXY": "hooks.example", "VAULT_HTTP_PROXY": "http://vp.corp:3128"}
	var out, errOut bytes.Buffer
	Main(context.Background(), []string{"-config", cfg, "-once", "-retry-timeout", "1ms"}, Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
	log := errOut.String()
	for _, want := range []string{
		`"msg":"outbound connection through a proxy","instance_id":`,
		`"client":"vault","host":"https://vault.corp:8200","proxy":"http://vp.corp:3128","proxy_from":"VAULT_HTTP_PROXY"`,
		`"client":"affix","host":"https://api.affixapi.com","proxy":"http://proxy.corp:3128","proxy_from":"HTTPS_PROXY"`,
		`"msg":"outbound connection: direct, no proxy","instance_id":`,
		`"client":"webhook notifications[0]","host":"https://hooks.example"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(log, "pr0xypass") || strings.Contains(log, "T0KEN") {
		t.Errorf("the log holds a credential")
	}
	if t.Failed() {
		t.Log(log)
	}
}
