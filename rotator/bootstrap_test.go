package rotator_test

// Bootstrap (posting [new] alone, dropping whatever Affix accepts) is an
// operator's one-shot action on a record that was never written: never on a
// soft-deleted one, never by a daemon. They run on the in-memory harness
// (memHarness, harness_test.go).

import (
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/rotator"
)

// TestFenceBootstrapRefusesSoftDeleted (issue 9, item 4): bootstrap never
// posts [new] alone onto a soft-deleted record.
func TestFenceBootstrapRefusesSoftDeleted(t *testing.T) {
	e := newMemHarness(t)
	e.store.Delete(e.path) // `vault kv delete`: the latest version is soft-deleted
	p := e.proc("host/once-1")
	c := p.client()
	c.Bootstrap = true
	run := e.rotate(p, p.rotator(nil), c, e.once())
	e.drive(time.Second, 10*time.Minute, run.finished)
	if got := e.requests(); len(got) != 0 {
		t.Errorf("bootstrap on a soft-deleted record sent %v to Affix (S0 still accepted: %v): it must refuse and name `vault kv undelete`/`vault kv rollback`",
			got, e.fake.Accepts(e.key, e.s0))
	}
	if !run.finished() {
		t.Fatalf("bootstrap on a soft-deleted record neither finished nor failed after 10m")
	}
	if run.err == nil || !strings.Contains(run.err.Error(), "undelete") || !strings.Contains(run.err.Error(), "rollback") {
		t.Errorf("bootstrap on a soft-deleted record: outcome %+v, error %v; want an error naming `vault kv undelete` and `vault kv rollback`", run.out, run.err)
	}
}

// A daemon never posts [new] alone: bootstrap is an operator's one-shot
// action. A path that looks never used (its metadata deleted) stays an
// error for the daemon. (On bf7ad79 `bootstrap: true` stayed armed.)
func TestDaemonNeverBootstraps(t *testing.T) {
	e := newMemHarness(t)
	d := e.proc("pod-a")
	c := d.client()
	c.VaultPath, c.Bootstrap = "affix/never-used", true
	e.daemon(d, d.rotator(nil), c)
	e.drive(time.Minute, time.Hour, func() bool { return false })
	if got := e.requests(); len(got) != 0 {
		t.Fatalf("a daemon bootstrapped a path with no version: requests %v (it drops whatever Affix accepts)", got)
	}
	op := e.proc("host/once-1")
	oc := op.client()
	oc.VaultPath, oc.Bootstrap = "affix/never-used", true
	run := e.rotate(op, op.rotator(nil), oc, e.once())
	e.drive(time.Second, time.Minute, run.finished)
	if run.err != nil || run.out.Result != rotator.ResultSuccess {
		t.Fatalf("-once on a bootstrap client with no record: %s, want the bootstrap rotation", run)
	}
}
