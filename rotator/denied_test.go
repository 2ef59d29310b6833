package rotator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// deniedStore is a store on the harness's Vault whose token has only the
// default policy: every request on a record is denied (403).
func (h *harness) deniedStore(ctx context.Context) *vault.Store {
	h.t.Helper()
	tok, err := h.vault.Client().Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"default"}, NoParent: true, TTL: "1h"})
	if err != nil {
		h.t.Fatal(err)
	}
	st, err := vault.New(ctx, vault.Config{Address: h.vault.Addr, KVMount: "secret", Timeout: 10 * time.Second, Auth: vault.TokenAuth(secret.New(tok.Auth.ClientToken))})
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// TestDeniedFailsAtOnceWithFailOnDenied: -once does not retry a 403 for
// 15 minutes: it fails at once, saying what to check.
func TestDeniedFailsAtOnceWithFailOnDenied(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	p := h.process("once", nil)
	r := rotator.New(rotator.Options{InstanceID: "once", Store: h.deniedStore(ctx), Clock: h.clock, GiveUpAfter: 15 * time.Minute, FailOnDenied: true})
	done := make(chan error, 1)
	var out rotator.Outcome
	go func() {
		var err error
		out, err = r.Rotate(ctx, p.client(), h.once())
		done <- err
	}()
	select {
	case err := <-done:
		if out.Result != rotator.ResultFailed || err == nil {
			t.Fatalf("%+v %v", out, err)
		}
		for _, want := range []string{"permission denied", "secret/data/" + h.path, "token"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error lacks %q: %v", want, err)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a denied -once did not end at once (it waits on the clock)")
	}
	if n := len(h.fake.Requests()); n != 0 {
		t.Fatalf("%d requests to Affix", n)
	}
}

// TestDeniedDaemonRetriesNotReady: the daemon keeps retrying a 403 (a
// policy can be fixed) but reports it: Denied() is set until a read
// succeeds, and /status says why the state is unknown.
func TestDeniedDaemonRetriesNotReady(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	p := h.process("d1", nil)
	r := rotator.New(rotator.Options{InstanceID: "d1", Store: h.deniedStore(ctx), Clock: h.clock})
	if r.Denied() != nil {
		t.Fatal("denied before any request")
	}
	ran := make(chan struct{})
	go func() { r.Run(ctx, []*rotator.Client{p.client()}); close(ran) }()
	h.asleep(ctx)
	if err := r.Denied(); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("Denied() = %v", err)
	}
	st := r.Status()
	if len(st) != 1 || st[0].State != rotator.StateUnknown || !strings.Contains(st[0].StateReason, "permission denied") {
		t.Fatalf("status %+v", st)
	}
	cancel()
	<-ran
}
