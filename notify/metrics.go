package notify

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the notifier's metrics, registered on a registry the caller
// owns. Labels are bounded: the event types and the three results; no URL.
type Metrics struct {
	outcomes *prometheus.CounterVec
	latency  prometheus.Histogram
}

// NewMetrics creates and registers on reg
// affix_rotator_notifications_total{event,result} and
// affix_rotator_notification_delivery_seconds.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "affix_rotator", Name: "notifications_total",
			Help: "Webhook notifications by event type and result, once per webhook: delivered (2xx), failed (given up after retries, a redirect, 410, or cut short at shutdown), dropped (never attempted: queue full or still queued at shutdown).",
		}, []string{"event", "result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "affix_rotator", Name: "notification_delivery_seconds",
			Help:    "Time from an event being queued to its delivery (a 2xx answer), retries included, all webhooks.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
	}
	reg.MustRegister(m.outcomes, m.latency)
	m.init()
	return m
}

// init creates every series at zero, so that increase() sees the first
// failure.
func (m *Metrics) init() {
	for _, e := range EventTypes {
		for _, r := range []string{ResultDelivered, ResultFailed, ResultDropped} {
			m.outcomes.WithLabelValues(e, r)
		}
	}
}

func (m *Metrics) outcome(event, result string) {
	m.outcomes.WithLabelValues(event, result).Inc()
}
