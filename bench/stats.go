package main

import (
	"fmt"
	"sort"
	"time"
)

// sample holds the measurements of one figure over the runs.
type sample []float64

func (s sample) sorted() []float64 {
	c := append([]float64(nil), s...)
	sort.Float64s(c)
	return c
}

// median returns the median (mean of the two middle values for an even count).
func (s sample) median() float64 {
	c := s.sorted()
	if len(c) == 0 {
		return 0
	}
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func (s sample) min() float64 {
	c := s.sorted()
	if len(c) == 0 {
		return 0
	}
	return c[0]
}

func (s sample) max() float64 {
	c := s.sorted()
	if len(c) == 0 {
		return 0
	}
	return c[len(c)-1]
}

func durSample(ds []time.Duration) sample {
	s := make(sample, len(ds))
	for i, d := range ds {
		s[i] = float64(d)
	}
	return s
}

// fmtDur renders a duration figure "median (min–max)".
func fmtDur(s sample) string {
	r := func(v float64) string { return time.Duration(v).Round(time.Microsecond).String() }
	return fmt.Sprintf("%s (%s–%s)", r(s.median()), r(s.min()), r(s.max()))
}

// ratios divides a by b run by run (the runs are interleaved, so run i of
// both saw the same machine state).
func ratios(a, b sample) sample {
	n := min(len(a), len(b))
	out := make(sample, n)
	for i := range n {
		if b[i] != 0 {
			out[i] = a[i] / b[i]
		}
	}
	return out
}

func fmtRatio(s sample) string {
	return fmt.Sprintf("%.3f× (%.3f–%.3f)", s.median(), s.min(), s.max())
}
