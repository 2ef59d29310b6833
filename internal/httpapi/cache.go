package httpapi

import (
	"context"
	"sync"
	"time"
)

// DefaultReadyCache is how long the daemon's /readyz reuses Vault's
// answer: whoever asks, and however often, Vault sees at most one
// lookup-self per period.
const DefaultReadyCache = 3 * time.Second

// Cached returns check behind a cache: a result younger than every is
// given again, and one caller at a time runs check while the others wait
// for its result. check runs with its own timeout, detached from the
// caller's cancellation, so that a client that goes away does not leave
// an error behind for the next ones.
func Cached(check func(context.Context) error, every, timeout time.Duration) func(context.Context) error {
	var (
		mu   sync.Mutex
		at   time.Time
		last error
	)
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if !at.IsZero() && time.Since(at) < every {
			return last
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		last, at = check(cctx), time.Now()
		return last
	}
}
