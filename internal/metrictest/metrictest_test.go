package metrictest_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/affix-rotator/affix-rotator/internal/metrictest"
)

// TestValueAndParse: a series is found by name and a subset of its labels,
// in a registry and in the text a daemon serves; a missing one reads 0 and
// Lookup says it is missing.
func TestValueAndParse(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"client", "result"})
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "x_seconds", Help: "x"}, []string{"webhook"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x_up", Help: "x"})
	reg.MustRegister(c, h, g)
	c.WithLabelValues("c1", "success").Add(3)
	c.WithLabelValues("c1", "failed").Add(1)
	c.WithLabelValues("c10", "success").Add(7)
	h.WithLabelValues("127.0.0.1:80").Observe(0.5)
	h.WithLabelValues("127.0.0.1:80").Observe(2)
	g.Set(1)
	body, err := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "x_total", "x_seconds", "x_up")
	if err != nil {
		t.Fatal(err)
	}
	for name, gat := range map[string]prometheus.Gatherer{"registry": reg, "parsed /metrics": metrictest.Parse(t, string(body))} {
		// Every series, unnamed: 3 counters, a gauge, and the histogram's
		// 12 buckets (+Inf included), sum and count.
		if all := metrictest.Gather(t, gat); len(all) != 3+1+12+2 {
			t.Errorf("%s: Gather() = %d series, want 18: %v", name, len(all), all)
		}
		for _, tc := range []struct {
			name   string
			labels []string
			want   float64
			found  bool
		}{
			{"x_total", []string{"client", "c1", "result", "success"}, 3, true},
			{"x_total", []string{"result", "failed"}, 1, true},
			{"x_total", []string{"client", "c10"}, 7, true},
			{"x_total", []string{"client", "c2"}, 0, false},
			{"x_seconds_count", []string{"webhook", "127.0.0.1:80"}, 2, true},
			{"x_seconds_sum", nil, 2.5, true},
			{"x_seconds", nil, 0, false},
			{"x_up", nil, 1, true},
			{"y_total", nil, 0, false},
		} {
			v, ok := metrictest.Lookup(t, gat, tc.name, tc.labels...)
			if v != tc.want || ok != tc.found || metrictest.Value(t, gat, tc.name, tc.labels...) != tc.want {
				t.Errorf("%s: %s%q = %v, %v; want %v, %v", name, tc.name, tc.labels, v, ok, tc.want, tc.found)
			}
		}
	}
}
