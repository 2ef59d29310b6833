package rotator_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
	"github.com/affix-rotator/affix-rotator/rotator"
)

// TestAffix401SaysKeyRefused: every place a 401 from Affix is logged or
// returned says that the API key was refused: a retried drop (WARN), and an
// abort (ERROR, the error -once prints, the record's last_error).
func TestAffix401SaysKeyRefused(t *testing.T) {
	const note = "affix refused the API key (401)"
	h := newHarness(t)
	ctx := ctxT(t)
	core, logs := observer.New(zapcore.DebugLevel)
	p := h.process("d1", nil)
	r := p.rotator(func(o *rotator.Options) { o.Logger = zap.New(core) })
	done := h.start(ctx, r, p, h.once())
	h.asleep(ctx)
	h.fake.Inject(affixtest.Fault{Status: 401}) // the drop
	h.drive(ctx, 100*time.Millisecond)
	if res := h.wait(ctx, done); res.err != nil || res.out.Result != rotator.ResultSuccess {
		t.Fatalf("%+v", res)
	}
	if n := logs.FilterMessageSnippet(note).FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
		t.Fatalf("%d WARN lines say %q about the refused drop: %v", n, note, logs.All())
	}

	h.clock.Advance(time.Second)
	h.fake.Inject(affixtest.Fault{Status: 401}) // the next rotation's first request
	out, err := h.rotate(ctx, p, r, h.once())
	if out.Result != rotator.ResultAborted || !errors.Is(err, rotator.ErrAborted) || !strings.Contains(err.Error(), note) {
		t.Fatalf("%+v %v", out, err)
	}
	if n := logs.FilterMessageSnippet("refused the API key").FilterLevelExact(zapcore.ErrorLevel).Len(); n != 1 {
		t.Fatalf("%d ERROR lines about the refused key", n)
	}
	if le := str(h.rawRecord(), "last_error"); !strings.Contains(le, note) {
		t.Fatalf("record's last_error %q", le)
	}
}
