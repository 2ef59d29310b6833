// Package pace paces the requests sent to one rate-limited account: a token
// bucket for the rate the operator configured, and an account-wide hold
// after the server says to back off (429 with Retry-After), so that no
// request on the account is sent before that floor, whichever client sent
// the one that was refused.
package pace

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"
)

// DefaultHold is how long the account is held after a 429 without a usable
// Retry-After.
const DefaultHold = time.Second

var errNoToken = errors.New("pace: the rate limiter cannot grant a request")

// Pacer paces one account. It is safe for concurrent use; the zero value is
// not usable, use New.
type Pacer struct {
	clock clockwork.Clock
	lim   *rate.Limiter

	mu    sync.Mutex
	until time.Time // no request before this (the latest Retry-After floor)
	holds int       // 429s heard
}

// New returns a Pacer allowing perSecond requests per second with bursts of
// burst (perSecond <= 0: no rate limit, only the holds after a 429). A nil
// clock is the real one.
func New(perSecond float64, burst int, clock clockwork.Clock) *Pacer {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	lim := rate.NewLimiter(rate.Inf, 1)
	if perSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(perSecond), max(1, burst))
	}
	return &Pacer{clock: clock, lim: lim}
}

// Wait blocks until a request may be sent: past any hold, and with a token
// from the bucket. A hold that starts while the caller waits for its token
// is honoured too. It returns ctx's error if ctx ends first.
func (p *Pacer) Wait(ctx context.Context) error {
	for {
		if err := p.sleep(ctx, p.holdLeft()); err != nil {
			return err
		}
		now := p.clock.Now()
		res := p.lim.ReserveN(now, 1)
		if !res.OK() {
			return errNoToken // cannot happen with burst >= 1; fail closed
		}
		if err := p.sleep(ctx, res.DelayFrom(now)); err != nil {
			res.CancelAt(p.clock.Now())
			return err
		}
		if p.holdLeft() <= 0 {
			return nil
		}
		// A 429 arrived while we waited for the token: the token is spent
		// (the server counted nothing), but the hold comes first.
	}
}

// Throttle holds every request of the account for retryAfter from now (or
// DefaultHold if retryAfter <= 0). Holds never shorten an earlier one.
func (p *Pacer) Throttle(retryAfter time.Duration) {
	if retryAfter <= 0 {
		retryAfter = DefaultHold
	}
	until := p.clock.Now().Add(retryAfter)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holds++
	if until.After(p.until) {
		p.until = until
	}
}

// Holds returns how many 429s the account has been told of.
func (p *Pacer) Holds() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holds
}

func (p *Pacer) holdLeft() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.until.Sub(p.clock.Now())
}

func (p *Pacer) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := p.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.Chan():
		return nil
	}
}
