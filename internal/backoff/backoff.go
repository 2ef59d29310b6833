// Package backoff computes capped exponential retry delays with jitter from
// an injected random source, so that a seeded simulation replays the same
// delays. (Libraries such as cenkalti/backoff draw from the global source.)
package backoff

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff yields delays initial, 2·initial, 4·initial … capped at max, each
// drawn uniformly from [d/2, d] ("equal jitter") so that retries of many
// processes spread out but never come sooner than half the nominal delay.
type Backoff struct {
	Initial, Max time.Duration

	mu      sync.Mutex
	attempt int
	rnd     *rand.Rand
}

// New returns a Backoff drawing jitter from rnd (nil: a random seed).
func New(initial, max time.Duration, rnd *rand.Rand) *Backoff {
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if initial <= 0 {
		initial = time.Second
	}
	if max < initial {
		max = initial
	}
	return &Backoff{Initial: initial, Max: max, rnd: rnd}
}

// Next returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.Initial
	for i := 0; i < b.attempt && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	b.attempt++
	half := d / 2
	return half + time.Duration(b.rnd.Int64N(int64(d-half)+1))
}

// Reset starts over from Initial (after progress).
func (b *Backoff) Reset() {
	b.mu.Lock()
	b.attempt = 0
	b.mu.Unlock()
}

// Attempts returns how many delays were handed out since the last Reset.
func (b *Backoff) Attempts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempt
}
