package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/agenttest"
	"github.com/affix-rotator/affix-rotator/internal/consumer"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/notify"
)

// The consumer tests' settings: Vault Agent re-reads the record every
// second; the consumer authenticates every 50 ms; the daemon rotates on a
// one-second schedule (the daemon accepts it; only -validate refuses
// schedules under a minute, so that tests can run the real scheduler fast).
const (
	agentRender      = time.Second
	consumerInterval = 50 * time.Millisecond
	consumerCID      = "cid-prod"
)

// consumerRun is what one run of the consumer stack measured.
type consumerRun struct {
	rotations int // rotations completed (old secret dropped), from Affix's requests
	stats     consumer.Stats
	fake      affixtest.Auths // the fake's own counts for the client
	pickups   []consumer.Pickup
	// The consumer that refreshes on rotation.overlap instead of polling.
	hook        hookStats
	hookPickups []consumer.Pickup
}

// hookConsumer is a consumer that refreshes when told: a webhook receiver
// that verifies each notification (notify.Verify) and, on
// rotation.overlap, reads the record from Vault with the Vault API and
// authenticates with the client_secret it read, once.
type hookConsumer struct {
	kv       *api.KVv2
	path     string
	tokenURL string
	mu       sync.Mutex
	seen     map[string]time.Time // fingerprint -> when first read
	st       hookStats
}

type hookStats struct {
	Overlaps, Unverified, Accepted, Refused, Errors int
}

func (h *hookConsumer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err := notify.Verify(hookKey, r.Header, body, time.Now(), 0); err != nil {
		h.mu.Lock()
		h.st.Unverified++
		h.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &ev)
	w.WriteHeader(http.StatusNoContent)
	if ev.Type == notify.EventRotationOverlap {
		go h.refresh()
	}
}

func (h *hookConsumer) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sec, err := h.kv.Get(ctx, h.path)
	now := time.Now()
	h.mu.Lock()
	h.st.Overlaps++
	h.mu.Unlock()
	var cur string
	if err == nil {
		cur, _ = sec.Data["client_secret"].(string)
	}
	if cur == "" {
		h.count(0)
		return
	}
	h.mu.Lock()
	if fp := affixtest.Fingerprint(cur); h.seen[fp].IsZero() {
		h.seen[fp] = now
	}
	h.mu.Unlock()
	resp, err := http.PostForm(h.tokenURL, url.Values{"grant_type": {"client_credentials"}, "client_id": {consumerCID}, "client_secret": {cur}})
	if err != nil {
		h.count(0)
		return
	}
	resp.Body.Close()
	h.count(resp.StatusCode)
}

func (h *hookConsumer) count(status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch status {
	case http.StatusOK:
		h.st.Accepted++
	case http.StatusUnauthorized:
		h.st.Refused++
	default:
		h.st.Errors++
	}
}

func (h *hookConsumer) pickups(rs []consumer.Rotation) (hookStats, []consumer.Pickup) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]consumer.Pickup, 0, len(rs))
	for _, r := range rs {
		p := consumer.Pickup{Rotation: r}
		if t, ok := h.seen[r.Fingerprint]; ok {
			p.Seen, p.Late = true, t.Sub(r.CurrentAt)
		}
		out = append(out, p)
	}
	return h.st, out
}

// runConsumerStack starts a fresh Vault dev server, the Affix fake, a real
// `vault agent` with the example of docs/examples/vault-agent (AppRole,
// templates rendering client_secret and client_id), a consumer that
// authenticates every 50 ms with what the files hold, and the daemon
// (the real binary) rotating "@every 1s" with clientExtra's grace. It runs
// until done says so (checked every 100 ms) or limit passes, and reports.
func runConsumerStack(t *testing.T, clientExtra string, limit time.Duration, done func(rotations int, st consumer.Stats) bool) consumerRun {
	t.Helper()
	ctx := context.Background()
	srv, err := vaulttest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	s := &stack{t: t, vault: srv, key: "affix-key-" + randHex(), path: agenttest.RecordPath, dir: t.TempDir()}
	s.fake = affixtest.NewServer()
	t.Cleanup(s.fake.Close)
	s0, _ := secret.Generate()
	s.s0 = s0.Reveal()
	s.fake.AddClient(s.key, consumerCID, s.s0)
	kv := srv.Client().KVv2(agenttest.KVMount)
	if _, err := kv.Put(ctx, s.path, map[string]any{"client_secret": s.s0, "client_id": consumerCID}); err != nil {
		t.Fatal(err)
	}
	if err := consumer.KeepVersions(ctx, kv, s.path, 1000); err != nil {
		t.Fatal(err)
	}
	if s.listen, err = vaulttest.FreeAddr(); err != nil {
		t.Fatal(err)
	}

	agent, err := agenttest.Start(ctx, agenttest.Options{Vault: srv, Dir: filepath.Join(s.dir, "agent"), RenderInterval: agentRender})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agent.Stop()
		if t.Failed() {
			t.Logf("vault agent output:\n%s", agent.Output())
		}
	})
	c := consumer.New(consumer.Config{SecretFile: agent.SecretFile, ClientIDFile: agent.ClientIDFile, TokenURL: s.fake.URL + affixtest.TokenPath, Interval: consumerInterval})
	cctx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { _ = c.Run(cctx); close(stopped) }()
	t.Cleanup(func() { stop(); <-stopped })
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Accepted == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the consumer never authenticated before rotations: %+v", c.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}

	hook := &hookConsumer{kv: kv, path: s.path, tokenURL: s.fake.URL + affixtest.TokenPath, seen: map[string]time.Time{}}
	hookSrv := httptest.NewServer(hook)
	t.Cleanup(hookSrv.Close)
	s.env = append(s.env, "HOOK_KEY="+hookKey)
	notifications := fmt.Sprintf("notifications:\n  - {url: %q, secret_env: HOOK_KEY, events: [rotation.overlap]}\n", hookSrv.URL)
	cfg := s.config("c.yaml", "pod-a", "    schedule: \"@every 1s\"\n"+clientExtra+notifications)
	p := s.start("-config", cfg)
	end := time.Now().Add(limit)
	rotations := 0
	for time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond)
		rotations = checkHistory(t, s)
		if done(rotations, c.Stats()) {
			break
		}
		select {
		case <-p.done:
			t.Fatalf("the daemon exited:\n%s", p.out.String())
		default:
		}
	}
	// Let the consumer pick up a secret made current just now, then stop.
	time.Sleep(agentRender + 500*time.Millisecond)
	stop()
	<-stopped
	p.kill9(t)
	run := consumerRun{rotations: checkHistory(t, s), stats: c.Stats(), fake: s.fake.Authentications(consumerCID)}
	history, err := consumer.History(ctx, kv, s.path)
	if err != nil {
		t.Fatal(err)
	}
	if len(history) > run.rotations {
		history = history[:run.rotations] // the completed rotations; one may have been in flight at the stop
	}
	run.pickups = c.Pickups(history)
	run.hook, run.hookPickups = hook.pickups(history)
	return run
}

// lateness returns the median and the max of the pickups seen, and how
// many were not seen.
func lateness(ps []consumer.Pickup) (median, maxLate time.Duration, unseen int) {
	var ls []time.Duration
	for _, p := range ps {
		if !p.Seen {
			unseen++
			continue
		}
		ls = append(ls, p.Late)
	}
	if len(ls) == 0 {
		return 0, 0, unseen
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
	return ls[len(ls)/2], ls[len(ls)-1], unseen
}

// TestConsumerVaultAgentZeroDowntime: with a grace (5s) longer than Vault
// Agent's render interval (1s) plus a margin, a consumer that
// authenticates every 50 ms with what the agent renders is never refused
// across at least 20 rotations by the real daemon. The config states
// consumers.max_refresh: 2s, which the daemon accepts with that grace.
// Beside it, a consumer that refreshes on the daemon's signed
// rotation.overlap notification instead of polling (it reads Vault with
// the Vault API) holds every new secret within a second.
// (The margin is wide because CI runs this beside other packages' tests on
// two cores: under a load average of 6, with the race detector, pickups
// 2.2s and 3.2s late were seen with this 1s interval.)
func TestConsumerVaultAgentZeroDowntime(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 20 real rotations with a 5s grace take about 2 minutes")
	}
	const grace, want = 5 * time.Second, 20
	run := runConsumerStack(t, "    grace_period: 5s\n    consumers: {max_refresh: 2s}\n", 6*time.Minute, func(rotations int, _ consumer.Stats) bool {
		return rotations >= want
	})
	med, maxLate, unseen := lateness(run.pickups)
	t.Logf("grace %s, render interval %s: %d rotations, %d authentications: %d accepted, %d refused, %d errors (the fake counted %d accepted, %d refused); new secret picked up %s late (median), %s (max), %d of %d not seen",
		grace, agentRender, run.rotations, run.stats.Attempts, run.stats.Accepted, run.stats.Refused, run.stats.Errors, run.fake.Accepted, run.fake.Refused, med, maxLate, unseen, len(run.pickups))
	if run.rotations < want {
		t.Fatalf("only %d rotations completed, want %d", run.rotations, want)
	}
	if run.stats.Failed() != 0 || run.fake.Refused != 0 {
		t.Fatalf("zero downtime broken: %d refused, %d errors (last: %s); the fake refused %d", run.stats.Refused, run.stats.Errors, run.stats.LastError, run.fake.Refused)
	}
	if run.fake.Accepted < run.stats.Accepted {
		t.Fatalf("the fake counted %d accepted, the consumer %d", run.fake.Accepted, run.stats.Accepted)
	}
	// Every completed rotation's new secret was read, within the grace.
	if len(run.pickups) < want || unseen > 0 {
		t.Fatalf("%d completed rotations in Vault's history, %d new secrets never seen by the consumer", len(run.pickups), unseen)
	}
	if maxLate >= grace {
		t.Fatalf("a new secret was picked up %s after it became current, not within the %s grace", maxLate, grace)
	}
	// The consumer that refreshes on rotation.overlap instead of polling.
	hmed, hmax, hunseen := lateness(run.hookPickups)
	t.Logf("webhook consumer: %d rotation.overlap notifications acted on (%d failed verification); %d authentications: %d accepted, %d refused, %d errors; new secret picked up %s late (median), %s (max), %d of %d not seen",
		run.hook.Overlaps, run.hook.Unverified, run.hook.Accepted+run.hook.Refused+run.hook.Errors, run.hook.Accepted, run.hook.Refused, run.hook.Errors, hmed, hmax, hunseen, len(run.hookPickups))
	if run.hook.Unverified != 0 || run.hook.Refused != 0 || run.hook.Errors != 0 {
		t.Fatalf("webhook consumer: %+v", run.hook)
	}
	if hunseen > 0 || hmax >= time.Second {
		t.Fatalf("webhook consumer: %d of %d new secrets not seen, the latest picked up %s after it became current; want every one within a second", hunseen, len(run.hookPickups), hmax)
	}
}

// TestConsumerVaultAgentShortGraceFails: the same stack with a grace
// (300ms) shorter than the agent's render interval (1s) locks the consumer
// out after rotations, until the agent renders the new secret: the check
// above can fail. And the config that says so (consumers.max_refresh: 1s)
// is refused.
func TestConsumerVaultAgentShortGraceFails(t *testing.T) {
	// The guard first: stating the consumers' refresh refuses this grace.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	y := "vault: {address: \"http://127.0.0.1:1\"}\nclients:\n  - name: prod\n    vault_path: affix/prod\n    schedule: \"@every 1s\"\n    grace_period: 300ms\n    consumers: {max_refresh: 1s}\n"
	if err := os.WriteFile(bad, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-config", bad, "-validate", "-offline").CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), `clients[0].grace_period (client "prod"): 300ms does not exceed consumers.max_refresh (1s)`) {
		t.Fatalf("-validate of a grace under max_refresh: exit %d:\n%s", code, out)
	}

	const grace = 300 * time.Millisecond
	run := runConsumerStack(t, "    grace_period: 300ms\n", 2*time.Minute, func(rotations int, st consumer.Stats) bool {
		return (rotations >= 3 && st.Refused > 0) || rotations >= 15
	})
	med, maxLate, unseen := lateness(run.pickups)
	t.Logf("grace %s, render interval %s: %d rotations, %d authentications: %d accepted, %d refused, %d errors (the fake counted %d accepted, %d refused); new secret picked up %s late (median), %s (max), %d of %d not seen",
		grace, agentRender, run.rotations, run.stats.Attempts, run.stats.Accepted, run.stats.Refused, run.stats.Errors, run.fake.Accepted, run.fake.Refused, med, maxLate, unseen, len(run.pickups))
	if run.rotations < 3 {
		t.Fatalf("only %d rotations completed", run.rotations)
	}
	if run.stats.Refused == 0 || run.fake.Refused == 0 {
		t.Fatalf("a grace shorter than the render interval caused no refusal across %d rotations: the check cannot fail", run.rotations)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
