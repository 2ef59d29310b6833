package pace

import (
	"context"
	"testing"
)

// BenchmarkWait is the pacer's cost on every Affix request when it does not
// have to wait (no rate limit, no hold): a mutex, a clock read and a token
// reservation.
func BenchmarkWait(b *testing.B) {
	p := New(0, 0, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
