package k8scheck

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/affix-rotator/affix-rotator/internal/cli"
	"github.com/affix-rotator/affix-rotator/notify"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// targetLabels are attached by Prometheus to every scraped series, not by
// the daemon.
var targetLabels = map[string]bool{
	"job": true, "instance": true, "namespace": true, "pod": true, "service": true,
	"container": true, "endpoint": true, "node": true,
}

// exported is what the daemon exports: each family's type and label names,
// and the label values of the enumerated labels.
type exported struct {
	families map[string]*dto.MetricFamily
	// values of the labels whose values are a closed set, by metric and label.
	enums map[string]map[string]map[string]bool
}

// daemonMetrics builds the registry the way internal/cli does (Go and process
// collectors, then rotator.NewMetrics), creates the series of a client, and
// records one of each event (an Affix and a Vault request, a failed step
// from each phase, a rotation of each result, its durations, an operator
// action) so that every family has a series.
func daemonMetrics(t *testing.T) *exported {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	described := map[string]bool{}
	m := rotator.NewMetrics(describing{reg, described})
	// Registered when notifications are configured, with a webhook's series.
	notify.NewMetrics(describing{reg, described}).InitWebhook("https://hooks.example/affix-rotator")
	m.InitClient("x")
	ok, _ := cli.ReloadGauges(describing{reg, described})
	ok.Set(1)
	m.AffixRequest("x", "200", 0)
	m.VaultRequest("read", "ok", 0, true)
	m.OperatorAction("x", rotator.ActionEndGrace)
	m.LastAction("x", rotator.ActionEndGrace, time.Unix(1700000000, 0))
	m.FutureTime("x", vault.FieldRotatedAt)
	m.SetExpectedInterval("x", 744*time.Hour)
	for _, p := range []vault.Phase{vault.PhaseStable, vault.PhaseStaged, vault.PhaseOverlap} {
		m.StepError("x", p)
	}
	for _, r := range []string{rotator.ResultSuccess, rotator.ResultAborted, rotator.ResultFailed} {
		m.RotationDone("x", r)
	}
	m.RotationOverlap("x", time.Second)
	m.RotationCompleted("x", time.Hour)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	e := &exported{families: map[string]*dto.MetricFamily{}, enums: map[string]map[string]map[string]bool{}}
	for _, mf := range mfs {
		e.families[mf.GetName()] = mf
	}
	for name := range described {
		if e.families[name] == nil {
			t.Fatalf("%s is registered by rotator.NewMetrics but has no series after the events daemonMetrics records: extend daemonMetrics", name)
		}
	}
	for _, want := range []string{"affix_rotator_rotations_total", "affix_rotator_phase", "go_goroutines", "process_resident_memory_bytes"} {
		if e.families[want] == nil {
			t.Fatalf("the registry has no %s", want)
		}
	}
	// Enumerated label values, as InitClient creates them.
	for _, ml := range [][2]string{
		{"affix_rotator_rotations_total", "result"},
		{"affix_rotator_phase", "phase"},
		{"affix_rotator_step_errors_total", "phase"},
		{"affix_rotator_last_failure_timestamp_seconds", "result"},
		{"affix_rotator_reasserts_total", "reason"},
	} {
		vals := map[string]bool{}
		for _, s := range e.families[ml[0]].GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == ml[1] {
					vals[lp.GetValue()] = true
				}
			}
		}
		if e.enums[ml[0]] == nil {
			e.enums[ml[0]] = map[string]map[string]bool{}
		}
		e.enums[ml[0]][ml[1]] = vals
	}
	return e
}

// describing is a Registerer that records the names of the metrics it
// registers, so that a family without series cannot go unnoticed.
type describing struct {
	prometheus.Registerer
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d describing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
	return d.Registerer.Register(c)
}

func (d describing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := d.Register(c); err != nil {
			panic(err)
		}
	}
}

// family resolves a series name to its family: histogram and summary series
// carry _bucket, _sum and _count suffixes.
func (e *exported) family(name string) (*dto.MetricFamily, bool) {
	if mf, ok := e.families[name]; ok {
		return mf, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		mf, ok := e.families[base]
		if !ok {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			return mf, true
		case dto.MetricType_SUMMARY:
			return mf, suffix != "_bucket"
		}
	}
	return nil, false
}

func (e *exported) labelNames(mf *dto.MetricFamily, seriesName string) map[string]bool {
	out := map[string]bool{}
	for _, s := range mf.GetMetric() {
		for _, lp := range s.GetLabel() {
			out[lp.GetName()] = true
		}
	}
	if strings.HasSuffix(seriesName, "_bucket") {
		out["le"] = true
	}
	if mf.GetType() == dto.MetricType_SUMMARY && seriesName == mf.GetName() {
		out["quantile"] = true
	}
	return out
}

// checkExpr parses a PromQL expression and reports every metric the daemon
// does not export, every label a selector or grouping uses that the metric
// does not have, and every value of an enumerated label it cannot take.
// It returns the metric families used.
func (e *exported) checkExpr(expr string) (used []string, problems []string) {
	p := parser.NewParser(parser.Options{})
	node, err := p.ParseExpr(expr)
	if err != nil {
		return nil, []string{"does not parse: " + err.Error()}
	}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := n.Name
			for _, m := range n.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				problems = append(problems, "a selector without a metric name: "+n.String())
				return nil
			}
			if name == "up" {
				used = append(used, name)
				return nil
			}
			mf, ok := e.family(name)
			if !ok {
				problems = append(problems, "metric "+name+" is not exported by the daemon")
				return nil
			}
			used = append(used, mf.GetName())
			have := e.labelNames(mf, name)
			for _, m := range n.LabelMatchers {
				if m.Name == labels.MetricName {
					continue
				}
				if !have[m.Name] && !targetLabels[m.Name] {
					problems = append(problems, "metric "+name+" has no label "+m.Name)
					continue
				}
				enum := e.enums[mf.GetName()][m.Name]
				if enum == nil {
					continue
				}
				for _, v := range literalValues(m) {
					if !enum[v] {
						problems = append(problems, "metric "+name+" label "+m.Name+" never has the value "+v+" (values: "+strings.Join(sortedKeys(enum), ", ")+")")
					}
				}
			}
		case *parser.AggregateExpr:
			have := map[string]bool{"le": true}
			for k := range targetLabels {
				have[k] = true
			}
			parser.Inspect(n.Expr, func(inner parser.Node, _ []parser.Node) error {
				if vs, ok := inner.(*parser.VectorSelector); ok {
					if mf, ok := e.family(vs.Name); ok {
						for l := range e.labelNames(mf, vs.Name) {
							have[l] = true
						}
					}
				}
				return nil
			})
			for _, g := range n.Grouping {
				if !have[g] {
					problems = append(problems, "aggregation by "+g+": no metric under it has that label: "+n.String())
				}
			}
		}
		return nil
	})
	return used, problems
}

// literalValues returns the values a matcher accepts when it is an equality
// or a regexp that is an alternation of literals; nil otherwise.
func literalValues(m *labels.Matcher) []string {
	switch m.Type {
	case labels.MatchEqual:
		return []string{m.Value}
	case labels.MatchRegexp:
		if regexp.MustCompile(`^[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*$`).MatchString(m.Value) {
			return strings.Split(m.Value, "|")
		}
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func loadAlerts(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	if err := decodeStrict(readRepoFile(t, "deploy", "prometheus", "alerts.yaml"), &rf); err != nil {
		t.Fatalf("deploy/prometheus/alerts.yaml: %v", err)
	}
	return rf
}

func TestAlertMetricsExist(t *testing.T) {
	e := daemonMetrics(t)
	n := 0
	for _, g := range loadAlerts(t).Groups {
		for _, r := range g.Rules {
			n++
			_, problems := e.checkExpr(r.Expr)
			for _, p := range problems {
				t.Errorf("alerts.yaml %s: %s", r.Alert, p)
			}
		}
	}
	if n == 0 {
		t.Fatal("alerts.yaml has no rule")
	}
}

// grafanaVar matches $var, ${var} and ${var:format} in dashboard queries.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)(?::\w+)?\}?`)

// dashboardQueries returns every PromQL expression of the dashboard: panel
// targets and query variables (label_values(expr, label) yields expr), with
// Grafana's variables replaced by plain values.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	var dash map[string]any
	if err := json.Unmarshal(readRepoFile(t, "deploy", "grafana", "affix-rotator.json"), &dash); err != nil {
		t.Fatalf("deploy/grafana/affix-rotator.json: %v", err)
	}
	subst := func(q string) string {
		return grafanaVar.ReplaceAllStringFunc(q, func(v string) string {
			if strings.Contains(v, "__") { // $__rate_interval, $__range, $__interval
				return "5m"
			}
			return "x"
		})
	}
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			title, _ := v["title"].(string)
			if title != "" {
				path = path + "/" + title
			}
			if expr, ok := v["expr"].(string); ok {
				out[path+" "+expr] = subst(expr)
			}
			if q, ok := v["query"].(map[string]any); ok {
				if s, ok := q["query"].(string); ok {
					if m := regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`).FindStringSubmatch(s); m != nil {
						out[path+" variable "+v["name"].(string)] = subst(m[1])
					}
				}
			}
			for k, c := range v {
				walk(path+"."+k, c)
			}
		case []any:
			for _, c := range v {
				walk(path, c)
			}
		}
	}
	walk("", dash)
	return out
}

func TestDashboardMetricsExist(t *testing.T) {
	e := daemonMetrics(t)
	queries := dashboardQueries(t)
	if len(queries) < 10 {
		t.Fatalf("only %d queries found in the dashboard", len(queries))
	}
	used := map[string]bool{}
	for where, q := range queries {
		names, problems := e.checkExpr(q)
		for _, p := range problems {
			t.Errorf("dashboard %s: %s", where, p)
		}
		for _, n := range names {
			used[n] = true
		}
	}
	// What the dashboard is for: every rotation and request metric is shown.
	for _, want := range []string{
		"affix_rotator_phase",
		"affix_rotator_last_success_timestamp_seconds",
		"affix_rotator_next_rotation_timestamp_seconds",
		"affix_rotator_grace_deadline_timestamp_seconds",
		"affix_rotator_rotations_total",
		"affix_rotator_step_errors_total",
		"affix_rotator_affix_requests_total",
		"affix_rotator_affix_request_duration_seconds",
		"affix_rotator_vault_requests_total",
		"affix_rotator_vault_request_duration_seconds",
		"affix_rotator_vault_up",
		"affix_rotator_rotation_duration_seconds",
		"affix_rotator_last_rotation_duration_seconds",
		"affix_rotator_rotation_end_to_end_seconds",
		"affix_rotator_last_rotation_end_to_end_seconds",
		"affix_rotator_last_failure_timestamp_seconds",
		"affix_rotator_reasserts_total",
		"affix_rotator_operator_actions_total",
	} {
		if !used[want] {
			t.Errorf("the dashboard shows no panel of %s", want)
		}
	}
}

// TestDashboardStructure checks what Grafana needs to import the dashboard
// and what keeps it portable.
func TestDashboardStructure(t *testing.T) {
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Schema     int    `json:"schemaVersion"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int            `json:"id"`
			Type       string         `json:"type"`
			Title      string         `json:"title"`
			Datasource map[string]any `json:"datasource"`
			GridPos    map[string]int `json:"gridPos"`
			Targets    []struct {
				RefID      string         `json:"refId"`
				Datasource map[string]any `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(readRepoFile(t, "deploy", "grafana", "affix-rotator.json"), &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || dash.Title == "" || dash.Schema < 30 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want a uid, a title and a current schema", dash.UID, dash.Title, dash.Schema)
	}
	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Error("no datasource variable: the dashboard would be tied to one Grafana's data source")
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.GridPos["w"] == 0 || p.GridPos["h"] == 0 {
			t.Errorf("panel %q has no size", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if uid, _ := p.Datasource["uid"].(string); uid != "${datasource}" {
			t.Errorf("panel %q: datasource uid %q, want ${datasource}", p.Title, uid)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q empty or used twice", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}
