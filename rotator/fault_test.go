package rotator_test

import (
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// TestVaultSealedDuringGrace: Vault sealed when the grace ends; the step is
// retried, nothing is dropped while the record cannot be read or written,
// and the rotation completes once Vault is unsealed.
func TestVaultSealedDuringGrace(t *testing.T) {
	srv, err := vaulttest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	h := newHarnessOn(t, srv)
	ctx := ctxT(t)
	p := h.process("d1", nil)
	done := h.start(ctx, p.rotator(nil), p, h.once())
	h.asleep(ctx) // grace
	if err := srv.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(h.grace)
	for i := 0; i < 5; i++ { // five failed attempts while sealed
		h.asleep(ctx)
		h.clock.Advance(10 * time.Second)
	}
	h.asleep(ctx)
	eq(t, "requests while sealed", h.requests(), []string{"200[N1,S0]"})
	if err := srv.Unseal(ctx); err != nil {
		t.Fatal(err)
	}
	h.drive(ctx, time.Second)
	if res := h.wait(ctx, done); res.err != nil || res.out.Result != rotator.ResultSuccess {
		t.Fatalf("%+v", res)
	}
	eq(t, "requests", h.requests(), []string{"200[N1,S0]", "200[N1]"})
}

// TestGiveUpAfter: a one-shot run gives up after -retry-timeout and leaves
// the rotation resumable; the record is untouched by giving up.
func TestGiveUpAfter(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	for i := 0; i < 50; i++ {
		h.fake.Inject(affixtest.Fault{Status: 500})
	}
	p := h.process("host/once-1", nil)
	out, err := h.rotate(ctx, p, p.rotator(func(o *rotator.Options) { o.GiveUpAfter = 30 * time.Second }), h.once())
	if err == nil || out.Result != rotator.ResultFailed {
		t.Fatalf("%+v %v", out, err)
	}
	if str(h.rawRecord(), "phase") != "staged" {
		t.Fatal("giving up changed the record")
	}
}
