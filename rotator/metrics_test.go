package rotator

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/vault"
)

// exposition renders reg the way /metrics does for a plain GET (text
// format 0.0.4, uncompressed).
func exposition(t *testing.T, reg prometheus.Gatherer) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestMetricsExpositionSize: /metrics at 1,000 clients stays under 1 MiB,
// both for an idle fleet (as the bench's [scrape] figure measures it) and
// for one where every client has rotated once.
func TestMetricsExpositionSize(t *testing.T) {
	const limit = 1 << 20
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, names := range []string{"c%d", "payments-api-%04d"} {
		for _, n := range []int{10, 1000} {
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			m := NewMetrics(reg)
			for i := range n {
				c := fmt.Sprintf(names, i)
				m.InitClient(c)
				m.SetExpectedInterval(c, 744*time.Hour)
				m.ObserveRecord(c, vault.PhaseStable, time.Time{}, now.Add(-time.Hour))
				m.NextRotation(c, now.Add(719*time.Hour))
			}
			m.VaultRequest("read", "ok", time.Millisecond, true)
			idle := len(exposition(t, reg))
			// Steady state: every client has rotated once and been
			// re-asserted.
			for i := range n {
				c := fmt.Sprintf(names, i)
				m.AffixRequest(c, "200", time.Millisecond)
				m.RotationOverlap(c, 2*time.Second)
				m.RotationCompleted(c, 24*time.Hour)
				m.RotationDone(c, ResultSuccess)
				m.Reassert(c, ReassertReconcile)
			}
			steady := len(exposition(t, reg))
			// Every series: each client also got a 429, an aborted and a
			// failed rotation, a failed step, a stale re-assert and an
			// operator action (not a state a fleet is in; logged only).
			for i := range n {
				c := fmt.Sprintf(names, i)
				m.AffixRequest(c, "429", time.Millisecond)
				m.StepError(c, vault.PhaseStaged)
				m.RotationDone(c, ResultAborted)
				m.RotationDone(c, ResultFailed)
				m.Reassert(c, ReassertStale)
				m.OperatorAction(c, ActionEndGrace)
			}
			full := len(exposition(t, reg))
			t.Logf("clients %-19q n=%-4d idle %7d B (%4d KiB)  steady %7d B (%4d KiB)  every series %7d B (%4d KiB)",
				names, n, idle, idle/1024, steady, steady/1024, full, full/1024)
			// The bench names its clients c0, c1, ...
			if n == 1000 && names == "c%d" {
				if idle > limit {
					t.Errorf("idle exposition at %d clients: %d bytes, want <= %d", n, idle, limit)
				}
				if steady > limit {
					t.Errorf("steady-state exposition at %d clients: %d bytes, want <= %d", n, steady, limit)
				}
			}
		}
	}
}

// TestMetricsHistogramsHaveNoClientLabel: the per-client cost is gauges and
// counters only.
func TestMetricsHistogramsHaveNoClientLabel(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.InitClient("prod")
	m.AffixRequest("prod", "200", time.Millisecond)
	m.RotationOverlap("prod", time.Second)
	m.RotationCompleted("prod", time.Hour)
	out := exposition(t, reg)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "_bucket{") && strings.Contains(l, "client=") {
			t.Errorf("histogram series with a client label: %s", l)
		}
	}
	for _, want := range []string{
		`affix_rotator_last_rotation_duration_seconds{client="prod"} 1`,
		`affix_rotator_last_rotation_end_to_end_seconds{client="prod"} 3600`,
		`affix_rotator_rotation_end_to_end_seconds_count 1`,
		`affix_rotator_rotation_duration_seconds_count 1`,
		`affix_rotator_affix_request_duration_seconds_count 1`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("exposition has no line %s", want)
		}
	}
}

// TestMetricsLastFailure: an aborted or failed rotation sets its
// timestamp, which stays until the process ends; a success sets none.
func TestMetricsLastFailure(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	at := time.Unix(1_800_000_000, 0)
	m.now = func() time.Time { return at }
	m.InitClient("prod")
	out := exposition(t, reg)
	if strings.Contains(out, "affix_rotator_last_failure_timestamp_seconds{") {
		t.Errorf("a last-failure series before any failure:\n%s", out)
	}
	m.RotationDone("prod", ResultAborted)
	at = at.Add(time.Hour)
	m.RotationDone("prod", ResultFailed)
	at = at.Add(time.Hour)
	m.RotationDone("prod", ResultSuccess)
	out = exposition(t, reg)
	for _, want := range []string{
		`affix_rotator_last_failure_timestamp_seconds{client="prod",result="aborted"} 1.8e+09`,
		`affix_rotator_last_failure_timestamp_seconds{client="prod",result="failed"} 1.8000036e+09`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("exposition has no line %s", want)
		}
	}
	if strings.Contains(out, `result="success"} 1.8`) {
		t.Error("a success set a last-failure timestamp")
	}
}

func TestMetricsExpectedInterval(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) // a Monday
	sched := func(spec string) *Client {
		s, err := config.ParseSchedule(spec)
		if err != nil {
			t.Fatal(err)
		}
		return &Client{Name: "x", Schedule: s, GracePeriod: 24 * time.Hour}
	}
	withc := func(c *Client, f func(*Client)) *Client { f(c); return c }
	day := 24 * time.Hour
	for _, tc := range []struct {
		name string
		c    *Client
		want time.Duration
	}{
		{"@every 720h, grace 24h", sched("@every 720h"), 744 * time.Hour},
		{"@every 720h + jitter 1h", withc(sched("@every 720h"), func(c *Client) { c.Jitter = time.Hour }), 745 * time.Hour},
		{"@every 720h, max_age 240h", withc(sched("@every 720h"), func(c *Client) { c.MaxAge = 240 * time.Hour }), 264 * time.Hour},
		{"@every 24h, max_age 240h (longer: no effect)", withc(sched("@every 24h"), func(c *Client) { c.MaxAge = 240 * time.Hour }), 48 * time.Hour},
		{"weekdays at 03:00: the weekend gap", sched("0 3 * * 1-5"), 3*day + day},
		{"monthly on the 1st: the longest month", sched("0 3 1 * *"), 31*day + day},
		{"@daily", sched("@daily"), 2 * day},
		{"CRON_TZ", sched("CRON_TZ=Europe/Paris 0 3 * * *"), 2*day + time.Hour}, // the autumn DST change is within a year
		{"never fires", sched("0 0 31 2 *"), 0},
		{"never fires, max_age 720h", withc(sched("0 0 31 2 *"), func(c *Client) { c.MaxAge = 720 * time.Hour }), 744 * time.Hour},
	} {
		if got := ExpectedInterval(tc.c, now); got != tc.want {
			t.Errorf("%s: ExpectedInterval = %s, want %s", tc.name, got, tc.want)
		}
	}

	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SetExpectedInterval("prod", 744*time.Hour)
	m.SetExpectedInterval("never", 0)
	out := exposition(t, reg)
	if !strings.Contains(out, "affix_rotator_expected_interval_seconds{client=\"prod\"} 2.6784e+06\n") {
		t.Errorf("no expected interval of 744h for prod:\n%s", out)
	}
	if strings.Contains(out, `expected_interval_seconds{client="never"}`) {
		t.Error("a client with no expectation has an expected interval series")
	}
}
