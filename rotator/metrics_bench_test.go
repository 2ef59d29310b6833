package rotator_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// BenchmarkMetricsObserveRecord is the metrics update done on every record read.
func BenchmarkMetricsObserveRecord(b *testing.B) {
	m := rotator.NewMetrics(prometheus.NewRegistry())
	m.InitClient("prod")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveRecord("prod", vault.PhaseOverlap, now.Add(24*time.Hour), now)
	}
}
