package backoff

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffGrowsCapsAndJitters(t *testing.T) {
	b := New(time.Second, 10*time.Second, rand.New(rand.NewPCG(1, 2)))
	nominal := []time.Duration{1, 2, 4, 8, 10, 10, 10}
	for i, n := range nominal {
		n *= time.Second
		d := b.Next()
		if d < n/2 || d > n {
			t.Fatalf("attempt %d: delay %v outside [%v, %v]", i, d, n/2, n)
		}
	}
	b.Reset()
	if d := b.Next(); d > time.Second {
		t.Fatalf("after Reset: %v > initial", d)
	}
}

func TestBackoffDeterministicForSeed(t *testing.T) {
	a := New(time.Second, time.Minute, rand.New(rand.NewPCG(7, 7)))
	b := New(time.Second, time.Minute, rand.New(rand.NewPCG(7, 7)))
	for i := 0; i < 20; i++ {
		if x, y := a.Next(), b.Next(); x != y {
			t.Fatalf("attempt %d: %v != %v for the same seed", i, x, y)
		}
	}
}
