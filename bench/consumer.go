package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/agenttest"
	"github.com/affix-rotator/affix-rotator/internal/consumer"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// consumerInterval is how often the figure's consumer authenticates.
const consumerInterval = 50 * time.Millisecond

// consumerFigure runs what TestConsumerVaultAgentZeroDowntime runs, longer
// if asked: a real Vault Agent with docs/examples/vault-agent (render
// interval render), a consumer authenticating every 50 ms with what it
// renders against the fake's consumer stand-in, and the real daemon
// rotating "@every 1s" with grace, for n rotations. It reports the failed
// authentications per rotation (must be 0) and how late the consumer picked
// each new secret up (from its record version's creation to the
// consumer's first read of it), against the grace.
func (e *env) consumerFigure(ctx context.Context, n int, grace, render time.Duration) error {
	fmt.Printf("\n[consumer] real vault agent (docs/examples/vault-agent, static_secret_render_interval %s) + a consumer authenticating every %s against the fake's stand-in; the real daemon, schedule @every 1s, grace %s; %d rotations\n",
		render, consumerInterval, grace, n)
	dir, err := os.MkdirTemp("", "bench-consumer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := buildBinary(dir)
	if err != nil {
		return err
	}
	k, _ := secret.Generate()
	key, cid := "key-consumer-"+strings.ReplaceAll(k.Reveal(), "-", "")[:16], "cid-bench-consumer"
	s0, err := secret.Generate()
	if err != nil {
		return err
	}
	e.fake.AddClient(key, cid, s0.Reveal())
	kv := e.vault.Client().KVv2(agenttest.KVMount)
	if _, err := kv.Put(ctx, agenttest.RecordPath, map[string]any{"client_secret": s0.Reveal(), "client_id": cid, "phase": "stable"}); err != nil {
		return err
	}
	if err := consumer.KeepVersions(ctx, kv, agenttest.RecordPath, 10*n+100); err != nil {
		return err
	}

	agent, err := agenttest.Start(ctx, agenttest.Options{Vault: e.vault, Dir: filepath.Join(dir, "agent"), RenderInterval: render})
	if err != nil {
		return err
	}
	defer agent.Stop()
	c := consumer.New(consumer.Config{SecretFile: agent.SecretFile, ClientIDFile: agent.ClientIDFile, TokenURL: e.fake.URL + affixtest.TokenPath, Interval: consumerInterval})
	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan struct{})
	go func() { _ = c.Run(cctx); close(consumerDone) }()
	defer func() { stopConsumer(); <-consumerDone }()

	listen, err := vaulttest.FreeAddr()
	if err != nil {
		return err
	}
	cfg := filepath.Join(dir, "consumer.yaml")
	y := fmt.Sprintf(`listen: %q
instance_id: bench-consumer
log: {level: warn, format: json}
vault:
  address: %q
  kv_mount: %s
  auth: {method: token, token_env: VAULT_TOKEN}
affix:
  base_url: %q
  timeout: 5s
rotation: {lease_duration: 30s, retry_initial: 200ms, retry_max: 2s, clock_skew_margin: 500ms}
clients:
  - name: prod
    vault_path: %s
    schedule: "@every 1s"
    grace_period: %s
`, listen, e.vault.Addr, agenttest.KVMount, e.fake.URL, agenttest.RecordPath, grace)
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		return err
	}
	var out vaulttest.SyncBuffer
	d := exec.Command(bin, "run", "--config", cfg)
	d.Env = append(os.Environ(), "VAULT_TOKEN="+e.vault.Token, "AFFIX_API_KEY="+key, "VAULT_ADDR=", "VAULT_NAMESPACE=")
	d.Stdout, d.Stderr = &out, &out
	if err := d.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = d.Wait(); close(exited) }()
	defer func() { _ = d.Process.Kill(); <-exited }()

	drops := func() int { // completed rotations: the old secret dropped
		count := 0
		for _, r := range e.fake.Requests() {
			if r.Header.Get("Authorization") == key && r.Status == http.StatusOK && len(r.ClientSecret) == 1 {
				count++
			}
		}
		return count
	}
	deadline := time.Now().Add(time.Duration(n)*(grace+5*time.Second) + time.Minute)
	t0 := time.Now()
	for drops() < n {
		select {
		case <-exited:
			return fmt.Errorf("the daemon exited: %s", out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d rotations after %s", drops(), n, time.Since(t0).Round(time.Second))
		}
	}
	wall := time.Since(t0)
	time.Sleep(render + 500*time.Millisecond) // the last secret made current reaches the consumer
	stopConsumer()
	<-consumerDone
	_ = d.Process.Kill()
	<-exited
	rotations := drops()

	st := c.Stats()
	history, err := consumer.History(ctx, kv, agenttest.RecordPath)
	if err != nil {
		return err
	}
	if len(history) > rotations {
		history = history[:rotations] // the completed rotations; one may have been in flight at the stop
	}
	var late sample
	unseen := 0
	for _, p := range c.Pickups(history) {
		if !p.Seen {
			unseen++
			continue
		}
		late = append(late, float64(p.Late))
	}
	fakeAuths := e.fake.Authentications(cid)
	fmt.Printf("    rotations completed          %d in %s\n", rotations, wall.Round(time.Second))
	fmt.Printf("    failed authentications       %d of %d (%.2f per rotation; must be 0): %d refused, %d errors; the fake counted %d accepted, %d refused\n",
		st.Failed(), st.Attempts, float64(st.Failed())/float64(max(rotations, 1)), st.Refused, st.Errors, fakeAuths.Accepted, fakeAuths.Refused)
	r := func(v float64) string { return time.Duration(v).Round(time.Millisecond).String() }
	fmt.Printf("    new secret picked up after   median %s, max %s (min %s) of %d new secrets (%d not seen); grace %s: max is %.0f%% of it\n",
		r(late.median()), r(late.max()), r(late.min()), len(late), unseen, grace, 100*late.max()/float64(grace))
	switch {
	case st.Failed() > 0 || fakeAuths.Refused > 0:
		return fmt.Errorf("%d failed authentications (last error: %s)", st.Failed(), st.LastError)
	case len(late) == 0:
		return fmt.Errorf("the consumer saw none of the %d new secrets", len(history))
	case late.max() >= float64(grace):
		return fmt.Errorf("a new secret was picked up %s after it became current, not within the %s grace", r(late.max()), grace)
	}
	return nil
}
