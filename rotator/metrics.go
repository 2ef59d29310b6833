package rotator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affix-rotator/affix-rotator/internal/version"
	"github.com/affix-rotator/affix-rotator/vault"
)

// Rotation results, the values of the `result` label of rotations_total.
const (
	ResultSuccess = "success" // the rotation reached stable with the new secret
	ResultAborted = "aborted" // Affix definitely rejected the new secret; the old one stays current
	ResultFailed  = "failed"  // the rotation could not run (missing or malformed record, given up)
)

// Phases, the values of the `phase` label and of the record's phase field.
var phases = []vault.Phase{vault.PhaseStable, vault.PhaseStaged, vault.PhaseOverlap}

// Metrics holds every metric the rotator exports, registered on a registry the
// caller owns (never the global one). All names carry the affix_rotator_ prefix.
type Metrics struct {
	rotations        *prometheus.CounterVec
	rotationDuration *prometheus.HistogramVec
	lastSuccess      *prometheus.GaugeVec
	nextRotation     *prometheus.GaugeVec
	phase            *prometheus.GaugeVec
	graceDeadline    *prometheus.GaugeVec
	stepErrors       *prometheus.CounterVec
	affixRequests    *prometheus.CounterVec
	affixDuration    *prometheus.HistogramVec
	vaultRequests    *prometheus.CounterVec
	vaultDuration    *prometheus.HistogramVec
	vaultUp          prometheus.Gauge
	reasserts        *prometheus.CounterVec
	actions          *prometheus.CounterVec
}

// Reassert reasons, the values of the `reason` label of reasserts_total.
const (
	ReassertStale     = "stale"     // a request of this process may have landed late
	ReassertReconcile = "reconcile" // the periodic re-assertion (rotation.reconcile_interval)
	// ReassertAction: an operator action's own request (not counted here).
	ReassertAction = "action"
)

// NewMetrics creates the rotator's metrics and registers them, with
// affix_rotator_build_info, on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "affix_rotator"
	m := &Metrics{
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "rotations_total",
			Help: "Rotations finished, by client and result (success, aborted, failed).",
		}, []string{"client", "result"}),
		rotationDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "rotation_duration_seconds",
			Help:    "Time from a rotation's trigger to the new secret being current in Vault (phase overlap).",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"client"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "last_success_timestamp_seconds",
			Help: "Unix time the client's last rotation completed (rotated_at in Vault); 0 if unknown.",
		}, []string{"client"}),
		nextRotation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "next_rotation_timestamp_seconds",
			Help: "Unix time of the client's next scheduled rotation (jitter included).",
		}, []string{"client"}),
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "phase",
			Help: "1 for the client's current phase in Vault (stable, staged, overlap), 0 for the others.",
		}, []string{"client", "phase"}),
		graceDeadline: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "grace_deadline_timestamp_seconds",
			Help: "Unix time the grace period of the rotation in overlap ends (grace_until); 0 when not in overlap.",
		}, []string{"client"}),
		stepErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "step_errors_total",
			Help: "Failed attempts at a rotation step (retried), by client and the phase the step starts from.",
		}, []string{"client", "phase"}),
		affixRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "affix_requests_total",
			Help: "Requests to the Affix management API, by client and HTTP status code (\"error\" when no response).",
		}, []string{"client", "code"}),
		affixDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "affix_request_duration_seconds",
			Help:    "Latency of requests to the Affix management API.",
			Buckets: prometheus.DefBuckets,
		}, []string{"client"}),
		vaultRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "vault_requests_total",
			Help: "Requests to Vault, by operation (read, write, login, renew, health) and result (ok, cas_conflict, not_found, error).",
		}, []string{"op", "result"}),
		vaultDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "vault_request_duration_seconds",
			Help:    "Latency of requests to Vault, by operation.",
			Buckets: prometheus.DefBuckets,
		}, []string{"op"}),
		vaultUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "vault_up",
			Help: "1 if the last request to Vault reached an unsealed Vault and was authenticated, else 0.",
		}),
		reasserts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "reasserts_total",
			Help: "Times the set of secrets the Vault record implies was sent to Affix again outside a rotation step, by client and reason (stale: a late request of this process may have landed; reconcile: periodic).",
		}, []string{"client", "reason"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "operator_actions_total",
			Help: "Operator actions (rotate, end-grace, extend-grace, reaccept-previous) taken by this process or seen in a record by the daemon, by client and action.",
		}, []string{"client", "action"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: ns, Name: "build_info",
		Help: "Always 1; labels carry the version and Go version the binary was built with.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version.Version, version.GoVersion()).Set(1)
	reg.MustRegister(m.rotations, m.rotationDuration, m.lastSuccess, m.nextRotation, m.phase,
		m.graceDeadline, m.stepErrors, m.affixRequests, m.affixDuration, m.vaultRequests,
		m.vaultDuration, m.vaultUp, m.reasserts, m.actions, buildInfo)
	return m
}

// InitClient creates every series of a client at zero, so that alerts and
// dashboards see the client before its first rotation.
func (m *Metrics) InitClient(client string) {
	for _, r := range []string{ResultSuccess, ResultAborted, ResultFailed} {
		m.rotations.WithLabelValues(client, r)
	}
	m.rotationDuration.WithLabelValues(client)
	m.lastSuccess.WithLabelValues(client)
	m.nextRotation.WithLabelValues(client)
	m.graceDeadline.WithLabelValues(client)
	m.affixDuration.WithLabelValues(client)
	for _, r := range []string{ReassertStale, ReassertReconcile} {
		m.reasserts.WithLabelValues(client, r)
	}
	for _, p := range phases {
		m.phase.WithLabelValues(client, string(p))
		m.stepErrors.WithLabelValues(client, string(p))
	}
}

// ObserveRecord mirrors a client's Vault record into the phase, grace and
// last-success gauges.
func (m *Metrics) ObserveRecord(client string, phase vault.Phase, graceUntil, rotatedAt time.Time) {
	for _, p := range phases {
		v := 0.0
		if p == phase {
			v = 1
		}
		m.phase.WithLabelValues(client, string(p)).Set(v)
	}
	m.graceDeadline.WithLabelValues(client).Set(unixOrZero(graceUntil))
	if !rotatedAt.IsZero() {
		m.lastSuccess.WithLabelValues(client).Set(unixOrZero(rotatedAt))
	}
}

// RotationDone counts a finished rotation.
func (m *Metrics) RotationDone(client, result string) {
	m.rotations.WithLabelValues(client, result).Inc()
}

// RotationOverlap records the time from trigger to the new secret being current.
func (m *Metrics) RotationOverlap(client string, d time.Duration) {
	m.rotationDuration.WithLabelValues(client).Observe(d.Seconds())
}

// NextRotation records the next scheduled run of a client.
func (m *Metrics) NextRotation(client string, t time.Time) {
	m.nextRotation.WithLabelValues(client).Set(unixOrZero(t))
}

// Reassert counts one re-assertion of the record's set to Affix.
func (m *Metrics) Reassert(client, reason string) {
	m.reasserts.WithLabelValues(client, reason).Inc()
}

// OperatorAction counts one operator action.
func (m *Metrics) OperatorAction(client, action string) {
	m.actions.WithLabelValues(client, action).Inc()
}

// StepError counts a failed, to-be-retried attempt at the step leaving phase.
func (m *Metrics) StepError(client string, phase vault.Phase) {
	m.stepErrors.WithLabelValues(client, string(phase)).Inc()
}

// AffixRequest records one request to Affix.
func (m *Metrics) AffixRequest(client, code string, d time.Duration) {
	m.affixRequests.WithLabelValues(client, code).Inc()
	m.affixDuration.WithLabelValues(client).Observe(d.Seconds())
}

// VaultRequest records one request to Vault. up tells whether Vault answered
// as an unsealed, authenticated server (a CAS conflict or a missing record
// is still "up").
func (m *Metrics) VaultRequest(op, result string, d time.Duration, up bool) {
	m.vaultRequests.WithLabelValues(op, result).Inc()
	m.vaultDuration.WithLabelValues(op).Observe(d.Seconds())
	if up {
		m.vaultUp.Set(1)
	} else {
		m.vaultUp.Set(0)
	}
}

func unixOrZero(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
