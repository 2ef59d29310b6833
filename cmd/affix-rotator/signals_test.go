package main_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/affix-rotator/affix-rotator/internal/metrictest"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// statusDoc is /status as a client reads it.
type statusDoc struct {
	Version    string `json:"version"`
	InstanceID string `json:"instance_id"`
	Vault      struct {
		Address    string `json:"address"`
		AuthMethod string `json:"auth_method"`
		Connected  bool   `json:"connected"`
		Reachable  bool   `json:"reachable"`
		LastError  string `json:"last_error"`
	} `json:"vault"`
	Clients []struct {
		Client      string `json:"client"`
		State       string `json:"state"`
		StateReason string `json:"state_reason"`
		Phase       string `json:"phase"`
	} `json:"clients"`
}

func readStatus(t *testing.T, base string) statusDoc {
	t.Helper()
	var d statusDoc
	body := get(t, base+"/status")
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	return d
}

// waitHTTP waits until the daemon's listener answers.
func waitHTTP(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("listener never answered")
}

// eventually polls cond until it holds.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestVaultUnreachableStatusAndSIGTERM: while Vault does not answer, /status
// lists the configured client (state unknown, and why), the Vault it waits
// for, the instance id and the version; the per-client series exist; the
// start-up line says what the process runs with; SIGTERM exits 0.
func TestVaultUnreachableStatusAndSIGTERM(t *testing.T) {
	s := newStack(t)
	dead, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.daemonConfig("d.yaml", "pod-a", "1s")
	b, _ := os.ReadFile(cfg)
	deadURL := "http://" + dead
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), s.vault.Addr, deadURL, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := s.start("-config", cfg)
	base := "http://" + s.listen
	waitHTTP(t, base)
	eventually(t, "a failed connection", 20*time.Second, func() bool { return strings.Contains(p.out.String(), "cannot connect to vault") })
	d := readStatus(t, base)
	if len(d.Clients) != 1 || d.Clients[0].Client != "prod" || d.Clients[0].State != "unknown" || !strings.Contains(d.Clients[0].StateReason, "waiting for vault") {
		t.Fatalf("/status clients while vault is down: %+v", d.Clients)
	}
	if d.Vault.Address != deadURL || d.Vault.AuthMethod != "token" || d.Vault.Connected || d.Vault.LastError == "" || d.InstanceID != "pod-a" || d.Version == "" {
		t.Fatalf("/status while vault is down: %+v", d)
	}
	metrics := get(t, base+"/metrics")
	for _, re := range []string{`affix_rotator_phase\{client="prod",phase="stable"\} 0`, `affix_rotator_rotations_total\{client="prod",result="success"\} 0`} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Fatalf("/metrics lacks %s while vault is down", re)
		}
	}
	out := p.out.String()
	for _, want := range []string{`"msg":"affix-rotator starting"`, `"version":"`, `"vault_address":"` + deadURL + `"`, `"vault_auth_method":"token"`, `"instance_id":"pod-a"`, `"msg":"client configured"`, `"schedule":"@every 1h"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("start-up log lacks %s:\n%s", want, out)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM while waiting for vault: exit %d, want 0", code)
	}
}

// limitedToken returns a token with only the default policy: Vault denies
// every request on a record (403).
func (s *stack) limitedToken() string {
	s.t.Helper()
	tok, err := s.vault.Client().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"default"}, NoParent: true, TTL: "1h"})
	if err != nil {
		s.t.Fatal(err)
	}
	return tok.Auth.ClientToken
}

// TestVaultDenied: a 403 is not an outage. -once exits 1 at once and says
// so on stdout (a token without the policy, and a revoked token); the
// daemon logs an ERROR saying what to check, keeps retrying, fails /readyz
// and counts result="denied".
func TestVaultDenied(t *testing.T) {
	s := newStack(t)
	cfg := s.daemonConfig("d.yaml", "pod-a", "1s")
	tok := s.limitedToken()
	s.env = []string{"VAULT_TOKEN=" + tok}
	start := time.Now()
	once := s.start("-config", cfg, "-once")
	if code := once.wait(t, 60*time.Second); code != 1 {
		t.Fatalf("-once with a token lacking the policy: exit %d, want 1", code)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("-once took %s to give up on a denied token", d)
	}
	for _, want := range []string{"prod: FAILED", "permission denied", "secret/data/" + s.path} {
		if !strings.Contains(once.out.String(), want) {
			t.Fatalf("-once output lacks %q:\n%s", want, once.out.String())
		}
	}

	revoked := s.limitedToken()
	if err := s.vault.Client().Auth().Token().RevokeOrphan(revoked); err != nil {
		t.Fatal(err)
	}
	s.env = []string{"VAULT_TOKEN=" + revoked}
	once = s.start("-config", cfg, "-once")
	if code := once.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("-once with a revoked token: exit %d, want 1", code)
	}
	if !strings.Contains(once.out.String(), "FAILED: vault denied the credentials") {
		t.Fatalf("-once with a revoked token says:\n%s", once.out.String())
	}

	s.env = []string{"VAULT_TOKEN=" + tok}
	d := s.start("-config", cfg)
	base := "http://" + s.listen
	waitHTTP(t, base)
	eventually(t, "an ERROR about the denied read", 30*time.Second, func() bool {
		return regexp.MustCompile(`"level":"error"[^\n]*vault denied the request on secret/` + regexp.QuoteMeta(s.path)).MatchString(d.out.String())
	})
	if strings.Contains(d.out.String(), `"level":"warn","ts":"`) && regexp.MustCompile(`"level":"warn"[^\n]*permission denied`).MatchString(d.out.String()) {
		t.Fatalf("a denied request is logged at WARN:\n%s", d.out.String())
	}
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d while vault denies the reads", resp.StatusCode)
	}
	if m := get(t, base+"/metrics"); !regexp.MustCompile(`affix_rotator_vault_requests_total\{op="read",result="denied"\} [1-9]`).MatchString(m) {
		t.Fatalf("/metrics lacks vault_requests_total{op=read,result=denied}")
	}
	// vault_up shows the denial (AffixRotatorVaultNotReady fires on it),
	// also after the /readyz check's lookup-self, which Vault answers.
	if m := get(t, base+"/metrics"); !regexp.MustCompile(`(?m)^affix_rotator_vault_up 0$`).MatchString(m) {
		t.Fatalf("vault_up is not 0 while Vault denies the reads:\n%s", m)
	}
	// The hint is the README's least privilege: no "create" for a seeded
	// record.
	if out := d.out.String() + once.out.String(); strings.Contains(out, "read, create") || !strings.Contains(d.out.String(), "its policy grants read and update on secret/data/"+s.path) {
		t.Fatalf("the denial hint is not read and update:\n%s", d.out.String())
	}
	st := readStatus(t, base)
	if len(st.Clients) != 1 || st.Clients[0].State != "unknown" || !strings.Contains(st.Clients[0].StateReason, "permission denied") {
		t.Fatalf("/status %+v", st.Clients)
	}
	if n := len(s.fake.Requests()); n != 0 {
		t.Fatalf("%d requests to Affix", n)
	}
}

// TestSIGHUPReload: SIGHUP applies a new config without a restart: a client
// added starts, a client changed restarts with its new schedule, a client
// removed stops; a config that fails validation, lacks an API key in the
// environment, or changes a setting that needs a restart is refused (ERROR,
// config_last_reload_successful 0) and the old one keeps running.
func TestSIGHUPReload(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	key2 := "affix-key-" + randHex()
	s2, _ := secret.Generate()
	s.fake.AddClient(key2, "cid-second", s2.Reveal())
	path2 := s.path + "-second"
	if _, err := s.vault.Client().KVv2("secret").Put(ctx, path2, map[string]any{"client_secret": s2.Reveal()}); err != nil {
		t.Fatal(err)
	}
	s.env = []string{"AFFIX_API_KEY_2=" + key2}
	prod := "    schedule: \"@every 1h\"\n    grace_period: 1s\n    max_age: 2h\n"
	second := "  - name: second\n    vault_path: " + path2 + "\n    schedule: \"@every 1h\"\n    grace_period: 1s\n    max_age: 2h\n    affix: {api_key_env: AFFIX_API_KEY_2}\n"
	cfg := s.config("d.yaml", "pod-a", prod)
	d := s.start("-config", cfg)
	base := "http://" + s.listen
	s.waitFor("the start-up rotation", 30*time.Second, func(r map[string]any) bool { return str(r, "rotated_at") != "" })
	eventually(t, "the client's schedule and next run logged", 10*time.Second, func() bool {
		return regexp.MustCompile(`"msg":"client scheduled",[^\n]*"client":"prod","schedule":"@every 1h"[^\n]*"next_run":"20`).MatchString(d.out.String())
	})
	hup := func() {
		t.Helper()
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	reloaded := func() float64 {
		v, ok := metrictest.Lookup(t, metrictest.Parse(t, get(t, base+"/metrics")), "affix_rotator_config_last_reload_successful")
		if !ok {
			t.Fatal("no affix_rotator_config_last_reload_successful")
		}
		return v
	}
	if reloaded() != 1 {
		t.Fatal("config_last_reload_successful is not 1 at start")
	}
	count := func(what string) int { return strings.Count(d.out.String(), what) }

	// Added.
	s.config("d.yaml", "pod-a", prod+second)
	hup()
	eventually(t, "the added client rotated", 30*time.Second, func() bool {
		kv, err := s.vault.Client().KVv2("secret").Get(ctx, path2)
		return err == nil && str(kv.Data, "rotated_at") != ""
	})
	if st := readStatus(t, base); len(st.Clients) != 2 {
		t.Fatalf("/status after adding: %+v", st.Clients)
	}
	if strings.Contains(d.out.String(), `"msg":"client changed in the config`) {
		t.Fatal("an unchanged client was restarted")
	}

	// Refused: invalid, a missing API key, a restart-only setting.
	for i, bad := range []struct{ name, yaml, want string }{
		{"invalid", "clients: [\n", "invalid config"},
		{"missing env", strings.Replace(prod+second, "AFFIX_API_KEY_2", "AFFIX_API_KEY_MISSING", 1), "AFFIX_API_KEY_MISSING"},
	} {
		if bad.name == "invalid" {
			if err := os.WriteFile(cfg, []byte(bad.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
		} else {
			s.config("d.yaml", "pod-a", bad.yaml)
		}
		hup()
		eventually(t, bad.name+" refused", 10*time.Second, func() bool { return count(`"msg":"config reload refused`) == i+1 })
		if reloaded() != 0 {
			t.Fatalf("%s: config_last_reload_successful not 0", bad.name)
		}
		if !strings.Contains(d.out.String(), bad.want) {
			t.Fatalf("%s: the refusal does not say %q", bad.name, bad.want)
		}
	}
	other, _ := vaulttest.FreeAddr()
	s.configListen("d.yaml", "pod-a", other, prod+second)
	hup()
	eventually(t, "a listen change refused", 10*time.Second, func() bool { return count(`"msg":"config reload refused`) == 3 })
	if !regexp.MustCompile(`"level":"error"[^\n]*config reload refused[^\n]*listen [^\n]*need a restart`).MatchString(d.out.String()) {
		t.Fatalf("the listen refusal is not an ERROR saying a restart is needed:\n%s", d.out.String())
	}
	if st := readStatus(t, base); len(st.Clients) != 2 {
		t.Fatalf("/status after refusals: %+v", st.Clients)
	}

	// Removed and changed: second goes, prod rotates every 2s.
	before := checkHistoryCount(s)
	s.config("d.yaml", "pod-a", "    schedule: \"@every 2s\"\n    grace_period: 1s\n    max_age: 2h\n")
	hup()
	eventually(t, "the reload applied", 10*time.Second, func() bool { return count(`"msg":"config reloaded"`) == 2 })
	if reloaded() != 1 {
		t.Fatal("config_last_reload_successful not 1 after a good reload")
	}
	st := readStatus(t, base)
	if len(st.Clients) != 1 || st.Clients[0].Client != "prod" {
		t.Fatalf("/status after removing: %+v", st.Clients)
	}
	if m := get(t, base+"/metrics"); strings.Contains(m, `client="second"`) {
		t.Fatal("series of the removed client remain")
	}
	eventually(t, "prod rotating on its new schedule", 30*time.Second, func() bool { return checkHistoryCount(s) >= before+2 })
	if code := func() int { _ = d.cmd.Process.Signal(syscall.SIGTERM); return d.wait(t, 20*time.Second) }(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
