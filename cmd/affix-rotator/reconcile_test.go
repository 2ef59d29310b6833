package main_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/cli"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestStableReconcileKeepsTheHistory: the real binary and a real Vault. A
// daemon reconciling a stable client every 300ms sends Affix [S0] each time
// and writes no KV version: the claim that fences each request is in the
// record's custom metadata. (Before the claim, each reconcile wrote two
// versions, and Vault's max_versions cut the history -reaccept-previous
// reads within hours.)
func TestStableReconcileKeepsTheHistory(t *testing.T) {
	s := newStack(t)
	_, before, err := s.recordAndVersion()
	if err != nil {
		t.Fatal(err)
	}
	rot := "  lease_duration: 30s\n  retry_initial: 200ms\n  retry_max: 1s\n  reconcile_interval: 300ms\n  clock_skew_margin: 500ms\n"
	cfg := s.sigstopConfig("d.yaml", "pod-a", s.listen, s.fake.URL, 5*time.Second, rot, "    schedule: \"@every 720h\"\n    grace_period: 1h\n")
	p := s.start("run", "--config", cfg)
	deadline := time.Now().Add(60 * time.Second)
	for len(s.fake.Requests()) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 5 reconciles in 60s: %v; output:\n%s", s.requests(), p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, r := range s.requests() {
		if r != "200[S0]" {
			t.Fatalf("a reconcile of a stable record sent %s, want [S0] only: %v", r, s.requests())
		}
	}
	_, after, err := s.recordAndVersion()
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("%d reconciles wrote %d KV versions, want 0; output:\n%s", len(s.fake.Requests()), after-before, p.out.String())
	}
	md, err := s.vault.Client().KVv2("secret").GetMetadata(context.Background(), s.path)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := md.CustomMetadata[vault.ClaimKey("pod-a")].(string); !strings.HasPrefix(c, "pod-a/") {
		t.Errorf("custom metadata %v, want the daemon's reconcile claim under %s", md.CustomMetadata, vault.ClaimKey("pod-a"))
	}
	if strings.Contains(p.out.String(), "refused the reconcile claim") {
		t.Errorf("the claim was refused with a root token:\n%s", p.out.String())
	}
	st := s.start("status", "--config", cfg, "-o", "json")
	if code := st.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("status: exit %d:\n%s", code, st.out.String())
	}
	var rep cli.StatusReport
	if err := json.Unmarshal([]byte(st.out.String()), &rep); err != nil || len(rep.Clients) != 1 {
		t.Fatalf("status: %v\n%s", err, st.out.String())
	}
	if c := rep.Clients[0]; !strings.HasPrefix(c.ReconcileClaimOwner, "pod-a/") || c.ReconcileClaimUntil == nil {
		t.Errorf("status shows reconcile claim %q until %v, want the daemon's", c.ReconcileClaimOwner, c.ReconcileClaimUntil)
	}
}
