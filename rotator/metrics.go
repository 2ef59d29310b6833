package rotator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

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
//
// Size: per client, only gauges and counters (13 series at start, about 17
// once the client has rotated); the histograms carry no client label, and
// each client's last durations are gauges. At 1,000 clients the exposition
// stays under 1 MiB (TestMetricsExpositionSize).
type Metrics struct {
	rotations        *prometheus.CounterVec
	rotationDuration prometheus.Histogram
	lastDuration     *prometheus.GaugeVec
	endToEnd         prometheus.Histogram
	lastEndToEnd     *prometheus.GaugeVec
	lastFailure      *prometheus.GaugeVec
	expectedInterval *prometheus.GaugeVec
	lastSuccess      *prometheus.GaugeVec
	nextRotation     *prometheus.GaugeVec
	phase            *prometheus.GaugeVec
	graceDeadline    *prometheus.GaugeVec
	stepErrors       *prometheus.CounterVec
	affixRequests    *prometheus.CounterVec
	affixDuration    prometheus.Histogram
	vaultRequests    *prometheus.CounterVec
	vaultDuration    *prometheus.HistogramVec
	vaultUp          prometheus.Gauge
	reasserts        *prometheus.CounterVec
	actions          *prometheus.CounterVec
	futureTimes      *prometheus.CounterVec
	lastAction       *prometheus.GaugeVec
	now              func() time.Time // the clock of lastFailure
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
		rotationDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "rotation_duration_seconds",
			Help:    "Time from a rotation's trigger to the new secret being current in Vault (phase overlap), all clients; per client: last_rotation_duration_seconds.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}),
		lastDuration: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "last_rotation_duration_seconds",
			Help: "Trigger to overlap of the client's last rotation staged by this process.",
		}, []string{"client"}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "rotation_end_to_end_seconds",
			Help: "Time from a rotation's trigger to the old secret dropped (phase stable again, grace period included), all clients; per client: last_rotation_end_to_end_seconds.",
			// The grace period dominates: minutes to days.
			Buckets: []float64{1, 10, 60, 300, 1800, 3600, 6 * 3600, 12 * 3600, 86400, 25 * 3600, 2 * 86400, 7 * 86400},
		}),
		lastEndToEnd: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "last_rotation_end_to_end_seconds",
			Help: "Trigger to stable of the client's last rotation staged and completed by this process.",
		}, []string{"client"}),
		lastFailure: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "last_failure_timestamp_seconds",
			Help: "Unix time a rotation of the client last ended with this result (aborted, failed) in this process. A failure is current while it is later than last_success_timestamp_seconds.",
		}, []string{"client", "result"}),
		expectedInterval: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "expected_interval_seconds",
			Help: "Longest a healthy client goes between two completed rotations: the longest gap between runs of its schedule (or max_age when shorter), plus grace period and jitter. Absent: no expectation.",
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
		affixDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "affix_request_duration_seconds",
			Help:    "Latency of requests to the Affix management API, all clients.",
			Buckets: prometheus.DefBuckets,
		}),
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
			Help: "Operator actions (rotate, end-grace, extend-grace, reaccept-previous) performed by this process, by client and action; each action is counted once, by the process that performs it (last_operator_action_timestamp_seconds reflects the record, whoever acted).",
		}, []string{"client", "action"}),
		futureTimes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "record_future_times_total",
			Help: "Record versions read whose time field (rotated_at, staged_at, seeded_at) lay in the future beyond rotation.clock_skew_margin (a clock running ahead wrote it; it is taken as now), by client and field.",
		}, []string{"client", "field"}),
		lastAction: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "last_operator_action_timestamp_seconds",
			Help: "When the record's last operator action (last_action) was taken, by client and action, whichever process took it: it reflects the record.",
		}, []string{"client", "action"}),
		now: time.Now,
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: ns, Name: "build_info",
		Help: "Always 1; labels carry the version and Go version the binary was built with.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version.Version, version.GoVersion()).Set(1)
	reg.MustRegister(m.rotations, m.rotationDuration, m.lastDuration, m.endToEnd, m.lastEndToEnd,
		m.lastFailure, m.expectedInterval, m.lastSuccess, m.nextRotation, m.phase,
		m.graceDeadline, m.stepErrors, m.affixRequests, m.affixDuration, m.vaultRequests,
		m.vaultDuration, m.vaultUp, m.reasserts, m.actions, m.futureTimes, m.lastAction, buildInfo)
	return m
}

// InitClient creates the series of a client that alerts and dashboards need
// before its first rotation (counters at zero, so that increase() sees their
// first step). The rest appear when there is something to show: the
// last-duration and last-failure gauges, affix_requests_total by code, and
// step_errors_total (AffixRotatorStepFailing needs failures repeated for
// 30 minutes, so the first one, which increase() cannot see on a new
// series, does not matter; three zero counters per client were a fifth of
// the exposition). The expected interval comes with SetExpectedInterval.
func (m *Metrics) InitClient(client string) {
	for _, r := range []string{ResultSuccess, ResultAborted, ResultFailed} {
		m.rotations.WithLabelValues(client, r)
	}
	m.lastSuccess.WithLabelValues(client)
	m.nextRotation.WithLabelValues(client)
	m.graceDeadline.WithLabelValues(client)
	for _, r := range []string{ReassertStale, ReassertReconcile} {
		m.reasserts.WithLabelValues(client, r)
	}
	for _, p := range phases {
		m.phase.WithLabelValues(client, string(p))
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

// RotationDone counts a finished rotation; an aborted or failed one also
// sets the client's last_failure_timestamp_seconds for that result, which
// AffixRotatorRotationFailing compares with last_success_timestamp_seconds
// (rotated_at in Vault): the alert holds until a rotation succeeds.
func (m *Metrics) RotationDone(client, result string) {
	m.rotations.WithLabelValues(client, result).Inc()
	if result == ResultAborted || result == ResultFailed {
		m.lastFailure.WithLabelValues(client, result).Set(unixOrZero(m.now()))
	}
}

// RotationOverlap records the time from trigger to the new secret being current.
func (m *Metrics) RotationOverlap(client string, d time.Duration) {
	m.rotationDuration.Observe(d.Seconds())
	m.lastDuration.WithLabelValues(client).Set(d.Seconds())
}

// RotationCompleted records the time from trigger to the old secret dropped
// (stable again): the whole rotation, grace period included.
func (m *Metrics) RotationCompleted(client string, d time.Duration) {
	m.endToEnd.Observe(d.Seconds())
	m.lastEndToEnd.WithLabelValues(client).Set(d.Seconds())
}

// SetExpectedInterval exports the longest a healthy client goes between
// two completed rotations (ExpectedInterval); AffixRotatorLastSuccessTooOld
// fires past a multiple of it. 0 removes the series: no expectation.
func (m *Metrics) SetExpectedInterval(client string, d time.Duration) {
	if d <= 0 {
		m.expectedInterval.DeleteLabelValues(client)
		return
	}
	m.expectedInterval.WithLabelValues(client).Set(d.Seconds())
}

// ExpectedInterval is the longest a healthy client c goes between two
// completed rotations, as seen from now: the longest gap between two
// consecutive runs of its schedule (sampled over the next year, at most
// maxScheduleSamples runs), or its max_age when set and shorter, plus its
// grace period (rotated_at is written when the old secret is dropped) and
// its jitter. The longest gap, not the shortest: a weekday schedule must
// not look overdue every weekend. 0 when the schedule never fires and
// there is no max_age.
func ExpectedInterval(c *Client, now time.Time) time.Duration {
	gap := longestGap(c.Schedule, now)
	if c.MaxAge > 0 && (gap == 0 || c.MaxAge < gap) {
		gap = c.MaxAge
	}
	if gap == 0 {
		return 0
	}
	return gap + c.GracePeriod + c.Jitter
}

// maxScheduleSamples bounds the runs of a cron schedule ExpectedInterval
// looks at (a few microseconds each).
const maxScheduleSamples = 400

func longestGap(s cron.Schedule, now time.Time) time.Duration {
	switch s := s.(type) {
	case nil:
		return 0
	case cron.ConstantDelaySchedule:
		return s.Delay
	case *cron.ConstantDelaySchedule:
		return s.Delay
	}
	horizon := now.AddDate(1, 0, 1)
	prev := s.Next(now)
	if prev.IsZero() {
		return 0
	}
	var longest time.Duration
	for range maxScheduleSamples {
		t := s.Next(prev)
		if t.IsZero() {
			break
		}
		longest = max(longest, t.Sub(prev))
		if t.After(horizon) {
			break
		}
		prev = t
	}
	return longest
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

// LastAction shows the record's last operator action (one series per
// client: a new action replaces the previous one's).
func (m *Metrics) LastAction(client, action string, at time.Time) {
	if at.IsZero() {
		return
	}
	for _, a := range []string{ActionRotate, ActionEndGrace, ActionExtendGrace, ActionReacceptPrevious} {
		if a != action {
			m.lastAction.DeleteLabelValues(client, a)
		}
	}
	m.lastAction.WithLabelValues(client, action).Set(float64(at.UnixNano()) / 1e9)
}

// FutureTime counts one record version read whose field lay in the future
// beyond the clock-skew margin.
func (m *Metrics) FutureTime(client, field string) {
	m.futureTimes.WithLabelValues(client, field).Inc()
}

// StepError counts a failed, to-be-retried attempt at the step leaving phase.
func (m *Metrics) StepError(client string, phase vault.Phase) {
	m.stepErrors.WithLabelValues(client, string(phase)).Inc()
}

// AffixRequest records one request to Affix.
func (m *Metrics) AffixRequest(client, code string, d time.Duration) {
	m.affixRequests.WithLabelValues(client, code).Inc()
	m.affixDuration.Observe(d.Seconds())
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
