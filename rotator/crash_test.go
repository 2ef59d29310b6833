package rotator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/rotator"
)

// TestCrashAtEveryStep kills the rotating process at every I/O call of a
// rotation (before the call takes effect, and after it took effect but
// before the process saw the answer), restarts it — with the same instance
// id, as a restarted daemon, or as another process once the lease ran out —
// and checks that the rotation completes without generating another secret
// (I6), with I1–I3 checked after every call throughout.
func TestCrashAtEveryStep(t *testing.T) {
	for _, restartAs := range []string{"d1", "d2"} {
		for at := 1; ; at++ {
			hit := false
			for _, after := range []bool{false, true} {
				name := fmt.Sprintf("restart-as-%s/crash-at-%d-after-%v", restartAs, at, after)
				t.Run(name, func(t *testing.T) {
					h := newHarness(t)
					ctx := ctxT(t)
					c1, cancel := context.WithCancel(ctx)
					defer cancel()
					cr := &crash{at: at, after: after, cancel: cancel}
					p1 := h.process("d1", cr)
					trig := h.once()
					_, err := h.rotate(c1, p1, p1.rotator(nil), trig)
					if !cr.hit {
						if err != nil {
							t.Fatalf("run without crash failed: %v", err)
						}
						return
					}
					hit = true
					if restartAs != "d1" {
						// Another process takes over only after the lease.
						h.clock.Advance(2*time.Minute + h.grace)
					}
					p2 := h.process(restartAs, nil)
					out, err := h.rotate(ctx, p2, p2.rotator(nil), trig)
					if err != nil || out.Result != rotator.ResultSuccess {
						t.Fatalf("resumed rotation: %+v %v (requests %v)", out, err, h.requests())
					}
					if len(h.staged) != 1 {
						t.Fatalf("I6 violated: %d secrets generated for one rotation (requests %v)", len(h.staged), h.requests())
					}
					rec := h.rawRecord()
					if str(rec, "phase") != "stable" || !h.staged[str(rec, "client_secret")] {
						t.Fatalf("final record: phase %v, current is the staged secret: %v", rec["phase"], h.staged[str(rec, "client_secret")])
					}
					if got := h.fake.Secrets(h.key); len(got) != 1 || got[0] != str(rec, "client_secret") {
						t.Fatalf("Affix accepts %d secrets at the end (want only the new one)", len(got))
					}
				})
			}
			if !hit {
				if at < 8 {
					t.Fatalf("a rotation took only %d I/O calls; the crash loop is not exercising it", at-1)
				}
				break
			}
		}
	}
}
