package notify

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the notifier's metrics, registered on a registry the caller
// owns. Labels are bounded: the event types, the three results, and the
// configured webhooks' hosts (the `webhook` label: the URL's host and port,
// never its path or query, which may carry a token).
type Metrics struct {
	outcomes  *prometheus.CounterVec
	byWebhook *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

// NewMetrics creates and registers on reg
// affix_rotator_notifications_total{event,result},
// affix_rotator_notifications_by_webhook_total{webhook,result} and
// affix_rotator_notification_delivery_seconds{webhook}.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "affix_rotator", Name: "notifications_total",
			Help: "Webhook notifications by event type and result, once per webhook: delivered (2xx), failed (given up after retries, a redirect, 410, or cut short at shutdown), dropped (never attempted: queue full or still queued at shutdown).",
		}, []string{"event", "result"}),
		byWebhook: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "affix_rotator", Name: "notifications_by_webhook_total",
			Help: "The same outcomes as notifications_total, by webhook (its URL's host, never its path) and result.",
		}, []string{"webhook", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "affix_rotator", Name: "notification_delivery_seconds",
			Help:    "Time from an event being queued to its delivery (a 2xx answer), retries included, by webhook (its URL's host).",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"webhook"}),
	}
	reg.MustRegister(m.outcomes, m.byWebhook, m.latency)
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

// InitWebhook creates the series of the webhook at rawURL (labelled
// WebhookLabel(rawURL)) at zero. New calls it for each endpoint.
func (m *Metrics) InitWebhook(rawURL string) { m.initWebhook(WebhookLabel(rawURL)) }

func (m *Metrics) initWebhook(label string) {
	for _, r := range []string{ResultDelivered, ResultFailed, ResultDropped} {
		m.byWebhook.WithLabelValues(label, r)
	}
	m.latency.WithLabelValues(label)
}

func (m *Metrics) webhookOutcome(label, result string) {
	m.byWebhook.WithLabelValues(label, result).Inc()
}
